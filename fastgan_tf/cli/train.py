"""`python train.py`: parse the command line, resolve the configuration, call the trainer."""

from __future__ import annotations

import argparse
from pathlib import Path

from fastgan_tf.cli.common import ArgumentParser, deterministic_tensorflow, run_cli


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="train.py",
        description="Train FastGAN on a folder of images. Re-running the same command resumes.",
        argument_default=argparse.SUPPRESS)  # only flags the user typed override the YAML file
    p.add_argument("--dataset", help="folder of images, a .zip, a known name (obama, ...) or 'demo'")
    p.add_argument("--epochs", type=int, help="total epochs (passes over the images); default 100")
    p.add_argument("--resolution", type=int, help="64, 128, 256 (default), 512 or 1024")
    p.add_argument("--channels", type=int,
                   help="3 (RGB, default) or 1 (greyscale: images converted to luma)")
    p.add_argument("--crop", choices=("none", "center"),
                   help="non-square images: none (default) squashes them to a square, center "
                        "crops the long side")
    p.add_argument("--background", help="colour under transparent pixels: white (default), "
                                        "black, #RRGGBB or R,G,B")
    p.add_argument("--batch-size", type=int, help="images per step; default 8")
    p.add_argument("--config", type=Path, default=None, help="YAML file of settings; flags win")
    p.add_argument("--run-name", help="run folder name under --out; default DATASET-RESOLUTION")
    p.add_argument("--out", help="folder holding runs; default checkpoints/")
    p.add_argument("--data-dir", help="cache folder for named datasets (default: $FASTGAN_DATA)")
    p.add_argument("--seed", type=int, help="random seed; default 0")
    p.add_argument("--deterministic", action="store_true",
                   help="bit-for-bit reproducible kernels (slower on GPU)")
    p.add_argument("--recon-loss", choices=("lpips", "l1", "mse"),
                   help="decoder reconstruction loss; default lpips (needs Keras VGG16 weights)")
    p.add_argument("--vgg-weights", help="path to vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5")
    p.add_argument("--augment", help="DiffAugment policy; default color,translation ('' for none)")
    p.add_argument("--mixed-precision", choices=("auto", "on", "off"),
                   help="float16 compute; auto = on for CUDA GPUs of compute capability >= 7.0")
    p.add_argument("--xla", action="store_true", help="compile the training step with XLA")
    p.add_argument("--accumulate", type=int,
                   help="split each batch into N micro-batches (same update, ~1/N of the "
                        "activation memory, slower); default 1")
    p.add_argument("--strategy", choices=("auto", "one", "mirrored", "multiworker"),
                   help="devices: one, mirrored (all GPUs of this machine), multiworker "
                        "(machines listed in TF_CONFIG); auto (default) picks one of them")
    p.add_argument("--model", choices=("fastgan", "ssd"),
                   help="fastgan (default) or ssd, the Spectral Style-DCGAN 64x64 baseline")
    p.add_argument("--no-sle", dest="sle", action="store_false",
                   help="ablation: no skip-layer excitation in the generator")
    p.add_argument("--no-decoders", dest="decoders", action="store_false",
                   help="ablation: no self-supervised decoders in the discriminator")
    p.add_argument("--ngf", type=int, help="generator width; default 64")
    p.add_argument("--ndf", type=int, help="discriminator width; default 64")
    p.add_argument("--nz", type=int, help="latent size; default 256")
    p.add_argument("--output-tanh", type=_bool,
                   help="tanh on G's outputs (true/false); default: only at 1024, as the reference")
    p.add_argument("--lr", type=float, help="Adam learning rate for G and D; default 2e-4")
    p.add_argument("--sample-every", type=int, help="epochs between sample grids; default 10")
    p.add_argument("--checkpoint-every", type=int, help="epochs between checkpoints; default 10")
    p.add_argument("--keep-checkpoints", type=int, help="checkpoints kept; default 2")
    p.add_argument("--log-every", type=int, help="steps between metrics.jsonl lines; default 10")
    p.add_argument("--max-nan-retries", type=int,
                   help="rollbacks to the last good checkpoint after a NaN/Inf before training "
                        "stops; default 3")
    p.add_argument("--fid-every", type=int,
                   help="epochs between FID/KID of the EMA generator (best kept in best/); 0 = off; "
                        "default 50")
    p.add_argument("--fid-samples", type=int, help="generated samples per FID; default 1000")
    p.add_argument("--fid-backbone", choices=("keras", "standard"),
                   help="keras InceptionV3 (default) or the standard 2015 Inception of the papers")
    p.add_argument("--inception-weights", help="weights file for the FID backbone (offline use)")
    p.add_argument("--fresh", action="store_true",
                   help="start over: the existing run folder is renamed aside, not deleted")
    p.add_argument("--dry-run", action="store_true",
                   help="validate dataset and config, print JSON, train nothing")
    return p


def main(argv: list[str] | None = None) -> int:
    def run(args: argparse.Namespace) -> int:
        from fastgan_tf import config

        if getattr(args, "deterministic", False) or (
                args.config and config.load_yaml(args.config).get("deterministic")):
            deterministic_tensorflow()  # before TensorFlow is imported
        from fastgan_tf.training import train
        from fastgan_tf.training.dataset import PRESETS, model_presets

        options = vars(args)
        config_file = options.pop("config", None)
        fresh = options.pop("fresh", False)
        dry_run = options.pop("dry_run", False)
        cfg = config.resolve(options, config_file=config_file, presets=PRESETS,
                             model_presets=model_presets())
        return train(cfg, fresh=fresh, dry_run=dry_run)

    return run_cli(build_parser(), run, argv)
