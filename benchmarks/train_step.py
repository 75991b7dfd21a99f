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

`--reference-dir DIR` adds the authors' PyTorch code (a checkout of odegeasslbc/FastGAN-pytorch,
run by `reference_step.py` under `--reference-python`, a Python with torch, torchvision and lpips)
at each (resolution, batch, recon loss) of the grid, in float32, interleaved with this project's
settings in every round; `time_vs_reference` is then, per setting, the median over rounds of its
time over the reference's time in the same round. `--onednn on off` times this project with
TensorFlow's oneDNN kernels on and off (`TF_ENABLE_ONEDNN_OPTS`); the default, `cli`, is what
train.py does (on, on x86-64), `tensorflow` leaves TensorFlow's own choice, which depends on the
CPU (off on an AMD EPYC, on on recent Intel Xeons). `--filter-gradients auto tensorflow matmul`
times the convolutions' filter gradients as the package chooses them (`models/conv_grads.py`:
matrix products on CPUs with oneDNN on and without AVX-512) against TensorFlow's own and against
the matrix products wherever the package would use them but for the CPU's AVX-512;
`--batch-norm auto exact` BatchNorm as the package chooses it (`models/layers.py`: TensorFlow's
fused op in bfloat16 on a CPU) against its exact float32 path everywhere;
`--mmap-threshold auto glibc` the host allocator as train.py sets it (`training/host_memory.py`)
against glibc's defaults; `--lpips-precision float32 bf16` LPIPS's VGG16 in float32 against its
blocks 3-5 in bfloat16 (settings with another loss run once).

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

from machine import configure_threads, machine, peak_rss_mib  # noqa: E402

sys.path.insert(0, str(REPO))
from fastgan_tf.config import LPIPS_PRECISIONS, RECON_LOSSES  # noqa: E402 (no TensorFlow)

GRID = ("resolution", "batch_size", "recon_loss", "mixed_precision", "lpips_precision", "xla",
        "accumulate", "onednn", "filter_gradients", "batch_norm", "mmap_threshold")
SAME_WORK = ("resolution", "batch_size", "recon_loss")  # what the reference is matched on


def measure(args: argparse.Namespace) -> dict:
    """Build FastGAN for one setting, run warm-up + timed iterations, return the numbers."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.tensor_memory:
        os.environ["TF_CPU_ALLOCATOR_USE_BFC"] = "true"
    os.environ.pop("TF_ENABLE_ONEDNN_OPTS", None)  # "tensorflow": TensorFlow's own choice
    if args.onednn == "cli":
        from fastgan_tf.cli.common import fast_cpu_kernels

        fast_cpu_kernels()  # as train.py, before TensorFlow starts
    elif args.onednn in ("on", "off"):
        os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1" if args.onednn == "on" else "0"
    import keras
    import numpy as np
    import tensorflow as tf

    from fastgan_tf import cpu
    from fastgan_tf.config import TrainConfig
    from fastgan_tf.losses import reconstruction_loss
    from fastgan_tf.models import layers as model_layers
    from fastgan_tf.training import fastgan as fastgan_module
    from fastgan_tf.training.fastgan import FastGAN
    from fastgan_tf.training import registry
    from fastgan_tf.training.precision import loss_scaling, set_policy

    configure_threads(args.threads)
    mode = args.mixed_precision
    cfg = TrainConfig(dataset="random", resolution=args.resolution, batch_size=args.batch_size,
                      ngf=args.ngf, ndf=args.ndf, recon_loss=args.recon_loss,
                      xla=args.xla == "on", mixed_precision=args.mixed_precision,
                      lpips_precision=args.lpips_precision, accumulate=args.accumulate)
    set_policy(mode)
    if args.filter_gradients == "tensorflow":  # the layers ask this when they are traced
        model_layers.matmul_filter_gradients = lambda dtype, output_pixels: False
    if args.filter_gradients == "matmul":  # as on a CPU without AVX-512
        cpu.has_avx512 = lambda: False
    if args.batch_norm == "exact":  # BatchNorm asks this when it is traced
        model_layers.fused_batch_norm = lambda dtype, shape, replicas=1: False
    if args.mmap_threshold == "glibc":  # FastGAN asks this when it is built
        fastgan_module.map_large_blocks = lambda: False
    compute_dtype = keras.mixed_precision.global_policy().compute_dtype
    # G's last up-conv has the largest output: whether any layer takes the matmul form
    matmul = model_layers.matmul_filter_gradients(compute_dtype, args.resolution ** 2)
    fused = model_layers.fused_batch_norm(compute_dtype, (1, 1, 1, 16))  # wherever C allows
    recon = reconstruction_loss(cfg.recon_loss, vgg_weights=None,
                                lpips_precision=cfg.lpips_precision)
    gan = FastGAN(cfg, recon, mixed=loss_scaling(mode))
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
        "lpips_precision": cfg.lpips_precision if cfg.recon_loss == "lpips" else None,
        "xla": cfg.xla, "accumulate": cfg.accumulate, "intra_op_threads": args.threads or None,
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "tensorflow's default"),
        "filter_gradients": "matmul" if matmul else "tensorflow",
        "batch_norm": "fused" if fused else "exact",
        "mmap_threshold": args.mmap_threshold,
        "code": "fastgan-tf",
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


def run_in_subprocess(setting: dict, args: argparse.Namespace) -> dict:
    """One setting in its own process: this project's (`--single`) or the reference's."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    options = []
    for name, value in setting.items():
        if name != "code":
            flag = f"--{name.replace('_', '-')}"
            options += [flag] if value is True else [flag, str(value)]
    if setting["code"] == "reference":
        cmd = [args.reference_python, str(REPO / "benchmarks" / "reference_step.py"),
               "--reference-dir", str(args.reference_dir), *options]
    else:
        cmd = [sys.executable, __file__, "--single", *options]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)
    if done.returncode != 0:
        raise SystemExit(f"benchmark {' '.join(cmd[1:])} failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def grid_settings(args: argparse.Namespace) -> list[dict]:
    """This project's grid, then the reference once per (resolution, batch, recon loss)."""
    common = {"ngf": args.ngf, "ndf": args.ndf, "threads": args.threads,
              "warmup": max(args.warmup, 1), "iterations": args.iterations}
    ours = [dict(common, code="fastgan-tf", **dict(zip(GRID, values)))
            for values in itertools.product(*(getattr(args, name) for name in GRID))]
    # LPIPS's precision matters only to lpips: other losses run once, at the first value
    ours = [s for s in ours if s["recon_loss"] == "lpips"
            or s["lpips_precision"] == args.lpips_precision[0]]
    if args.tensor_memory:
        ours = [dict(s, tensor_memory=True) for s in ours]
    if not args.reference_dir:
        return ours
    same = sorted({tuple(s[k] for k in SAME_WORK) for s in ours}, key=str)
    return ours + [dict(common, code="reference", **dict(zip(SAME_WORK, v)))
                   for v in same]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--resolution", type=int, nargs="+", default=[256])
    p.add_argument("--batch-size", type=int, nargs="+", default=[8])
    p.add_argument("--recon-loss", nargs="+", default=["l1"], choices=RECON_LOSSES)
    p.add_argument("--mixed-precision", nargs="+", default=["off"], choices=("on", "bf16", "off"))
    p.add_argument("--lpips-precision", nargs="+", default=["float32"],
                   choices=LPIPS_PRECISIONS, help="LPIPS's VGG16 (lpips only)")
    p.add_argument("--xla", nargs="+", default=["off"], choices=("on", "off"))
    p.add_argument("--accumulate", type=int, nargs="+", default=[1])
    p.add_argument("--onednn", nargs="+", default=["cli"], choices=("cli", "tensorflow", "on", "off"),
                   help="TF_ENABLE_ONEDNN_OPTS for this project's settings (cli: as train.py)")
    p.add_argument("--filter-gradients", nargs="+", default=["auto"],
                   choices=("auto", "tensorflow", "matmul"),
                   help="convolution filter gradients: the package's choice, TensorFlow's own, or "
                        "the package's matrix products whatever the CPU")
    p.add_argument("--batch-norm", nargs="+", default=["auto"], choices=("auto", "exact"),
                   help="BatchNorm as the package chooses it (TensorFlow's fused op in bfloat16 "
                        "on a CPU) or its exact float32 path everywhere")
    p.add_argument("--mmap-threshold", nargs="+", default=["auto"], choices=("auto", "glibc"),
                   help="host allocator: as train.py (glibc's mmap threshold fixed at 4 MiB) or "
                        "glibc's own dynamic threshold")
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--ndf", type=int, default=64)
    p.add_argument("--threads", type=int, default=0, help="intra-op threads; 0 = TF default")
    p.add_argument("--warmup", type=int, default=2, help="untimed iterations (>= 1)")
    p.add_argument("--iterations", type=int, default=5, help="timed iterations")
    p.add_argument("--rounds", type=int, default=1, help="times the whole grid runs, interleaved")
    p.add_argument("--tensor-memory", action="store_true",
                   help="also report TensorFlow's peak tensor bytes (BFC allocator; slower)")
    p.add_argument("--reference-dir", type=Path,
                   help="a checkout of the authors' PyTorch FastGAN, timed in the same rounds")
    p.add_argument("--reference-python", default=sys.executable,
                   help="the Python (with torch, torchvision, lpips) that runs the reference")
    p.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
    return p


def main() -> None:
    args = parser().parse_args()
    if args.single:
        for name in GRID:
            setattr(args, name, getattr(args, name)[0])
        print(json.dumps(measure(args)))
        return
    settings = grid_settings(args)
    rounds = []
    for index in range(max(args.rounds, 1)):
        order = range(len(settings)) if index % 2 == 0 else reversed(range(len(settings)))
        measured = {i: run_in_subprocess(settings[i], args) for i in order}
        rounds.append([measured[i] for i in range(len(settings))])
        for result in rounds[-1]:
            print(json.dumps(dict(result, round=index)), file=sys.stderr, flush=True)  # progress
    results = [summarise([r[i] for r in rounds], [r[0] for r in rounds],
                         [reference_of(r, settings[i]) for r in rounds])
               for i in range(len(settings))]
    print(json.dumps({"machine": machine(), "rounds": len(rounds), "results": results}, indent=2))


def reference_of(results: list[dict], setting: dict) -> dict | None:
    """The reference's result of the same round for the same work as `setting`, if timed."""
    return next((r for r in results if r.get("code") == "pytorch-reference"
                 and all(r[k] == setting[k] for k in SAME_WORK)), None)


def summarise(runs: list[dict], firsts: list[dict], references: list[dict | None]) -> dict:
    """One setting over the rounds: its median time, its time over the first setting's and
    (when the reference ran) over the reference's, each ratio taken within a round."""
    import numpy as np

    def ratio(others):
        return round(float(np.median([r["median_s_per_iter"] / o["median_s_per_iter"]
                                      for r, o in zip(runs, others)])), 3)

    summary = dict(runs[0])
    times = [r["median_s_per_iter"] for r in runs]
    summary.update(median_s_per_iter=round(float(np.median(times)), 3),
                   per_round_s=times,
                   min_s_per_iter=min(r["min_s_per_iter"] for r in runs),
                   peak_rss_mib=max(r["peak_rss_mib"] or 0 for r in runs) or None,
                   per_round_peak_rss_mib=[r["peak_rss_mib"] for r in runs],
                   time_vs_first=ratio(firsts))
    if all(references):
        summary["time_vs_reference"] = ratio(references)
    return summary


if __name__ == "__main__":
    main()
