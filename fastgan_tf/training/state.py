"""What every GAN of a run has besides its networks: counters, the RNG, the fixed noise, the EMA
update and the optimizers.

`FastGAN` and `SSDGAN` share this, so the trainer, checkpoints and resume treat them alike.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from fastgan_tf.optimizers import TorchAdam

EMA_KEY = "generator_ema"  # the checkpoint key of the EMA generator, in training and best/
NUM_FIXED_SAMPLES = 16  # latents of the sample grids, the same for the whole run
ADAM_EPSILON = 1e-8  # PyTorch's default, which the reference and the SSD paper train with


def make_optimizer(cfg, mixed: bool, model) -> keras.optimizers.Optimizer:
    """PyTorch's Adam(lr, beta1, beta2) for `model`'s trainable weights, built (its slots exist,
    so a checkpoint can be restored into it); with float16 loss scaling when `mixed`.

    `TorchAdam`, not Keras's Adam, whose epsilon means something else (see optimizers.py); its
    variables are Keras Adam's, so checkpoints of earlier versions restore into it."""
    adam = TorchAdam(cfg.lr, beta_1=cfg.beta1, beta_2=cfg.beta2, epsilon=ADAM_EPSILON)
    optimizer = keras.optimizers.LossScaleOptimizer(adam) if mixed else adam
    optimizer.build(model.trainable_variables)
    return optimizer


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
        self.train_seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False,
                                         name="train_seconds")  # time trained, all invocations

    def trackables(self) -> dict:
        """The objects a checkpoint stores; attribute names are the checkpoint keys."""
        return {"generator": self.generator, "discriminator": self.discriminator,
                EMA_KEY: self.generator_ema, "g_opt": self.g_opt, "d_opt": self.d_opt,
                "rng": self.rng, "step": self.step, "epoch": self.epoch,
                "batch_in_epoch": self.batch_in_epoch, "fixed_z": self.fixed_z,
                "train_seconds": self.train_seconds}

    def update_ema(self) -> None:
        """EMA of G's trainable weights; the rest (SN vectors, BN and noise state) copied.

        Called from a replica (inside `strategy.run`), it runs once for all of them.
        """
        context = tf.distribute.get_replica_context()
        if context is None:  # already in cross-replica context
            self._update_ema_once()
        else:
            context.merge_call(lambda _: self._update_ema_once())

    def _update_ema_once(self) -> None:
        decay = self.cfg.ema_decay
        for ema, live in zip(self.generator_ema.trainable_variables,
                             self.generator.trainable_variables):
            ema.assign(decay * ema + (1.0 - decay) * live)
        for ema, live in zip(self.generator_ema.non_trainable_variables,
                             self.generator.non_trainable_variables):
            ema.assign(live)

    def count_step(self) -> None:
        """One more optimisation step, and one more batch of this epoch."""
        self.step.assign_add(1)
        self.batch_in_epoch.assign_add(1)


def real_logit_stats(logits, weight=1.0) -> dict:
    """What D's real logits say about its health (training/health.py), as `weight` x the mean:
    the mean logit, r_t = E[sign], and the share of real images D calls real."""
    logits = tf.cast(logits, tf.float32)
    return {"logits_real": weight * tf.reduce_mean(logits),
            "r_t": weight * tf.reduce_mean(tf.sign(logits)),
            "d_acc_real": weight * tf.reduce_mean(tf.cast(logits > 0, tf.float32))}


def fake_logit_stats(logits, weight=1.0) -> dict:
    """The share of fakes D calls fake, as `weight` x the mean."""
    logits = tf.cast(logits, tf.float32)
    return {"d_acc_fake": weight * tf.reduce_mean(tf.cast(logits < 0, tf.float32))}


def copy_weights(target, source) -> None:
    """Start the EMA generator as an exact copy of the live one."""
    for t, s in zip(target.variables, source.variables):
        assert t.shape == s.shape, (t.path, s.path)
        t.assign(s)
