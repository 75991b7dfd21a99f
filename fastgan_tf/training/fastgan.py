"""FastGAN's training state and its compiled training step: the one place training logic lives.

One iteration follows the reference implementation exactly (see docs in the README):

1. z ~ N(0, I); G(z) gives the full-resolution image and the small side output.
2. DiffAugment on the real batch and, with independent draws, on each fake output.
3. D step: random-margin hinge on real and on detached fakes (separate forward passes, so
   separate BatchNorm statistics) plus the three decoders' reconstruction losses summed over
   the batch; one Adam step.
4. G step: -mean(D(fakes)) with the *updated* D on the *same* augmented fakes; one Adam step.
5. EMA of G's trainable weights (decay 0.999); its buffers (BN statistics, SN vectors, noise
   seeds) are copied from G, as the reference's parameter-swapping EMA leaves them.

All randomness (z, augmentation, hinge margins, the decoded quadrant) comes from one
`tf.random.Generator` and the noise layers' seed variables, all of which are checkpointed, so a
resumed run replays the same numbers.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from fastgan_tf import losses
from fastgan_tf.augment import diff_augment
from fastgan_tf.config import TrainConfig
from fastgan_tf.imageops import nearest_resize, quadrant
from fastgan_tf.models import Discriminator, Generator

NUM_FIXED_SAMPLES = 16


def build_generator(cfg: TrainConfig, name: str = "generator") -> Generator:
    """A generator for `cfg`, called once so its variables exist (needed before restoring)."""
    g = Generator(cfg.resolution, ngf=cfg.ngf, nz=cfg.nz, output_tanh=cfg.output_tanh,
                  seed=cfg.seed, name=name)
    g(tf.zeros([2, cfg.nz]), training=False)
    return g


def build_discriminator(cfg: TrainConfig) -> Discriminator:
    """A discriminator for `cfg`, called once on real-style input with decoders."""
    d = Discriminator(cfg.resolution, ndf=cfg.ndf)
    d(tf.zeros([2, cfg.resolution, cfg.resolution, 3]), part=0, training=False)
    return d


def _optimizer(cfg: TrainConfig, mixed: bool) -> keras.optimizers.Optimizer:
    adam = keras.optimizers.Adam(cfg.lr, beta_1=cfg.beta1, beta_2=cfg.beta2, epsilon=1e-8)
    return keras.optimizers.LossScaleOptimizer(adam) if mixed else adam


class FastGAN:
    """G, D (with decoders), EMA G, both optimizers, counters and RNG: everything a checkpoint holds."""

    def __init__(self, cfg: TrainConfig, recon_fn, mixed: bool = False):
        self.cfg = cfg
        self.recon_fn = recon_fn
        self.generator = build_generator(cfg)
        self.discriminator = build_discriminator(cfg)
        self.generator_ema = build_generator(cfg, name="generator_ema")
        for ema, live in zip(self.generator_ema.variables, self.generator.variables):
            assert ema.shape == live.shape, (ema.path, live.path)
            ema.assign(live)
        self.g_opt = _optimizer(cfg, mixed)
        self.d_opt = _optimizer(cfg, mixed)
        self.g_opt.build(self.generator.trainable_variables)
        self.d_opt.build(self.discriminator.trainable_variables)
        self.rng = tf.random.Generator.from_seed(cfg.seed)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.batch_in_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="batch_in_epoch")
        self.fixed_z = tf.Variable(
            tf.random.stateless_normal([NUM_FIXED_SAMPLES, cfg.nz], seed=[cfg.seed, 7]),
            trainable=False, name="fixed_z")
        self.train_step = tf.function(self._train_step, jit_compile=cfg.xla)

    def trackables(self) -> dict:
        """The objects a checkpoint stores; attribute names are the checkpoint keys."""
        return dict(generator=self.generator, discriminator=self.discriminator,
                    generator_ema=self.generator_ema, g_opt=self.g_opt, d_opt=self.d_opt,
                    rng=self.rng, step=self.step, epoch=self.epoch,
                    batch_in_epoch=self.batch_in_epoch, fixed_z=self.fixed_z)

    # ----------------------------------------------------------------------------- training
    def _augment(self, images):
        return diff_augment(images, self.cfg.augment, self.rng)

    def _train_step(self, real):
        batch = tf.shape(real)[0]
        z = self.rng.normal([batch, self.cfg.nz])
        part = self.rng.uniform([], minval=0, maxval=4, dtype=tf.int32)
        with tf.GradientTape() as g_tape:
            fake_big, fake_small = self.generator(z, training=True)
            fakes = [self._augment(fake_big), self._augment(fake_small)]
            with g_tape.stop_recording():
                d_stats = self._d_step(real, [tf.stop_gradient(f) for f in fakes], part)
            g_loss = losses.g_adversarial(self.discriminator(fakes, training=True))
            scaled = self.g_opt.scale_loss(g_loss)
        g_vars = self.generator.trainable_variables
        self.g_opt.apply(g_tape.gradient(scaled, g_vars), g_vars)
        self._update_ema()
        self.step.assign_add(1)
        self.batch_in_epoch.assign_add(1)
        return dict(d_stats, g_loss=g_loss)

    def _d_step(self, real, fakes, part):
        d = self.discriminator
        with tf.GradientTape() as tape:
            real_aug = self._augment(real)
            logits_real, recs = d(real_aug, part=part, training=True)
            d_real = losses.d_hinge_real(logits_real, self.rng)
            recon = self._reconstruction(real_aug, recs, part)
            d_fake = losses.d_hinge_fake(d(fakes, training=True), self.rng)
            d_loss = d_real + d_fake + recon
            scaled = self.d_opt.scale_loss(d_loss)
        self.d_opt.apply(tape.gradient(scaled, d.trainable_variables), d.trainable_variables)
        return dict(d_loss=d_loss, d_real=d_real, d_fake=d_fake, recon=recon,
                    logits_real=tf.reduce_mean(tf.cast(logits_real, tf.float32)))

    def _reconstruction(self, real_aug, recs, part):
        """Sum over the batch of the three decoders' losses, as the reference codes it."""
        rec_big, rec_small, rec_part = recs
        size = rec_big.shape[1]
        whole = nearest_resize(real_aug, size)
        piece = nearest_resize(quadrant(real_aug, part), size)
        return (tf.reduce_sum(self.recon_fn(rec_big, whole))
                + tf.reduce_sum(self.recon_fn(rec_small, whole))
                + tf.reduce_sum(self.recon_fn(rec_part, piece)))

    def _update_ema(self):
        decay = self.cfg.ema_decay
        for ema, live in zip(self.generator_ema.trainable_variables,
                             self.generator.trainable_variables):
            ema.assign(decay * ema + (1.0 - decay) * live)
        for ema, live in zip(self.generator_ema.non_trainable_variables,
                             self.generator.non_trainable_variables):
            ema.assign(live)

    # ----------------------------------------------------------------------------- sampling
    def sample(self, z=None, noise_seed=(0, 0)):
        """EMA-generator images for `z` (default: the fixed sample noise) without touching state."""
        z = self.fixed_z if z is None else z
        big, _ = self.generator_ema(z, training=False, noise_seed=tf.constant(noise_seed, tf.int64))
        return big

    def reconstruct(self, real, part: int = 0):
        """The decoders' reconstructions of a real batch (for progress grids), state untouched."""
        _, (rec_big, rec_small, rec_part) = self.discriminator(real, part=part, training=False)
        size = rec_big.shape[1]
        return [nearest_resize(real, size), rec_big, rec_small, rec_part,
                nearest_resize(quadrant(real, tf.constant(part)), size)]
