"""Training state and step for the Spectral Style-DCGAN baseline (`--model ssd`).

Same interface as `FastGAN` (checkpoint trackables, counters, RNG, fixed noise, EMA generator,
`train_step`, `sample`), so the trainer, checkpoints, resume, FID tracking and evaluate.py work
unchanged. The step is the paper's: binary cross-entropy, one D step then one G step on the same
fakes with the updated D. DiffAugment follows `--augment` like FastGAN, so comparisons are like
for like (pass `--augment ''` for none). The paper keeps no EMA generator: SSD's preset sets
`ema_decay: 0`, which makes the "EMA" generator an exact copy of the live one.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from fastgan_tf.augment import diff_augment
from fastgan_tf.config import TrainConfig
from fastgan_tf.models.ssd import SSDDiscriminator, SSDGenerator, bce_d_loss, bce_g_loss
from fastgan_tf.training.state import RunState, copy_weights


def build_ssd_generator(cfg: TrainConfig, name: str = "generator") -> SSDGenerator:
    return SSDGenerator(nz=cfg.nz, ngf=cfg.ngf, name=name,
                        channels=cfg.channels).build_for_restore()


def build_ssd_discriminator(cfg: TrainConfig) -> SSDDiscriminator:
    return SSDDiscriminator(ndf=cfg.ndf).build_for_restore(resolution=cfg.resolution,
                                                           channels=cfg.channels)


class SSDGAN(RunState):
    """G, D, EMA G, optimizers, counters and RNG of an SSD run."""

    def __init__(self, cfg: TrainConfig, mixed: bool = False):
        self.cfg = cfg
        self.generator = build_ssd_generator(cfg)
        self.discriminator = build_ssd_discriminator(cfg)
        self.generator_ema = build_ssd_generator(cfg, name="generator_ema")
        copy_weights(self.generator_ema, self.generator)
        self.g_opt, self.d_opt = self._optimizer(mixed), self._optimizer(mixed)
        self.g_opt.build(self.generator.trainable_variables)
        self.d_opt.build(self.discriminator.trainable_variables)
        self._create_run_state(cfg)
        self.train_step = tf.function(self._train_step, jit_compile=cfg.xla)

    def _optimizer(self, mixed: bool):
        adam = keras.optimizers.Adam(self.cfg.lr, beta_1=self.cfg.beta1, beta_2=self.cfg.beta2)
        return keras.optimizers.LossScaleOptimizer(adam) if mixed else adam

    def _augment(self, images):
        return diff_augment(images, self.cfg.augment, self.rng)

    def _train_step(self, real):
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
        self._update_ema()
        self.step.assign_add(1)
        self.batch_in_epoch.assign_add(1)
        return dict(d_loss=d_loss, g_loss=g_loss,
                    logits_real=tf.reduce_mean(real_logits))

    def sample(self, z=None, noise_seed=(0, 0)):
        z = self.fixed_z if z is None else z
        return self.generator_ema(z, training=False)[0]

    def reconstruct(self, real, part: int = 0):
        """SSD's discriminator has no decoders: nothing to show."""
        return None
