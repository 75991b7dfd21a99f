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

Scale without changing the update. The global batch (`batch_size`) is cut into *shards*: one per
replica (tf.distribute) times `accumulate` micro-batches per replica. Each shard computes its
share of the global losses (hinge means weighted by shard/global batch size, reconstruction sums
as they are) and the gradients are summed: over micro-batches here, over replicas by the
optimizer's all-reduce. So D and G take one step per global batch, the EMA and the counters move
once per step, and only BatchNorm sees smaller batches (synchronised across replicas, per
micro-batch under accumulation).

Randomness is drawn per global step, never per shard: one key from the checkpointed
`tf.random.Generator`, from which every draw (z, augmentation, margins, the decoded quadrant, G's
noise) is made for the whole global batch; each shard keeps its rows (`StepRandom`). A sample
gets the same z, augmentation and margins on 1 device x 8, 2 replicas x 4 or 2 micro-batches x 4.
(G's per-pixel noise is the exception: it is drawn per shard, see `_noise_seed`.)

Memory: the D step's real and fake passes are differentiated one after the other (the reference
calls backward twice, too), so their activations are never alive together. With accumulation, G
runs twice per micro-batch (a pure forward for the D step, then the taped one for the G step),
which trades ~20% more time for activations of one micro-batch instead of the whole batch.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from fastgan_tf import losses
from fastgan_tf.augment import diff_augment
from fastgan_tf.config import TrainConfig
from fastgan_tf.errors import UserError
from fastgan_tf.imageops import nearest_resize, quadrant
from fastgan_tf.models import Discriminator, Generator
from fastgan_tf.training.distribute import check_batch_split
from fastgan_tf.training.memory import release_freed_host_memory
from fastgan_tf.training.state import RunState, copy_weights

# Random streams of one step: each gets its own key, so the draws do not depend on call order.
Z, PART, AUG_REAL, AUG_FAKE_BIG, AUG_FAKE_SMALL, MARGIN_REAL, MARGIN_FAKE, NOISE = range(1, 9)


def build_generator(cfg: TrainConfig, name: str = "generator", sync_bn: bool = False) -> Generator:
    """A generator for `cfg`, called once so its variables exist (needed before restoring)."""
    return Generator(cfg.resolution, ngf=cfg.ngf, nz=cfg.nz, output_tanh=cfg.output_tanh,
                     sle=cfg.sle, seed=cfg.seed, sync_bn=sync_bn, name=name,
                     channels=cfg.channels).build_for_restore()


def build_discriminator(cfg: TrainConfig, sync_bn: bool = False) -> Discriminator:
    """A discriminator for `cfg`, called once on real-style input (decoders included)."""
    d = Discriminator(cfg.resolution, ndf=cfg.ndf, decoders=cfg.decoders, sync_bn=sync_bn,
                      channels=cfg.channels)
    return d.build_for_restore()


def _optimizer(cfg: TrainConfig, mixed: bool) -> keras.optimizers.Optimizer:
    adam = keras.optimizers.Adam(cfg.lr, beta_1=cfg.beta1, beta_2=cfg.beta2, epsilon=1e-8)
    return keras.optimizers.LossScaleOptimizer(adam) if mixed else adam


class StepRandom:
    """The random numbers of one stream of one step, for the global batch; one shard's rows.

    Quacks like the `tf.random.Generator` methods that DiffAugment and the losses call. A draw of
    shape (n, ...) is made as (shards * n, ...) from a stateless seed and shard `index` keeps
    rows [index * n, (index + 1) * n): the rows of its samples when samples are laid out shard by
    shard. Scalar draws are shared by all shards. Two objects made with the same arguments give
    the same numbers, so a pass can be replayed exactly (gradient accumulation does).

    Only Philox integer draws are used: XLA converts bits to floats (and picks its default
    algorithm) differently, and the same step with and without --xla should see the same numbers.
    Normals come from them by Box-Muller (tails cut at 5.9 sigma).
    """

    def __init__(self, key, stream: int, index=0, shards: int = 1):
        self._key = tf.random.experimental.stateless_fold_in(key, stream, alg="philox")
        self._index, self._shards, self._calls = index, shards, 0

    def _seed(self):
        self._calls += 1
        return tf.random.experimental.stateless_fold_in(self._key, self._calls, alg="philox")

    def _rows(self, draw, shape):
        shape = tf.convert_to_tensor(shape, tf.int32)
        if shape.shape.rank == 1 and shape.shape[0] == 0:
            return draw(shape)
        full = draw(tf.concat([shape[:1] * self._shards, shape[1:]], axis=0))
        return tf.gather(tf.reshape(full, tf.concat([[self._shards], shape], axis=0)), self._index)

    def _bits24(self, shape, seed):
        return tf.random.stateless_uniform(shape, seed, minval=0, maxval=2**24, dtype=tf.int32,
                                           alg="philox")

    def uniform(self, shape, minval=0, maxval=None, dtype=tf.float32):
        seed = self._seed()
        if dtype.is_integer:
            return self._rows(lambda s: tf.random.stateless_uniform(
                s, seed, minval=minval, maxval=maxval, dtype=dtype, alg="philox"), shape)
        high = 1.0 if maxval is None else maxval
        return self._rows(lambda s: minval + (high - minval) * tf.cast(
            self._bits24(s, seed), dtype) * 2.0**-24, shape)

    def normal(self, shape, dtype=tf.float32):
        seed = self._seed()

        def draw(s):
            u1 = (tf.cast(self._bits24(s, seed), tf.float32) + 0.5) * 2.0**-24  # (0, 1)
            u2 = tf.cast(self._bits24(s, tf.random.experimental.stateless_fold_in(
                seed, 1, alg="philox")), tf.float32) * 2.0**-24
            return tf.cast(tf.sqrt(-2.0 * tf.math.log(u1)) * tf.cos(6.283185307179586 * u2), dtype)

        return self._rows(draw, shape)


class Shard:
    """One shard's inputs: its real rows, its z, and its random streams."""

    def __init__(self, real, key, index, shards: int, global_batch: int, nz: int, micro: int):
        self.real, self.key, self.index, self.shards, self.micro = real, key, index, shards, micro
        self.batch = int(real.shape[0])
        self.weight = self.batch / global_batch  # this shard's share of a mean over the batch
        self.z = self.random(Z).normal([self.batch, nz])

    def random(self, stream: int) -> StepRandom:
        return StepRandom(self.key, stream, self.index, self.shards)

    def noise_seed(self):
        """G's noise seed: one per micro-batch (the layers fold in the replica themselves).

        NoiseInjection draws (batch, H, W, 1) from it, so the noise, unlike everything else, is
        not the same per sample for different shardings. Its weights start at zero.
        """
        return tf.random.experimental.stateless_fold_in(
            tf.random.experimental.stateless_fold_in(self.key, NOISE), self.micro)


def _samples_first(logits, batch: int):
    """D's flat logits [big (B*k), small (B*k)] reordered sample by sample, for the margins."""
    return tf.reshape(tf.transpose(tf.reshape(logits, [2, batch, -1]), [1, 0, 2]), [-1])


def _add(total, grads):
    if total is None:
        return list(grads)
    return [t if g is None else g if t is None else t + g for t, g in zip(total, grads)]


def _add_stats(total: dict, stats: dict) -> dict:
    return {**total, **{k: total.get(k, 0.0) + v for k, v in stats.items()}}


def _after(tensors):
    """Control dependencies that make the next pass wait (so activations are not alive twice)."""
    return tf.control_dependencies([t for t in (tensors or []) if t is not None])


class FastGAN(RunState):
    """G, D (with decoders), EMA G, both optimizers, counters and RNG: everything a checkpoint holds.

    `strategy` (default: TensorFlow's current one) places the models and optimizers; with more
    than one replica BatchNorm is synchronised. RNG, counters and fixed noise are plain variables:
    every replica and worker reads the same values, and they are updated once per step.
    """

    def __init__(self, cfg: TrainConfig, recon_fn=None, mixed: bool = False,
                 strategy: tf.distribute.Strategy | None = None):
        self.cfg = cfg
        self.recon_fn = recon_fn
        self.mixed = mixed
        self.strategy = strategy or tf.distribute.get_strategy()
        self.replicas = int(self.strategy.num_replicas_in_sync)
        self.accumulate = cfg.accumulate
        self.micro_batch = check_batch_split(cfg.batch_size, self.replicas, self.accumulate)
        if cfg.xla and self.replicas > 1:  # XLA around strategy.run is not supported by TF
            raise UserError(f"--xla compiles the step for one device, but the strategy has "
                            f"{self.replicas} replicas: drop --xla or use --strategy one")
        sync = self.replicas > 1
        with self.strategy.scope():
            self.generator = build_generator(cfg, sync_bn=sync)
            self.discriminator = build_discriminator(cfg, sync_bn=sync)
            self.generator_ema = build_generator(cfg, name="generator_ema", sync_bn=sync)
            copy_weights(self.generator_ema, self.generator)
            self.g_opt = _optimizer(cfg, mixed)
            self.d_opt = _optimizer(cfg, mixed)
            self.g_opt.build(self.generator.trainable_variables)
            self.d_opt.build(self.discriminator.trainable_variables)
        self._create_run_state(cfg)
        self._compiled_step = tf.function(self._train_step, jit_compile=cfg.xla, autograph=False)
        self._on_cpu = not tf.config.list_logical_devices("GPU")

    # ----------------------------------------------------------------------------- training
    def train_step(self, real) -> dict:
        """One optimisation step on the global batch `real` (B, R, R, channels) in [-1, 1].

        Returns the global losses as scalar tensors: d_loss = d_real + d_fake + recon, g_loss,
        and the mean real logit.
        """
        with self.strategy.scope():
            stats = self._compiled_step(real)
        if self._on_cpu:
            release_freed_host_memory()
        return stats

    def _train_step(self, real):
        key = self.rng.make_seeds(1)[:, 0]
        per_replica = self.strategy.run(self._replica_step, args=(real, key))
        stats = {k: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
                 for k, v in per_replica.items()}
        self._update_ema()
        self.step.assign_add(1)
        self.batch_in_epoch.assign_add(1)
        return stats

    def _replica_step(self, real, key):
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        count = self.replicas * self.accumulate
        grouped = tf.reshape(real, [self.replicas, self.accumulate, self.micro_batch,
                                    *real.shape[1:]])
        mine = tf.gather(grouped, replica)
        shards = [Shard(mine[m], key, replica * self.accumulate + m, count, self.cfg.batch_size,
                        self.cfg.nz, m) for m in range(self.accumulate)]
        part = StepRandom(key, PART).uniform([], minval=0, maxval=4, dtype=tf.int32)
        if self.accumulate == 1:
            return self._single_pass_step(shards[0], part)
        return self._accumulated_step(shards, part)

    def _single_pass_step(self, shard: Shard, part) -> dict:
        """The reference's order: G once (taped), the D step on its detached fakes, the G step."""
        with tf.GradientTape() as g_tape:
            fakes = self._fakes(shard, training=True)
            with g_tape.stop_recording():
                stats = self._d_step([shard], [[tf.stop_gradient(f) for f in fakes]], part)
            g_loss = shard.weight * losses.g_adversarial(self.discriminator(fakes, training=True))
            scaled = self.g_opt.scale_loss(g_loss)
        g_vars = self.generator.trainable_variables
        self._apply(self.g_opt, g_tape.gradient(scaled, g_vars), g_vars)
        return dict(stats, g_loss=g_loss)

    def _accumulated_step(self, shards: list[Shard], part) -> dict:
        """The same step over micro-batches: G is re-run (identically) for the G step.

        State updates (SN power iterations, BN moving averages) happen in the last micro-batch of
        each kind of pass only, so every micro-batch uses the sigma the whole batch would use.
        """
        fakes, previous = [], None
        for shard in shards:  # pure forwards: same noise, sigma and augmentation as below
            with _after(previous):
                fakes.append([tf.stop_gradient(f) for f in self._fakes(shard, training=False)])
            previous = fakes[-1]
        stats = self._d_step(shards, fakes, part)
        g_vars, total, g_loss = self.generator.trainable_variables, None, 0.0
        for i, shard in enumerate(shards):
            last = i == len(shards) - 1
            with _after(total), tf.GradientTape() as tape:
                fake = self._fakes(shard, training=last)
                loss = shard.weight * losses.g_adversarial(self.discriminator(fake, training=last))
                scaled = self.g_opt.scale_loss(loss)
            total = _add(total, tape.gradient(scaled, g_vars))
            g_loss += loss
        self._apply(self.g_opt, total, g_vars)
        return dict(stats, g_loss=g_loss)

    def _fakes(self, shard: Shard, training: bool):
        """G's two outputs for the shard's z, each augmented with its own (replayable) draws."""
        big, small = self.generator(shard.z, training=training, noise_seed=shard.noise_seed())
        return [self._augment(big, shard.random(AUG_FAKE_BIG)),
                self._augment(small, shard.random(AUG_FAKE_SMALL))]

    def _augment(self, images, random):
        return diff_augment(images, self.cfg.augment, random)

    def _d_step(self, shards: list[Shard], fakes: list, part) -> dict:
        """Real passes, then fake passes, one shard at a time; one optimizer step on the sum."""
        d_vars = self.discriminator.trainable_variables
        total, stats, last = None, {}, len(shards) - 1
        for i, shard in enumerate(shards):
            with _after(total):
                grads, s = self._d_real_grads(shard, part, training=i == last)
            total, stats = _add(total, grads), _add_stats(stats, s)
        for i, (shard, fake) in enumerate(zip(shards, fakes)):
            with _after(total):
                grads, s = self._d_fake_grads(shard, fake, training=i == last)
            total, stats = _add(total, grads), _add_stats(stats, s)
        self._apply(self.d_opt, total, d_vars)
        stats["d_loss"] = stats["d_real"] + stats["d_fake"] + stats["recon"]
        return stats

    def _d_real_grads(self, shard: Shard, part, training: bool):
        d = self.discriminator
        with tf.GradientTape() as tape:
            real_aug = self._augment(shard.real, shard.random(AUG_REAL))
            if d.has_decoders:
                logits, recs = d(real_aug, part=part, training=training)
                recon = self._reconstruction(real_aug, recs, part)
            else:  # the paper's "no decoders" ablation
                logits, recon = d(real_aug, training=training), tf.constant(0.0)
            d_real = shard.weight * losses.d_hinge_real(
                _samples_first(logits, shard.batch), shard.random(MARGIN_REAL))
            scaled = self.d_opt.scale_loss(d_real + recon)
        stats = dict(d_real=d_real, recon=recon,
                     logits_real=shard.weight * tf.reduce_mean(tf.cast(logits, tf.float32)))
        return tape.gradient(scaled, d.trainable_variables), stats

    def _d_fake_grads(self, shard: Shard, fakes, training: bool):
        d = self.discriminator
        with tf.GradientTape() as tape:
            logits = d(fakes, training=training)
            d_fake = shard.weight * losses.d_hinge_fake(
                _samples_first(logits, shard.batch), shard.random(MARGIN_FAKE))
            scaled = self.d_opt.scale_loss(d_fake)
        return tape.gradient(scaled, d.trainable_variables), dict(d_fake=d_fake)

    def _reconstruction(self, real_aug, recs, part):
        """Sum over the batch of the three decoders' losses, as the reference codes it."""
        rec_big, rec_small, rec_part = recs
        size = rec_big.shape[1]
        whole = nearest_resize(real_aug, size)
        piece = nearest_resize(quadrant(real_aug, part), size)
        return (tf.reduce_sum(self.recon_fn(rec_big, whole))
                + tf.reduce_sum(self.recon_fn(rec_small, whole))
                + tf.reduce_sum(self.recon_fn(rec_part, piece)))

    def _apply(self, optimizer, grads, variables):
        """One optimizer step (the optimizer all-reduces the gradients across replicas)."""
        if self.mixed and self.replicas > 1:
            grads = _nan_unless_finite_everywhere(grads)
        optimizer.apply(grads, variables)

    # ----------------------------------------------------------------------------- sampling
    def sample(self, z=None, noise_seed=(0, 0)):
        """EMA-generator images for `z` (default: the fixed sample noise) without touching state."""
        z = self.fixed_z if z is None else z
        big, _ = self.generator_ema(z, training=False, noise_seed=tf.constant(noise_seed, tf.int64))
        return big

    def reconstruct(self, real, part: int = 0):
        """The decoders' reconstructions of a real batch (for progress grids), state untouched.

        None when D has no decoders (the ablation).
        """
        if not self.discriminator.has_decoders:
            return None
        _, (rec_big, rec_small, rec_part) = self.discriminator(real, part=part, training=False)
        size = rec_big.shape[1]
        return [nearest_resize(real, size), rec_big, rec_small, rec_part,
                nearest_resize(quadrant(real, tf.constant(part)), size)]


def _nan_unless_finite_everywhere(grads):
    """Make a loss-scale skip unanimous: Keras checks finiteness on one replica's local grads.

    Keras's LossScaleOptimizer decides "skip this step and lower the scale" from the first
    replica's gradients *before* they are all-reduced, so an overflow on another replica would
    reach the weights. Poisoning every replica's gradients when any replica overflowed makes the
    first replica see it too.
    """
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads if g is not None])
    bad = tf.distribute.get_replica_context().all_reduce(
        tf.distribute.ReduceOp.SUM, 1.0 - tf.cast(finite, tf.float32))
    factor = tf.where(bad > 0, tf.constant(float("nan")), tf.constant(1.0))
    return [g if g is None else g * tf.cast(factor, g.dtype) for g in grads]
