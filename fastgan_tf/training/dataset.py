"""From the user's `--dataset` string to a uint8 image array: demo, named set, zip or folder."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from fastgan_tf import paths
from fastgan_tf.config import TrainConfig, parse_background
from fastgan_tf.data import fingerprint, load_images
from fastgan_tf.data.demo import make_demo_images
from fastgan_tf.data.images import legacy_fingerprint

DEMO = "demo"


@dataclass
class TrainingImages:
    """The decoded training set and what the run needs to know about it."""

    images: np.ndarray  # uint8 (N, R, R, channels)
    name: str  # short name used for the default run folder
    fingerprint: str  # changes when the files or the decoding settings change
    summary: dict = field(default_factory=dict)  # JSON-friendly: counts and what was skipped
    earlier_fingerprints: tuple[str, ...] = ()  # what older versions called these images


def load_training_images(cfg: TrainConfig, progress: bool = True) -> TrainingImages:
    """Resolve and decode `cfg.dataset` once (decoded images are cached on disk)."""
    if cfg.dataset == DEMO:
        images = make_demo_images(resolution=cfg.resolution, seed=0)
        key = f"demo-{cfg.resolution}-{len(images)}"
        if cfg.channels == 1:
            images, key = luma(images), f"{key}-grey"
        summary = {"root": DEMO, "images": len(images), "skipped": 0, "skipped_examples": []}
        return TrainingImages(images, DEMO, key, summary)

    from fastgan_tf.data.resolve import resolve_dataset

    data_dir = Path(cfg.data_dir) if cfg.data_dir else None
    resolved = resolve_dataset(cfg.dataset, data_dir=data_dir, progress=progress)
    image_set = load_images(resolved.root, cfg.resolution, parse_background(cfg.background),
                            cfg.crop, cache_dir=paths.cache_dir() / "decoded", progress=progress,
                            channels=cfg.channels)
    params = dict(resolution=cfg.resolution, **decode_settings(cfg))
    key = fingerprint(image_set.files, root=resolved.root, **params)
    old = legacy_fingerprint(image_set.files, root=resolved.root, **params)
    return TrainingImages(np.asarray(image_set.images), resolved.name, key, image_set.summary(),
                          (old,))


def decode_settings(cfg: TrainConfig) -> dict:
    """The decoding settings that differ from the defaults, for the dataset fingerprint.

    Defaults are left out so that runs (and FID statistics) made before these options existed
    keep their fingerprint; any other value gives another fingerprint, hence other caches.
    """
    def settings(c: TrainConfig) -> dict:
        return {"channels": c.channels, "crop": c.crop,
                "background": list(parse_background(c.background))}

    ours, defaults = settings(cfg), settings(TrainConfig())
    return {k: v for k, v in ours.items() if v != defaults[k]}


def luma(images: np.ndarray) -> np.ndarray:
    """uint8 RGB (N, H, W, 3) -> (N, H, W, 1), converted by Pillow as the file loader does."""
    return np.stack([np.asarray(Image.fromarray(im).convert("L")) for im in images])[..., None]
