"""Which networks and training state a configuration asks for: FastGAN (with its ablations) or SSD."""

from __future__ import annotations

from fastgan_tf.config import TrainConfig


def needs_vgg(cfg: TrainConfig) -> bool:
    """Only FastGAN's decoders with the LPIPS loss need the VGG16 weights."""
    return cfg.model == "fastgan" and cfg.decoders and cfg.recon_loss == "lpips"


def make_gan(cfg: TrainConfig, mixed: bool = False, strategy=None):
    """The training state (models, optimizers, RNG, counters, compiled step) for `cfg`."""
    if cfg.model == "ssd":
        from fastgan_tf.errors import UserError
        from fastgan_tf.training.ssd import SSDGAN

        if (strategy is not None and strategy.num_replicas_in_sync > 1) or cfg.accumulate > 1:
            raise UserError("--model ssd trains on one device without accumulation; use "
                            "--strategy one and --accumulate 1, or --model fastgan")
        return SSDGAN(cfg, mixed=mixed)
    from fastgan_tf.losses import reconstruction_loss
    from fastgan_tf.training.fastgan import FastGAN

    recon = reconstruction_loss(cfg.recon_loss, vgg_weights=cfg.vgg_weights or "imagenet") \
        if cfg.decoders else None
    return FastGAN(cfg, recon, mixed=mixed, strategy=strategy)


def build_generator(cfg: TrainConfig, name: str = "generator"):
    """A built generator of the configured model (for restoring EMA weights or counting)."""
    if cfg.model == "ssd":
        from fastgan_tf.training.ssd import build_ssd_generator

        return build_ssd_generator(cfg, name=name)
    from fastgan_tf.training.fastgan import build_generator as build_fastgan_generator

    return build_fastgan_generator(cfg, name=name)


def build_discriminator(cfg: TrainConfig):
    if cfg.model == "ssd":
        from fastgan_tf.training.ssd import build_ssd_discriminator

        return build_ssd_discriminator(cfg)
    from fastgan_tf.training.fastgan import build_discriminator as build_fastgan_discriminator

    return build_fastgan_discriminator(cfg)
