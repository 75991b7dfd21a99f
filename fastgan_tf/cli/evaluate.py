"""`python evaluate.py`: score, sample, animate, mix, inspect or export a trained run's EMA generator."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from fastgan_tf.cli.common import ArgumentParser, run_cli

ACTIONS = ("--fid", "--kid", "--pr", "--generate N", "--grid", "--interpolate", "--style-mix",
           "--nearest", "--export DIR")
BACKBONE_LABELS = {"keras": "keras InceptionV3", "standard": "standard Inception 2015-12-05"}
NEEDS_TRAINING_IMAGES = ("metrics", "nearest")  # the actions that read the run's dataset


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="evaluate.py", allow_abbrev=False,
        description="Evaluate a trained run (default: the most recent under checkpoints/). One "
                    "action per call; --fid, --kid and --pr together share the same samples.")
    a = p.add_argument_group("actions")
    a.add_argument("--fid", action="store_true", help="FID of generated samples vs the training set")
    a.add_argument("--kid", action="store_true", help="KID (unbiased; better for few images)")
    a.add_argument("--pr", action="store_true",
                   help="precision and recall (k=3), density and coverage (k=5) of the same "
                        "Inception features")
    a.add_argument("--generate", type=_positive, metavar="N", help="write N sample PNGs")
    a.add_argument("--grid", action="store_true",
                   help="one PNG grid instead of files (of --generate N images, default 16)")
    a.add_argument("--interpolate", type=_positive, nargs="?", const=4, metavar="K",
                   help="latent walk through K random latents (default 4): frames and a GIF")
    a.add_argument("--style-mix", type=_positive, nargs="?", const=4, metavar="N",
                   help="(N+1)x(N+1) style-mixing grid, default N=4 (256px runs and up)")
    a.add_argument("--nearest", type=_positive, nargs="?", const=8, metavar="N",
                   help="N samples (default 8), each with its nearest training images")
    a.add_argument("--export", type=Path, metavar="DIR",
                   help="save the generator as a SavedModel (+ Keras weights) to DIR")
    a.add_argument("--tflite", action="store_true",
                   help="--export: also TensorFlow Lite models (float32 and float16 weights) for "
                        "batches of --batch-size latents")

    w = p.add_argument_group("which generator")
    w.add_argument("--run", type=Path, metavar="DIR", help="run folder (or its name under --out); default: "
                   "the most recently active run")
    w.add_argument("--out", type=Path, default=Path("checkpoints"), metavar="DIR",
                   help="folder holding runs, as in train.py; default checkpoints/")
    w.add_argument("--checkpoint", default="latest", metavar="WHICH",
                   help="latest (default), best (lowest FID during training) or a checkpoint path")

    s = p.add_argument_group("sampling")
    s.add_argument("--seed", type=int, default=0, metavar="N", help="seed for latents and noise; default 0")
    s.add_argument("--batch-size", type=_positive, default=16, metavar="N",
                   help="images per generator/Inception batch; default 16 (fits 4 GB)")
    s.add_argument("--truncation", type=float, metavar="PSI",
                   help="redraw latent entries with |z| > PSI (BigGAN truncation); not for FID/KID")
    s.add_argument("--output-dir", type=Path, metavar="DIR",
                   help="where pictures go; default <run>/generated/")
    s.add_argument("--frames", type=_positive, default=16, metavar="N",
                   help="--interpolate: frames per segment; default 16")
    s.add_argument("--interpolation", choices=("slerp", "linear"), default="slerp",
                   help="--interpolate: spherical (default) or linear")
    s.add_argument("--fps", type=float, default=12.0, help="--interpolate: GIF frame rate")
    s.add_argument("--neighbours", "--neighbors", type=_positive, default=3, metavar="K",
                   help="--nearest: training images per sample; default 3")

    m = p.add_argument_group("metrics")
    m.add_argument("--num-samples", type=_positive, default=5000, metavar="N",
                   help="generated samples for FID/KID/--pr; default 5000 (vs the whole training "
                        "set)")
    m.add_argument("--backbone", choices=("keras", "standard"),
                   help="keras InceptionV3 or the standard 2015 Inception of the papers; "
                        "default: the run's fid_backbone (keras)")
    m.add_argument("--inception-weights", metavar="PATH",
                   help="backbone weights file, for offline use (.h5, or .tgz/.pb for standard)")
    m.add_argument("--kid-subsets", type=_positive, default=100, metavar="N",
                   help="KID: average over N random subsets of up to 1000 images; default 100")
    m.add_argument("--dataset", metavar="PATH",
                   help="the training images for --fid/--kid/--pr/--nearest, when the run's "
                        "own path is not on this machine (a run moved between WSL and Windows "
                        "is found by itself); default: the run's dataset")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    return p


def _chosen_action(args: argparse.Namespace) -> str:
    from fastgan_tf.errors import UserError

    chosen = [name for name, on in (
        ("metrics", args.fid or args.kid or args.pr), ("generate", args.generate or args.grid),
        ("interpolate", args.interpolate), ("style_mix", args.style_mix),
        ("nearest", args.nearest), ("export", args.export)) if on]
    if not chosen:
        raise UserError(f"no action given: pass one of {', '.join(ACTIONS)} (see --help)")
    if len(chosen) > 1:
        names = " and ".join("--fid/--kid/--pr" if c == "metrics" else "--" + c.replace("_", "-")
                             for c in chosen)
        raise UserError(f"one action per call, got {names} (only --fid, --kid and --pr go "
                        "together)")
    if chosen[0] == "metrics":
        _check_metric_options(args)
    if args.tflite and chosen[0] != "export":
        raise UserError("--tflite goes with --export DIR")
    if args.truncation is not None and args.truncation <= 0:
        raise UserError(f"--truncation must be positive, got {args.truncation}")
    return chosen[0]


def _check_metric_options(args: argparse.Namespace) -> None:
    from fastgan_tf.errors import UserError
    from fastgan_tf.metrics.prdc import DC_NEIGHBOURS

    minimum, what = (DC_NEIGHBOURS + 1, f"--pr (k = {DC_NEIGHBOURS} nearest neighbours)") \
        if args.pr else (2, "FID/KID")
    if args.num_samples < minimum:
        raise UserError(f"--num-samples must be at least {minimum} for {what}, got "
                        f"{args.num_samples}")
    if args.truncation is not None:
        raise UserError("--truncation does not apply to --fid/--kid/--pr: they score the plain "
                        "N(0, I) generator")


def _run_dir(args: argparse.Namespace) -> Path:
    from fastgan_tf.runs import latest_run

    if args.run is None:
        return latest_run(args.out)
    if not (args.run / "config.yaml").is_file() and (args.out / args.run / "config.yaml").is_file():
        return args.out / args.run
    return args.run


def _load(run: Path, which: str):
    from fastgan_tf.errors import UserError
    from fastgan_tf.runs import load_generator
    from fastgan_tf.training.fid import read_best

    best = read_best(run) if which == "best" else None
    if which == "best" and not (run / "best").is_dir():
        raise UserError(f"{run} has no best model yet: it is written when FID is tracked during "
                        "training (--fid-every); use --checkpoint latest")
    loaded = load_generator(run, which)
    if best:
        loaded.epoch = loaded.epoch if loaded.epoch is not None else best.get("epoch")
        loaded.step = loaded.step if loaded.step is not None else best.get("step")
    return loaded


def _config_here(args: argparse.Namespace, action: str, cfg):
    """The run's config with paths that work on this machine, `--dataset` applied; the paths
    the action reads must exist (see runs.usable_config)."""
    from fastgan_tf.errors import UserError
    from fastgan_tf.runs import usable_config

    if args.dataset is not None and action not in NEEDS_TRAINING_IMAGES:
        raise UserError("--dataset applies to --fid, --kid, --pr and --nearest (the actions "
                        "that read the training images)")
    needed = ("dataset",) if action in NEEDS_TRAINING_IMAGES else ()
    if action == "metrics" and args.inception_weights is None \
            and args.backbone in (None, cfg.fid_backbone):
        needed += ("inception_weights",)
    return usable_config(cfg, dataset=args.dataset, needed=needed)


def _provenance(run: Path, loaded, which: str) -> dict:
    name = Path(loaded.checkpoint).name
    return {"run": str(run), "checkpoint": name if which != "best" else f"best/{name}",
            "checkpoint_path": loaded.checkpoint, "epoch": loaded.epoch, "step": loaded.step}


def _emit(args: argparse.Namespace, result: dict, line: str) -> None:
    print(json.dumps(result) if args.json else line, flush=True)


# --------------------------------------------------------------------------- actions


def _metrics(args, run, loaded, info) -> dict:
    from fastgan_tf.evaluation import score_run

    metrics = tuple(name for flag, name in (("fid", "fid"), ("kid", "kid"), ("pr", "prdc"))
                    if getattr(args, flag))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        record = score_run(run, loaded, metrics, info, backbone=args.backbone,
                           weights=args.inception_weights, num_samples=args.num_samples,
                           seed=args.seed, batch_size=args.batch_size,
                           kid_subsets=args.kid_subsets)
    for message in dict.fromkeys(str(w.message) for w in caught):
        print(f"note: {message}", file=sys.stderr)
    return record


def metrics_line(r: dict) -> str:
    scores = []
    if "fid" in r:
        scores.append(f"FID {r['fid']:.2f}")
    if "kid_mean" in r:
        scores.append(f"KID {r['kid_mean']:.4g} ± {r['kid_std']:.2g}")
    scores += [f"{key} {r[key]:.3f}" for key in ("precision", "recall", "density", "coverage")
               if key in r]
    label = BACKBONE_LABELS.get(r["backbone"], r["backbone"])
    if r.get("backbone_variant") not in (None, r["backbone"]):
        label += f" [{r['backbone_variant']}]"
    when = f", epoch {r['epoch']}" if r.get("epoch") is not None else ""
    return (f"{', '.join(scores)} ({label}, {r['num_fake']} generated vs {r['num_real']} real, "
            f"checkpoint {r['checkpoint']}{when})")


def _generate(args, out_dir, loaded, info):
    from fastgan_tf import generation
    from fastgan_tf.progress import progress

    g, num = loaded.generator, args.generate or 16
    if args.grid:
        path = out_dir / f"grid_{generation.file_stem(args.seed, args.truncation)}.png"
        generation.save_grid(g, num, path, args.seed, args.truncation, args.batch_size)
        return {**info, "action": "grid", "count": num, "file": str(path)}, \
            f"Wrote a grid of {num} samples to {path}"
    with progress(total=num, desc="generating", unit="img") as bar:
        paths = generation.save_samples(g, num, out_dir, args.seed, args.truncation,
                                        args.batch_size, bar.update)
    return {**info, "action": "generate", "count": len(paths), "out_dir": str(out_dir),
            "files": [p.name for p in paths]}, \
        f"Wrote {len(paths)} samples to {out_dir} ({paths[0].name} .. {paths[-1].name})"


def _interpolate(args, out_dir, loaded, info):
    from fastgan_tf.generation import save_interpolation

    frames, gif = save_interpolation(loaded.generator, out_dir, args.interpolate, args.frames,
                                     args.interpolation, args.seed, args.truncation,
                                     args.batch_size, args.fps)
    return {**info, "action": "interpolate", "frames": len(frames), "gif": str(gif),
            "frame_dir": str(frames[0].parent)}, \
        f"Wrote {len(frames)} frames ({args.interpolate} latents, {args.interpolation}) to " \
        f"{frames[0].parent} and the GIF {gif}"


def _style_mix(args, out_dir, loaded, info):
    from fastgan_tf.generation import file_stem, style_mix_grid
    from fastgan_tf.visualize import save_png

    grid = style_mix_grid(loaded.generator, args.style_mix, args.seed, args.truncation)
    path = save_png(grid, out_dir / f"style_mix_{file_stem(args.seed, args.truncation)}.png")
    n = args.style_mix
    return {**info, "action": "style_mix", "n": n, "file": str(path)}, \
        f"Wrote a {n + 1}x{n + 1} style-mixing grid to {path} (rows: structure from A, " \
        "columns: SLE gates from B)"


def _nearest(args, out_dir, loaded, info):
    from fastgan_tf import generation
    from fastgan_tf.training.dataset import load_training_images
    from fastgan_tf.visualize import save_png

    real = load_training_images(loaded.config).images
    fake = generation.generate(loaded.generator, args.nearest, args.seed, args.truncation,
                               args.batch_size)
    idx, dist = generation.nearest_neighbours(fake, real, args.neighbours)
    path = out_dir / f"nearest_{generation.file_stem(args.seed, args.truncation)}.png"
    save_png(generation.nearest_grid(fake, real, idx), path)
    size = min(generation.NEAREST_SIZE, real.shape[1])
    closest = int(dist[:, 0].argmin())
    return {**info, "action": "nearest", "file": str(path), "num_real": len(real),
            "distance": f"pixel RMS at {size}x{size}, 0..1", "indices": idx.tolist(),
            "distances": dist.round(5).tolist()}, \
        f"Wrote {path}: {len(fake)} samples, each followed by its {idx.shape[1]} nearest of " \
        f"{len(real)} training images (pixel RMS distance at {size}x{size}; closest " \
        f"{dist[closest, 0]:.4f}: sample {closest} and training image {idx[closest, 0]})"


def _export(args, loaded, info):
    from fastgan_tf.export import export_generator

    result = export_generator(loaded.generator, args.export, info, tflite=args.tflite,
                              tflite_batch=args.batch_size)
    g = loaded.generator
    tflite = f", generator.tflite and generator_fp16.tflite (z [{args.batch_size}, {g.nz}])" \
        if args.tflite else ""
    return {**info, "action": "export", **result}, \
        f"Exported the EMA generator to {args.export}: a SavedModel, serving_default(z float32 " \
        f"[N, {g.nz}]) -> images uint8 [N, {g.resolution}, {g.resolution}, {g.channels}], " \
        f"generator.keras{tflite} (see README.txt)"


def main(argv: list[str] | None = None) -> int:
    def run(args: argparse.Namespace) -> int:
        action = _chosen_action(args)
        run_dir = _run_dir(args)
        loaded = _load(run_dir, args.checkpoint)
        loaded.config = _config_here(args, action, loaded.config)
        info = _provenance(run_dir, loaded, args.checkpoint)
        if action == "metrics":
            record = _metrics(args, run_dir, loaded, info)
            _emit(args, record, metrics_line(record))
            return 0
        if action == "export":
            _emit(args, *_export(args, loaded, info))
            return 0
        out_dir = args.output_dir or run_dir / "generated"
        handler = {"generate": _generate, "interpolate": _interpolate,
                   "style_mix": _style_mix, "nearest": _nearest}[action]
        _emit(args, *handler(args, out_dir, loaded, info))
        return 0

    return run_cli(build_parser(), run, argv)
