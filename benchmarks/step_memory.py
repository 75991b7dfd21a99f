"""Memory of each training step, separately from the first one, printed as JSON.

    python benchmarks/step_memory.py --resolution 256 --batch-size 8 --recon-loss lpips --steps 3

train_step.py reports one peak RSS per process, which the first step sets when it traces and
optimises the graph. This script reports, for every step of one process: its time, the peak
bytes held by TensorFlow's allocator during it (`get_memory_info("CPU:0")`, reset before the
step; it counts oneDNN's tensors too) and the peak RSS during it (VmHWM, reset after each step
through /proc/self/clear_refs: Linux only, null elsewhere). Run it several times: the numbers of
one process can differ from the next one's. Settings as train.py's (oneDNN on x86-64, the
trainer's threads), random images, LPIPS with random VGG16 weights.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from machine import configure_threads, machine  # also puts this checkout's fastgan_tf first on sys.path

GIB = 2**30


def peak_rss_gib() -> float | None:
    """VmHWM of this process since the last `reset_peak_rss`; None where /proc is missing."""
    try:
        lines = Path("/proc/self/status").read_text(encoding="ascii").splitlines()
    except OSError:
        return None
    kib = [int(line.split()[1]) for line in lines if line.startswith("VmHWM:")]
    return round(kib[0] * 1024 / GIB, 2) if kib else None


def reset_peak_rss() -> None:
    """Start VmHWM again from the current RSS (Linux 4.0+); a no-op elsewhere."""
    try:
        Path("/proc/self/clear_refs").write_text("5", encoding="ascii")
    except OSError:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--recon-loss", choices=("lpips", "l1", "mse"), default="lpips")
    parser.add_argument("--ngf", type=int, default=64)
    parser.add_argument("--ndf", type=int, default=64)
    parser.add_argument("--accumulate", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads; 0 = TF default")
    args = parser.parse_args()

    from fastgan_tf.cli.common import fast_cpu_kernels

    fast_cpu_kernels()  # as train.py, before TensorFlow starts
    import numpy as np
    import tensorflow as tf

    from fastgan_tf.config import TrainConfig
    from fastgan_tf.losses import reconstruction_loss
    from fastgan_tf.training.fastgan import FastGAN

    configure_threads(args.threads)
    cfg = TrainConfig(dataset="random", resolution=args.resolution, batch_size=args.batch_size,
                      recon_loss=args.recon_loss, ngf=args.ngf, ndf=args.ndf,
                      accumulate=args.accumulate)
    gan = FastGAN(cfg, reconstruction_loss(cfg.recon_loss, vgg_weights=None))
    real = tf.constant(np.random.default_rng(0).uniform(
        -1, 1, (cfg.batch_size, cfg.resolution, cfg.resolution, 3)).astype(np.float32))
    steps = []
    reset_peak_rss()
    for step in range(args.steps):
        tf.config.experimental.reset_memory_stats("CPU:0")
        start = time.perf_counter()
        gan.train_on_batch(real)["g_loss"].numpy()
        steps.append({"step": step + 1, "s": round(time.perf_counter() - start, 2),
                      "peak_tensor_gib": round(
                          tf.config.experimental.get_memory_info("CPU:0")["peak"] / GIB, 2),
                      "peak_rss_gib": peak_rss_gib()})
        reset_peak_rss()
    print(json.dumps({"machine": machine(), "resolution": cfg.resolution,
                      "batch_size": cfg.batch_size, "recon_loss": cfg.recon_loss,
                      "ngf": cfg.ngf, "ndf": cfg.ndf, "accumulate": cfg.accumulate,
                      "intra_op_threads": args.threads or None, "steps": steps}, indent=2))


if __name__ == "__main__":
    main()
