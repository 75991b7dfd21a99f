"""Training state and step for the Spectral Style-DCGAN baseline (`--model ssd`).

Same interface as `FastGAN` (registry.GAN), so the trainer, checkpoints, resume, FID tracking and
evaluate.py work unchanged. The step is the paper's: binary cross-entropy, one D step then one G
step on the same fakes with the updated D. DiffAugment follows `--augment` like FastGAN, so
comparisons are like for like (pass `--augment ''` for none). The paper keeps no EMA generator:
SSD's preset sets `ema_decay: 0`, which makes the "EMA" generator an exact copy of the live one.
"""

from __future__ import annotations

import tensorflow as tf

from fastgan_tf.augment import diff_augment
from fastgan_tf.config import TrainConfig
from fastgan_tf.errors import UserError
from fastgan_tf.models.ssd import (
    SSD_DEFAULTS,
    SSDDiscriminator,
    SSDGenerator,
    bce_d_loss,
    bce_g_loss,
)
from fastgan_tf.training.registry import ModelSpec
from fastgan_tf.training.state import (
    RunState,
    copy_weights,
    fake_logit_stats,
    make_optimizer,
    real_logit_stats,
)


class SSDGAN(RunState):
    """G, D, EMA G, optimizers, counters and RNG of an SSD run."""

    def __init__(self, cfg: TrainConfig, mixed: bool = False):
        self.cfg = cfg
        self.generator = build_generator(cfg)
        self.discriminator = build_discriminator(cfg)
        self.generator_ema = build_generator(cfg, name="generator_ema")
        copy_weights(self.generator_ema, self.generator)
        self.g_opt = make_optimizer(cfg, mixed, self.generator)
        self.d_opt = make_optimizer(cfg, mixed, self.discriminator)
        self._create_run_state(cfg)
        self._compiled = tf.function(self.train_step, jit_compile=cfg.xla)

    def train_on_batch(self, real) -> dict:
        """One optimisation step on `real` (B, 64, 64, channels) in [-1, 1]; its losses."""
        return self._compiled(real)

    def train_step(self, real) -> dict:
        """One D step, then one G step on the same fakes with the updated D, then the EMA."""
        d, g = self.discriminator, self.generator
        z = self.rng.normal([tf.shape(real)[0], self.cfg.nz])
        with tf.GradientTape() as g_tape:
            fake = self._augment(g(z, training=True)[0])
            with g_tape.stop_recording():
                with tf.GradientTape() as d_tape:
                    real_logits = d(self._augment(real), training=True)
                    fake_logits = d(tf.stop_gradient(fake), training=True)
                    d_loss = bce_d_loss(real_logits, fake_logits)
                    d_scaled = self.d_opt.scale_loss(d_loss)
                self.d_opt.apply(d_tape.gradient(d_scaled, d.trainable_variables),
                                 d.trainable_variables)
            g_loss = bce_g_loss(d(fake, training=True))
            g_scaled = self.g_opt.scale_loss(g_loss)
        self.g_opt.apply(g_tape.gradient(g_scaled, g.trainable_variables), g.trainable_variables)
        self.update_ema()
        self.count_step()
        return dict(d_loss=d_loss, g_loss=g_loss, **real_logit_stats(real_logits),
                    **fake_logit_stats(fake_logits))

    def _augment(self, images):
        return diff_augment(images, self.cfg.augment, self.rng)

    def sample(self, z=None, noise_seed=(0, 0)):
        z = self.fixed_z if z is None else z
        return self.generator_ema(z, training=False)[0]

    def reconstruct(self, real, part: int = 0):
        """SSD's discriminator has no decoders: nothing to show."""
        return None


def build_generator(cfg: TrainConfig, name: str = "generator") -> SSDGenerator:
    return SSDGenerator(nz=cfg.nz, ngf=cfg.ngf, name=name,
                        channels=cfg.channels).build_for_restore()


def build_discriminator(cfg: TrainConfig) -> SSDDiscriminator:
    return SSDDiscriminator(ndf=cfg.ndf).build_for_restore(resolution=cfg.resolution,
                                                           channels=cfg.channels)


def check(cfg: TrainConfig) -> None:
    """The SSD baseline is a fixed 64x64 DCGAN on one device: options only FastGAN has are errors."""
    if cfg.resolution != 64:
        raise UserError(f"--model ssd generates 64x64 images; drop --resolution {cfg.resolution} "
                        "or use --model fastgan")
    for name, value in (("--no-sle", not cfg.sle), ("--no-decoders", not cfg.decoders),
                        ("--output-tanh", cfg.output_tanh is not None)):
        if value:
            raise UserError(f"{name} applies to --model fastgan only; the SSD baseline has no "
                            "such part")
    if cfg.accumulate > 1:
        raise UserError("--model ssd trains without accumulation; use --accumulate 1, or "
                        "--model fastgan")


def make_ssd(cfg: TrainConfig, mixed: bool = False, strategy=None) -> SSDGAN:
    if strategy is not None and strategy.num_replicas_in_sync > 1:
        raise UserError("--model ssd trains on one device; use --strategy one, or --model fastgan")
    return SSDGAN(cfg, mixed=mixed)


SPEC = ModelSpec(
    name="ssd",
    make_gan=make_ssd,
    build_generator=build_generator,
    build_discriminator=build_discriminator,
    presets={**SSD_DEFAULTS, "ema_decay": 0.0},  # the paper's values; no EMA (decay 0 copies G)
    check=check,
)
