"""Median seconds per FastGAN training iteration and peak memory, printed as JSON.

    python benchmarks/train_step.py --resolution 256 --batch-size 8 --recon-loss l1
    python benchmarks/train_step.py --resolution 64 --ngf 16 --ndf 16 --compare-xla

Each measured setting runs in its own process (so peak RSS belongs to that setting alone), on
random images, after warm-up iterations that absorb tracing. With --compare-xla both settings
are measured back to back in one invocation and their ratio is reported: these machines are
noisy, so compare numbers from one run only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def peak_rss_mib() -> float | None:
    try:
        import resource
    except ImportError:  # Windows: no resource module
        return None
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024.0 if sys.platform != "darwin" else kib / 2**20


def measure(args: argparse.Namespace) -> dict:
    """Build FastGAN for the setting, run warm-up + timed iterations, return the numbers."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    from fastgan_tf.config import TrainConfig
    from fastgan_tf.losses import reconstruction_loss
    from fastgan_tf.training.fastgan import FastGAN
    from fastgan_tf.training.precision import set_policy

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    mixed = args.mixed_precision == "on"
    set_policy(mixed)
    cfg = TrainConfig(dataset="random", resolution=args.resolution, batch_size=args.batch_size,
                      ngf=args.ngf, ndf=args.ndf, recon_loss=args.recon_loss, xla=args.xla,
                      mixed_precision=args.mixed_precision)
    gan = FastGAN(cfg, reconstruction_loss(cfg.recon_loss), mixed=mixed)
    real = tf.constant(np.random.default_rng(0).uniform(
        -1, 1, (cfg.batch_size, cfg.resolution, cfg.resolution, 3)).astype(np.float32))
    for _ in range(args.warmup):
        gan.train_step(real)["g_loss"].numpy()
    times = []
    for _ in range(args.iterations):
        start = time.perf_counter()
        gan.train_step(real)["g_loss"].numpy()
        times.append(time.perf_counter() - start)
    return {
        "resolution": cfg.resolution, "batch_size": cfg.batch_size, "ngf": cfg.ngf,
        "ndf": cfg.ndf, "recon_loss": cfg.recon_loss, "mixed_precision": args.mixed_precision,
        "xla": cfg.xla, "threads": args.threads, "iterations": args.iterations,
        "median_s_per_iter": float(np.median(times)), "min_s_per_iter": float(np.min(times)),
        "peak_rss_mib": peak_rss_mib(),
    }


def run_in_subprocess(argv: list[str]) -> dict:
    cmd = [sys.executable, __file__, "--single", *argv]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    if done.returncode != 0:
        raise SystemExit(f"benchmark failed: {done.stderr.strip().splitlines()[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--ndf", type=int, default=64)
    p.add_argument("--recon-loss", default="l1", choices=("lpips", "l1", "mse"))
    p.add_argument("--mixed-precision", default="off", choices=("on", "off"))
    p.add_argument("--xla", action="store_true")
    p.add_argument("--threads", type=int, default=0, help="intra/inter-op threads; 0 = TF default")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iterations", type=int, default=5)
    p.add_argument("--compare-xla", action="store_true", help="measure without and with XLA")
    p.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
    args, _ = p.parse_known_args()
    if args.single:
        print(json.dumps(measure(args)))
        return
    argv = [a for a in sys.argv[1:] if a not in ("--compare-xla", "--xla")]
    if not args.compare_xla:
        print(json.dumps(run_in_subprocess(argv + (["--xla"] if args.xla else [])), indent=2))
        return
    plain, xla = run_in_subprocess(argv), run_in_subprocess(argv + ["--xla"])
    ratio = xla["median_s_per_iter"] / plain["median_s_per_iter"]
    print(json.dumps({"without_xla": plain, "with_xla": xla, "xla_time_ratio": ratio}, indent=2))


if __name__ == "__main__":
    main()
