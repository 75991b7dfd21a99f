"""Median seconds per FastGAN training iteration and peak memory, printed as JSON.

    python benchmarks/train_step.py --resolution 256 --batch-size 8 --recon-loss l1 --threads 2
    python benchmarks/train_step.py --resolution 64 --ngf 16 --ndf 16 --xla off on
    python benchmarks/train_step.py --resolution 64 256 --recon-loss l1 lpips \
        --mixed-precision off on --xla off on          # the whole grid, one process per setting

Every option that takes several values spans a grid; each setting runs in its own process (so
its peak RSS belongs to it alone) on random images, after warm-up iterations that absorb tracing
and compilation, with the trainer's runtime settings (one inter-op thread on CPU, freed memory
returned after each step). `--rounds N` runs the whole grid N times, in reversed order every
other round, so that a slow phase of a shared machine does not fall on one setting only.
`time_vs_first` is, per setting, the median over rounds of its time divided by the first
setting's time in the same round: these machines are shared and noisy, so only compare numbers
measured together. The output names the machine (CPU model, cores, SIMD flags, load).

`--tensor-memory` adds the peak bytes held by TensorFlow's allocator (switching the CPU allocator
to BFC, which is slower: its timings are not comparable). LPIPS runs with random VGG16 weights
(the ImageNet file is not needed to time it; the work is the same).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from machine import machine  # noqa: E402
GRID = ("resolution", "batch_size", "recon_loss", "mixed_precision", "xla", "accumulate")


def peak_rss_mib() -> float | None:
    try:
        import resource
    except ImportError:  # Windows: no resource module
        return None
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024.0 if sys.platform != "darwin" else kib / 2**20


def measure(args: argparse.Namespace) -> dict:
    """Build FastGAN for one setting, run warm-up + timed iterations, return the numbers."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.tensor_memory:
        os.environ["TF_CPU_ALLOCATOR_USE_BFC"] = "true"
    import numpy as np
    import tensorflow as tf

    from fastgan_tf.config import TrainConfig
    from fastgan_tf.losses import reconstruction_loss
    from fastgan_tf.training.distribute import configure_cpu_threads
    from fastgan_tf.training.fastgan import FastGAN
    from fastgan_tf.training import registry
    from fastgan_tf.training.precision import loss_scaling, set_policy

    configure_cpu_threads()
    if args.threads and tf.config.threading.get_intra_op_parallelism_threads() != args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)  # once per process
    mode = args.mixed_precision
    cfg = TrainConfig(dataset="random", resolution=args.resolution, batch_size=args.batch_size,
                      ngf=args.ngf, ndf=args.ndf, recon_loss=args.recon_loss,
                      xla=args.xla == "on", mixed_precision=args.mixed_precision,
                      accumulate=args.accumulate)
    set_policy(mode)
    gan = FastGAN(cfg, reconstruction_loss(cfg.recon_loss, vgg_weights=None),
                  mixed=loss_scaling(mode))
    real = tf.constant(np.random.default_rng(0).uniform(
        -1, 1, (cfg.batch_size, cfg.resolution, cfg.resolution, 3)).astype(np.float32))
    start = time.perf_counter()
    gan.train_on_batch(real)["g_loss"].numpy()
    first = time.perf_counter() - start
    for _ in range(args.warmup - 1):
        gan.train_on_batch(real)["g_loss"].numpy()
    times = []
    for _ in range(args.iterations):
        start = time.perf_counter()
        gan.train_on_batch(real)["g_loss"].numpy()
        times.append(time.perf_counter() - start)
    result = {
        "resolution": cfg.resolution, "batch_size": cfg.batch_size, "ngf": cfg.ngf,
        "ndf": cfg.ndf, "recon_loss": cfg.recon_loss, "mixed_precision": args.mixed_precision,
        "xla": cfg.xla, "accumulate": cfg.accumulate, "intra_op_threads": args.threads or None,
        "iterations": args.iterations, "first_step_s": round(first, 2),
        "median_s_per_iter": round(float(np.median(times)), 3),
        "min_s_per_iter": round(float(np.min(times)), 3),
        "peak_rss_mib": round(peak_rss_mib() or 0.0, 1) or None,
    }
    if args.tensor_memory:
        info = tf.config.experimental.get_memory_info("CPU:0")
        result["peak_tensor_mib"] = round(info["peak"] / 2**20, 1)
        result["estimate"] = registry.get("fastgan").memory_estimate(
            cfg, cfg.batch_size // cfg.accumulate, mode)  # one device
    return result


def run_in_subprocess(argv: list[str]) -> dict:
    cmd = [sys.executable, __file__, "--single", *argv]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    if done.returncode != 0:
        raise SystemExit(f"benchmark {' '.join(argv)} failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--resolution", type=int, nargs="+", default=[256])
    p.add_argument("--batch-size", type=int, nargs="+", default=[8])
    p.add_argument("--recon-loss", nargs="+", default=["l1"], choices=("lpips", "l1", "mse"))
    p.add_argument("--mixed-precision", nargs="+", default=["off"], choices=("on", "bf16", "off"))
    p.add_argument("--xla", nargs="+", default=["off"], choices=("on", "off"))
    p.add_argument("--accumulate", type=int, nargs="+", default=[1])
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--ndf", type=int, default=64)
    p.add_argument("--threads", type=int, default=0, help="intra-op threads; 0 = TF default")
    p.add_argument("--warmup", type=int, default=2, help="untimed iterations (>= 1)")
    p.add_argument("--iterations", type=int, default=5, help="timed iterations")
    p.add_argument("--rounds", type=int, default=1, help="times the whole grid runs, interleaved")
    p.add_argument("--tensor-memory", action="store_true",
                   help="also report TensorFlow's peak tensor bytes (BFC allocator; slower)")
    p.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
    return p


def main() -> None:
    args = parser().parse_args()
    if args.single:
        for name in GRID:
            setattr(args, name, getattr(args, name)[0])
        print(json.dumps(measure(args)))
        return
    common = ["--ngf", str(args.ngf), "--ndf", str(args.ndf), "--threads", str(args.threads),
              "--warmup", str(max(args.warmup, 1)), "--iterations", str(args.iterations)]
    common += ["--tensor-memory"] if args.tensor_memory else []
    settings = [common + [a for name, v in zip(GRID, values)
                          for a in (f"--{name.replace('_', '-')}", str(v))]
                for values in itertools.product(*(getattr(args, name) for name in GRID))]
    rounds = []
    for index in range(max(args.rounds, 1)):
        order = range(len(settings)) if index % 2 == 0 else reversed(range(len(settings)))
        measured = {i: run_in_subprocess(settings[i]) for i in order}
        rounds.append([measured[i] for i in range(len(settings))])
        for result in rounds[-1]:
            print(json.dumps(dict(result, round=index)), file=sys.stderr, flush=True)  # progress
    results = [summarise([r[i] for r in rounds], [r[0] for r in rounds])
               for i in range(len(settings))]
    print(json.dumps({"machine": machine(), "rounds": len(rounds), "results": results}, indent=2))


def summarise(runs: list[dict], firsts: list[dict]) -> dict:
    """One setting over the rounds: its median time, and its time over the first setting's."""
    import numpy as np

    summary = dict(runs[0])
    times = [r["median_s_per_iter"] for r in runs]
    summary.update(median_s_per_iter=round(float(np.median(times)), 3),
                   per_round_s=times,
                   min_s_per_iter=min(r["min_s_per_iter"] for r in runs),
                   peak_rss_mib=max(r["peak_rss_mib"] or 0 for r in runs) or None,
                   time_vs_first=round(float(np.median(
                       [r["median_s_per_iter"] / f["median_s_per_iter"]
                        for r, f in zip(runs, firsts)])), 3))
    return summary


if __name__ == "__main__":
    main()
