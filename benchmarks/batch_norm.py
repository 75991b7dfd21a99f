"""BatchNorm's two paths timed in one process: the exact float32 path and TensorFlow's fused op (JSON).

    python benchmarks/batch_norm.py --channels 4 8 12 16 24 32 40 48 64 96 128 256 --threads 2

For each channel count C: forward and backward (gradients of the input, gamma and beta) of one
`fastgan_tf.models.layers.BatchNorm` in training mode on a `--batch` x `--side` x `--side` x C
input in `--dtype` (bfloat16 by default), through the exact path (cast to float32, float64-summed
statistics, `batch_moments`) and through the fused op (`FusedBatchNormV3`), the two alternating
call by call. `fused_vs_exact` < 1: the fused op is faster. `package_uses_fused`: what
`fused_batch_norm` decides for that input. The machine (CPU model, cores, the SIMD flags) is part
of the output.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import configure_threads, machine, median_ms  # noqa: E402 (benchmarks/ on the path)


def traced_step(layers, x, fused: bool):
    """A concrete function of BatchNorm's forward and backward with the path forced."""
    import tensorflow as tf

    bn = layers.BatchNorm()
    bn.build(x.shape)
    upstream = tf.random.stateless_normal(x.shape, seed=[1, 2], dtype=tf.float32)

    def step():
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = bn(x, training=True)
            loss = tf.reduce_sum(tf.cast(y, tf.float32) * upstream)
        return tape.gradient(loss, [x, bn.gamma, bn.beta])

    chosen = layers.fused_batch_norm
    layers.fused_batch_norm = lambda dtype, shape, replicas=1: fused  # asked when traced
    try:
        return tf.function(step).get_concrete_function()
    finally:
        layers.fused_batch_norm = chosen


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--channels", type=int, nargs="+", default=[8, 16, 24, 32, 64, 128])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--side", type=int, default=128)
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=0, help="intra-op threads; 0 = TF default")
    args = p.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    from fastgan_tf.models import layers

    configure_threads(args.threads)
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if args.dtype == "bfloat16"
                                            else "float32")
    results = []
    for c in args.channels:
        shape = (args.batch, args.side, args.side, c)
        x = tf.cast(tf.random.stateless_normal(shape, seed=[0, c]) * 2 + 0.3, args.dtype)
        ms = median_ms({"exact": traced_step(layers, x, False),
                        "fused": traced_step(layers, x, True)}, args.repeats)
        results.append({"shape": list(shape), "dtype": args.dtype, "exact_ms": ms["exact"],
                        "fused_ms": ms["fused"],
                        "fused_vs_exact": round(ms["fused"] / ms["exact"], 3),
                        "package_uses_fused": layers.fused_batch_norm(args.dtype, shape)})
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    print(json.dumps({"machine": machine(), "intra_op_threads": args.threads or None,
                      "results": results}, indent=2))


if __name__ == "__main__":
    main()
