"""Does a precision train as well as float32? Short runs, then FID/KID in pixel space (JSON).

    python benchmarks/precision_quality.py --dataset demo --steps 300
    python benchmarks/precision_quality.py --dataset ../shared/datasets/twemoji-faces --steps 300
    python benchmarks/precision_quality.py --precisions bf16 --recon-loss lpips \
        --lpips-precisions float32 bf16 --vgg-weights PATH

For each dataset, trains the same command (64 px, ngf = ndf = 16, l1 unless `--recon-loss lpips`,
EMA 0.99) with each `--precisions` value (and each `--lpips-precisions` value) at `--seed`, and
the first of these settings once more at `--seed + 1`: that pair shows how much two equally good
runs differ (another precision follows another trajectory from the first step, so "as well" means
"within that spread", not "equal"). Not --deterministic: with op determinism on,
TensorFlow's CPU bfloat16 kernels were ~20x slower here. Then the EMA generator of each run draws
`--samples` images, scored against the training images with FID and KID on pixel features (16x16
averages, fixed random projection to 64 dimensions): no download, and sensitive to colour, layout
and variety at this resolution, though not a substitute for Inception.

Runs go to a temporary folder (`--out` keeps them). Seconds per step include the loop's work
(samples, metrics); compare them only within one invocation.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from machine import machine  # noqa: E402

sys.path.insert(0, str(REPO))
from fastgan_tf.config import LPIPS_PRECISIONS  # noqa: E402 (no TensorFlow)

PIXEL_SIDE, PROJECTED = 16, 64


def train(dataset: str, setting: tuple, seed: int, args, out: Path, name: str) -> float:
    """Train one run in its own process (precision is a global Keras policy); its seconds."""
    precision, lpips_precision = setting
    cmd = [sys.executable, str(REPO / "train.py"), "--dataset", dataset, "--resolution", "64",
           "--ngf", "16", "--ndf", "16", "--recon-loss", args.recon_loss, "--ema-decay", "0.99",
           "--steps", str(args.steps), "--seed", str(seed), "--mixed-precision", precision,
           "--lpips-precision", lpips_precision, "--fid-every", "0",
           "--sample-every", f"{args.steps}steps", "--out", str(out), "--run-name", name]
    if args.vgg_weights:
        cmd += ["--vgg-weights", str(args.vgg_weights)]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {done.stderr.strip()[-2000:]}")
    return time.perf_counter() - start


def features(images, projection):
    from fastgan_tf.metrics.diversity import pixel_features

    return pixel_features(images, side=PIXEL_SIDE) @ projection


def score(run: Path, real, projection, samples: int) -> dict:
    """FID and KID of the run's EMA generator against `real` features."""
    import numpy as np

    from fastgan_tf.generation import generate
    from fastgan_tf.metrics.frechet import frechet_distance
    from fastgan_tf.metrics.kid import kernel_inception_distance
    from fastgan_tf.runs import load_generator

    fake = features(generate(load_generator(run).generator, samples, seed=123), projection)
    fid = frechet_distance(real.mean(0), np.cov(real, rowvar=False),
                           fake.mean(0), np.cov(fake, rowvar=False))
    kid, kid_std = kernel_inception_distance(real, fake, num_subsets=100)
    return {"fid_pixels": round(float(fid), 4), "kid_pixels": round(kid, 5),
            "kid_std": round(kid_std, 5)}


def real_features(run: Path, projection):
    from fastgan_tf.runs import load_config
    from fastgan_tf.training.dataset import load_training_images

    return features(load_training_images(load_config(run)).images, projection)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", nargs="+", default=["demo"])
    p.add_argument("--precisions", nargs="+", default=["off", "bf16"],
                   choices=("off", "on", "bf16"))
    p.add_argument("--recon-loss", default="l1", choices=("l1", "lpips"))
    p.add_argument("--lpips-precisions", nargs="+", default=["float32"],
                   choices=LPIPS_PRECISIONS, help="with --recon-loss lpips")
    p.add_argument("--vgg-weights", type=Path, default=None, help="VGG16 weights for lpips")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--samples", type=int, default=500)
    p.add_argument("--out", type=Path, default=None, help="keep the runs here")
    args = p.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np

    projection = np.random.default_rng(0).standard_normal((PIXEL_SIDE * PIXEL_SIDE * 3, PROJECTED))
    projection /= np.sqrt(projection.shape[0])
    out = args.out or Path(tempfile.mkdtemp(prefix="precision_quality-"))
    before = machine()
    results = []
    lpips_precisions = args.lpips_precisions if args.recon_loss == "lpips" else ["float32"]
    for index, dataset in enumerate(args.dataset):
        settings = [(p, lp) for p in args.precisions for lp in lpips_precisions]
        runs = [(setting, args.seed) for setting in settings] + [(settings[0], args.seed + 1)]
        real = None
        for setting, seed in runs:
            name = f"d{index}-{'-'.join(setting)}-seed{seed}"
            seconds = train(dataset, setting, seed, args, out, name)
            real = real_features(out / name, projection) if real is None else real
            row = {"dataset": dataset, "precision": setting[0], "recon_loss": args.recon_loss,
                   **({"lpips_precision": setting[1]} if args.recon_loss == "lpips" else {}),
                   "seed": seed, "steps": args.steps,
                   "seconds_per_step": round(seconds / args.steps, 3),
                   **score(out / name, real, projection, args.samples)}
            print(json.dumps(row), file=sys.stderr)
            results.append(row)
    print(json.dumps({"machine": before, "load_after": machine()["load_average"],
                      "runs": results, "kept_in": str(out) if args.out else None}, indent=1))


if __name__ == "__main__":
    main()
