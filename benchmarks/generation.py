"""Images per second of generation alone (the EMA generator, as evaluate.py uses it), as JSON.

    python benchmarks/generation.py --resolution 256 --batch-size 16 --threads 2

Two ways are timed on a randomly initialised generator (the weights do not change the work):
`library` is `fastgan_tf.generation.iter_samples`, i.e. what `evaluate.py --generate` and FID
do (an eager Keras call per batch, plus the conversion to uint8 on the host); `compiled` is the
same generator call inside a tf.function, the upper bound for a compiled sampling path.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import configure_threads  # noqa: E402 (benchmarks/ on the path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--batches", type=int, default=5, help="timed batches per way")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads; 0 = TF default")
    args = p.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    from fastgan_tf.config import TrainConfig
    from fastgan_tf.generation import iter_samples
    from fastgan_tf.training.fastgan import build_generator

    configure_threads(args.threads)
    cfg = TrainConfig(dataset="x", resolution=args.resolution, ngf=args.ngf)
    g = build_generator(cfg, name="generator_ema")
    n = args.batch_size

    def timed(batches) -> float:
        next(batches)  # warm-up (tracing)
        start = time.perf_counter()
        for _ in range(args.batches):
            next(batches)
        return args.batches * n / (time.perf_counter() - start)

    library = timed(iter_samples(g, num=(args.batches + 1) * n, batch_size=n))
    compiled_call = tf.function(lambda z, seed: g(z, training=False, noise_seed=seed)[0])

    def compiled_batches():
        rng = np.random.default_rng(0)
        for i in range(args.batches + 1):
            z = tf.constant(rng.standard_normal((n, cfg.nz)).astype(np.float32))
            yield compiled_call(z, tf.constant([0, i], tf.int64)).numpy()

    compiled = timed(compiled_batches())
    print(json.dumps({"resolution": args.resolution, "batch_size": n, "ngf": args.ngf,
                      "intra_op_threads": args.threads or None,
                      "library_images_per_s": round(library, 2),
                      "compiled_images_per_s": round(compiled, 2)}, indent=2))


if __name__ == "__main__":
    main()
