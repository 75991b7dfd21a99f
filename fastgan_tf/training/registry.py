"""The models a run can train, in the manner of stylegan2-ada's metric registry.

Each model lives in one module that defines `SPEC`, a `ModelSpec`; this file maps the names
`--model` accepts to those modules, which are imported only when used (this file imports no
TensorFlow, so the command line can list the choices before TensorFlow starts). Adding a model is
one new module and one line in `MODELS`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

MODELS = {
    "fastgan": "fastgan_tf.training.fastgan",
    "ssd": "fastgan_tf.training.ssd",
}


class GAN(Protocol):
    """What the training loop, checkpoints, FID tracking and evaluation use of a model's state."""

    cfg: Any
    generator: Any  # keras.Model: z -> [image, ...]
    discriminator: Any
    generator_ema: Any  # the generator that samples, FID and exports use
    g_opt: Any
    d_opt: Any
    rng: Any  # tf.random.Generator: every random draw of training
    step: Any  # tf.Variable int64 counters
    epoch: Any
    batch_in_epoch: Any
    fixed_z: Any  # the latents of the sample grids

    def trackables(self) -> dict:
        """The objects a checkpoint stores, by checkpoint key."""

    def train_on_batch(self, real) -> dict:
        """One optimisation step on a batch of real images in [-1, 1]; its losses (tensors)."""

    def sample(self, z=None, noise_seed=(0, 0)):
        """EMA-generator images for `z` (default `fixed_z`), changing no state."""

    def reconstruct(self, real, part: int = 0) -> list | None:
        """Columns of a reconstruction grid for `real`, or None when the model has none."""


@dataclass(frozen=True)
class ModelSpec:
    """Everything the rest of the package needs to know about one model."""

    name: str
    make_gan: Callable[..., GAN]  # (cfg, mixed=False, strategy=None) -> the training state
    build_generator: Callable  # (cfg, name="generator") -> a built generator, for restoring
    build_discriminator: Callable  # (cfg) -> a built discriminator, for counting parameters
    presets: dict = field(default_factory=dict)  # settings the model brings (YAML and flags win)
    check: Callable = lambda cfg: None  # raises UserError for options the model does not have
    needs_vgg: Callable = lambda cfg: False  # whether training needs the VGG16 weights (LPIPS)
    memory_estimate: Callable | None = None  # (cfg, micro_batch, precision) -> dict: --dry-run


def get(name: str) -> ModelSpec:
    """The spec of model `name` (one of `MODELS`)."""
    if name not in MODELS:
        from fastgan_tf.errors import UserError

        raise UserError(f"--model {name!r} is not supported; choose one of {', '.join(MODELS)}")
    return importlib.import_module(MODELS[name]).SPEC
