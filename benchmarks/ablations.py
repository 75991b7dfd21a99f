"""The paper's ablations and the SSD baseline, trained alike and scored alike, as JSON.

    python benchmarks/ablations.py --dataset demo --epochs 10
    python benchmarks/ablations.py --dataset ../shared/datasets/twemoji-faces --epochs 30 \
        --inception-weights ~/.keras/models/inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5

Variants (FastGAN paper, Table 2, plus the Spectral Style-DCGAN): `fastgan` (full model),
`no-sle` (Baseline + decode), `no-decoders` (Baseline + Skip), `baseline` (neither), `ssd`. Every
variant trains with the same dataset, resolution (64), batch size and epochs, so the same number
of iterations and images seen, through the same `train.py` (each in its own process), and is
scored by the same `evaluate.py --fid --kid` on the EMA generator (called in this process).

When the Keras InceptionV3 ImageNet weights are not available (offline), a randomly initialised
InceptionV3 is used so the pipeline still runs; the output then says `backbone: keras-random`, and
its FID/KID only check the pipeline - they say nothing about quality.
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
VARIANTS = {
    "fastgan": [],
    "no-sle": ["--no-sle"],
    "no-decoders": ["--no-decoders"],
    "baseline": ["--no-sle", "--no-decoders"],
    "ssd": ["--model", "ssd"],
}
RANDOM_INPUT_SIZE = 75  # the smallest input Keras's InceptionV3 accepts: fast on CPU


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{done.stderr[-3000:]}")
    return done


def random_inception(folder: Path) -> Path:
    """A seeded, randomly initialised InceptionV3 weights file, for offline pipeline checks."""
    code = (
        "import keras, sys; keras.utils.set_random_seed(0); "
        "m = keras.applications.InceptionV3(include_top=False, weights=None, pooling='avg', "
        f"input_shape=({RANDOM_INPUT_SIZE}, {RANDOM_INPUT_SIZE}, 3)); m.save_weights(sys.argv[1])")
    path = folder / "random_inception.weights.h5"
    run([sys.executable, "-c", code, str(path)])
    return path


def score(run_dir: Path, num_samples: int, weights: str | None, input_size: int | None) -> dict:
    """`evaluate.py --fid --kid --json` on a run; at `input_size` for the random backbone."""
    import contextlib
    import io

    from fastgan_tf import metrics
    from fastgan_tf.cli.evaluate import main as evaluate

    argv = ["--fid", "--kid", "--json", "--run", str(run_dir), "--num-samples", str(num_samples),
            "--backbone", "keras", *(["--inception-weights", weights] if weights else [])]
    load = metrics.load_backbone
    if input_size:  # the randomly initialised backbone is scored small, to be quick
        metrics.load_backbone = lambda name, weights="imagenet", **kw: load(
            name, weights, **{**kw, "input_size": input_size})
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            code = evaluate(argv)
    finally:
        metrics.load_backbone = load
    if code != 0:
        raise SystemExit(f"evaluate.py {' '.join(argv)} failed with exit code {code}")
    return json.loads(out.getvalue())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="demo")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--width", type=int, default=16, help="ngf = ndf for the FastGAN variants")
    p.add_argument("--num-samples", type=int, default=1000)
    p.add_argument("--inception-weights", help="Keras InceptionV3 notop .h5 (default: Keras cache)")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--out", default=None, help="runs folder; default a temporary one")
    args = p.parse_args()

    out = Path(args.out or tempfile.mkdtemp(prefix="fastgan_ablations_"))
    out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(REPO))
    from fastgan_tf.metrics import backbone_weights_available

    backbone, weights, input_size = "keras", args.inception_weights, None
    if not weights and not backbone_weights_available("keras"):
        backbone, weights = "keras-random", str(random_inception(out))
        input_size = RANDOM_INPUT_SIZE

    results = []
    for name in args.variants.split(","):
        width = 64 if name == "ssd" else args.width  # SSD at the paper's widths (6.6 M params)
        widths = ["--ngf", str(width), "--ndf", str(width)]
        train = [sys.executable, "train.py", "--dataset", args.dataset, "--epochs",
                 str(args.epochs), "--resolution", "64", "--batch-size", str(args.batch_size),
                 "--recon-loss", "l1", "--fid-every", "0", "--out", str(out), "--run-name", name,
                 "--seed", "0", *VARIANTS[name], *widths]
        started = time.perf_counter()
        run(train)
        seconds = time.perf_counter() - started
        record = score(out / name, args.num_samples, weights, input_size)
        params = json.loads(run([*train, "--dry-run"]).stdout)["params"]
        results.append({"variant": name, "backbone": backbone, "fid": record["fid"],
                        "kid_mean": record["kid_mean"], "kid_std": record["kid_std"],
                        "num_fake": record["num_fake"], "num_real": record["num_real"],
                        "params": params, "train_seconds": round(seconds, 1)})
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    print(json.dumps({"dataset": args.dataset, "epochs": args.epochs,
                      "batch_size": args.batch_size, "results": results}, indent=2))


if __name__ == "__main__":
    main()
