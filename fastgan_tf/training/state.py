"""What every GAN of a run checkpoints besides its networks: counters, the RNG, the fixed noise.

`FastGAN` and `SSDGAN` share this, so the trainer, checkpoints and resume treat them alike.
"""

from __future__ import annotations

import tensorflow as tf

NUM_FIXED_SAMPLES = 16  # latents of the sample grids, the same for the whole run


class RunState:
    """Base of the GAN classes: `cfg`, `generator`, `discriminator`, `generator_ema`, `g_opt` and
    `d_opt` are set by the subclass; `_create_run_state` adds the rest."""

    def _create_run_state(self, cfg) -> None:
        self.rng = tf.random.Generator.from_seed(cfg.seed)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.batch_in_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="batch_in_epoch")
        self.fixed_z = tf.Variable(
            tf.random.stateless_normal([NUM_FIXED_SAMPLES, cfg.nz], seed=[cfg.seed, 7]),
            trainable=False, name="fixed_z")

    def trackables(self) -> dict:
        """The objects a checkpoint stores; attribute names are the checkpoint keys."""
        return dict(generator=self.generator, discriminator=self.discriminator,
                    generator_ema=self.generator_ema, g_opt=self.g_opt, d_opt=self.d_opt,
                    rng=self.rng, step=self.step, epoch=self.epoch,
                    batch_in_epoch=self.batch_in_epoch, fixed_z=self.fixed_z)

    def _update_ema(self) -> None:
        """EMA of G's trainable weights; the rest (SN vectors, BN and noise state) copied."""
        decay = self.cfg.ema_decay
        for ema, live in zip(self.generator_ema.trainable_variables,
                             self.generator.trainable_variables):
            ema.assign(decay * ema + (1.0 - decay) * live)
        for ema, live in zip(self.generator_ema.non_trainable_variables,
                             self.generator.non_trainable_variables):
            ema.assign(live)


def copy_weights(target, source) -> None:
    """Start the EMA generator as an exact copy of the live one."""
    for t, s in zip(target.variables, source.variables):
        assert t.shape == s.shape, (t.path, s.path)
        t.assign(s)
