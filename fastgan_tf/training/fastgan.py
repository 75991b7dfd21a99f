"""FastGAN's training state and its step: the one place FastGAN's training logic lives.

`FastGAN.train_step` is one iteration of the reference implementation, the same update (only
the order of independent work differs, see Memory):

1. z ~ N(0, I); G(z) gives the full-resolution image and the small side output.
2. DiffAugment on each fake output (independent draws), and later on the real batch.
3. D step: random-margin hinge on the real batch and on the detached fakes (separate forward
   passes, so separate BatchNorm statistics) plus the three decoders' reconstruction losses
   summed over the batch; one Adam step.
4. G step: -mean(D(fakes)) with the *updated* D on the *same* augmented fakes; one Adam step.
5. EMA of G's trainable weights (decay 0.999); its buffers (BN statistics, SN vectors, noise
   seeds) are copied from G, as the reference's parameter-swapping EMA leaves them.

`train_on_batch` is what the training loop calls: it draws the step's random key, runs
`train_step` on every replica (compiled, optionally with XLA) and counts the step. How a batch is
split over replicas and `--accumulate` micro-batches without changing the update is in
sharding.py: D and G take one step per global batch, and only BatchNorm sees smaller batches.

Memory: the D step's real and fake passes are differentiated one after the other (the reference
calls backward twice, too), so their activations are never alive together. G runs after the real
passes (the reference runs it first), so its taped activations, kept until the G step, are never
alive with the real pass's, the step's largest (decoders and LPIPS). With accumulation, G
runs twice per micro-batch (a pure forward for the D step, then the taped one for the G step),
which trades ~20% more time for activations of one micro-batch instead of the whole batch.
"""

from __future__ import annotations

import tensorflow as tf

from fastgan_tf import losses
from fastgan_tf.augment import diff_augment
from fastgan_tf.config import TrainConfig
from fastgan_tf.errors import UserError
from fastgan_tf.imageops import nearest_resize, quadrant
from fastgan_tf.models import Discriminator, Generator
from fastgan_tf.training import memory
from fastgan_tf.training.host_memory import map_large_blocks, release_freed_host_memory
from fastgan_tf.training.registry import ModelSpec
from fastgan_tf.training.sharding import (
    AUG_FAKE_BIG,
    AUG_FAKE_SMALL,
    AUG_REAL,
    MARGIN_FAKE,
    MARGIN_REAL,
    PART,
    GradientSum,
    Shard,
    StepRandom,
    add_stats,
    after,
    check_batch_split,
    nan_unless_finite_everywhere,
    split_batch,
)
from fastgan_tf.training.state import (
    RunState,
    copy_weights,
    fake_logit_stats,
    make_optimizer,
    real_logit_stats,
)


class FastGAN(RunState):
    """G, D (with decoders), EMA G, both optimizers, counters and RNG: everything a checkpoint holds.

    `strategy` (default: TensorFlow's current one) places the models and optimizers; with more
    than one replica BatchNorm is synchronised. RNG, counters and fixed noise are plain variables:
    every replica and worker reads the same values, and they are updated once per step.
    """

    def __init__(self, cfg: TrainConfig, recon_fn=None, mixed: bool = False,
                 strategy: tf.distribute.Strategy | None = None):
        self.cfg = cfg
        self.recon_fn = recon_fn  # (pred, target) -> per-sample loss; None without decoders
        self.mixed = mixed
        self.strategy = strategy or tf.distribute.get_strategy()
        self.replicas = int(self.strategy.num_replicas_in_sync)
        check_batch_split(cfg.batch_size, self.replicas, cfg.accumulate)
        if cfg.xla and self.replicas > 1:  # XLA around strategy.run is not supported by TF
            raise UserError(f"--xla compiles the step for one device, but the strategy has "
                            f"{self.replicas} replicas: drop --xla or use --strategy one")
        self._on_cpu = not tf.config.list_logical_devices("GPU")
        if self._on_cpu:
            map_large_blocks()  # activations straight from and back to the OS: no heap to fragment
        sync = self.replicas > 1
        with self.strategy.scope():
            self.generator = build_generator(cfg, sync_bn=sync)
            self.discriminator = build_discriminator(cfg, sync_bn=sync)
            self.generator_ema = build_generator(cfg, name="generator_ema", sync_bn=sync)
            copy_weights(self.generator_ema, self.generator)
            self.g_opt = make_optimizer(cfg, mixed, self.generator)
            self.d_opt = make_optimizer(cfg, mixed, self.discriminator)
        self._create_run_state(cfg)
        self._compiled = tf.function(self._step_on_replicas, jit_compile=cfg.xla, autograph=False)

    # ----------------------------------------------------------------------------- the step
    def train_on_batch(self, real) -> dict:
        """One optimisation step on the global batch `real` (B, R, R, channels) in [-1, 1].

        Returns the global losses as scalar tensors: d_loss = d_real + d_fake + recon, g_loss,
        and the mean real logit.
        """
        with self.strategy.scope():
            stats = self._compiled(real)
        if self._on_cpu:
            release_freed_host_memory()
        return stats

    def _step_on_replicas(self, real):
        key = self.rng.make_seeds(1)[:, 0]  # every random draw of the step derives from it
        per_replica = self.strategy.run(self.train_step, args=(real, key))
        self.count_step()
        return {k: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
                for k, v in per_replica.items()}

    def train_step(self, real, key) -> dict:
        """One FastGAN iteration on this replica's rows of `real`: the five steps.

        D's real passes run before G (the reference runs G first), and the G step's passes wait
        for all of D's gradients. The real passes read neither G's outputs nor its state, and
        every random draw derives from `key`, so the update is the reference's. The order
        matters for memory: G's taped activations (or, with --accumulate, its replays) never
        coexist with D's largest pass, the reals through the decoders and LPIPS. Left to
        TensorFlow's executor, the order, and the step's peak with it, varied from process to
        process (benchmarks/README.md).
        """
        shards = split_batch(real, key, self.replicas, self.cfg.accumulate, self.cfg.nz)
        d_grads = GradientSum()
        real_stats = self.discriminator_on_reals(shards, d_grads)  # 3a. hinge + reconstruction
        with after(d_grads.total):
            fakes = self.generate(shards)                           # 1-2. G(z), augmented
        d_stats = self.train_discriminator(shards, fakes, d_grads, real_stats)  # 3b. + Adam step
        with after(d_grads.total):
            g_stats = self.train_generator(shards, fakes)           # 4. -mean D(G(z)), updated D
        self.update_ema()                                           # 5. EMA of G
        return {**d_stats, **g_stats}

    # ----------------------------------------------------------------------------- 1-2. fakes
    def generate(self, shards: list[Shard]) -> list[dict]:
        """G's augmented outputs for each micro-batch: {"images": [big, small], "tape": ...}.

        One micro-batch (no --accumulate): G runs once, recorded on the tape the G step reuses,
        as the reference does. Several: pure forwards here (state updates and gradients come in
        the G step, which runs each micro-batch again), so only one micro-batch's activations
        are alive at a time.
        """
        if len(shards) == 1:
            tape = tf.GradientTape()
            with tape:
                images = self.augmented_fakes(shards[0], training=True)
            return [{"images": images, "tape": tape}]
        fakes, previous = [], None
        for shard in shards:  # same noise, sigma and augmentation as the G step's passes
            with after(previous):
                images = [tf.stop_gradient(f) for f in self.augmented_fakes(shard, training=False)]
            fakes.append({"images": images, "tape": None})
            previous = images
        return fakes

    def augmented_fakes(self, shard: Shard, training: bool) -> list:
        """G's two outputs for the shard's z, each augmented with its own (replayable) draws."""
        big, small = self.generator(shard.z, training=training, noise_seed=shard.noise_seed())
        return [self._augment(big, shard.random(AUG_FAKE_BIG)),
                self._augment(small, shard.random(AUG_FAKE_SMALL))]

    def _augment(self, images, random):
        return diff_augment(images, self.cfg.augment, random)

    # ----------------------------------------------------------------------------- 3. D step
    def discriminator_on_reals(self, shards: list[Shard], grads: GradientSum) -> dict:
        """Step 3, first half: D's real passes, a micro-batch at a time, summed into `grads`."""
        part = StepRandom(shards[0].key, PART).uniform([], minval=0, maxval=4, dtype=tf.int32)
        stats = {}
        for shard in shards:
            with after(grads.total):
                stats = add_stats(stats, self._d_real_pass(shard, part, grads))
        return stats

    def train_discriminator(self, shards: list[Shard], fakes: list[dict], grads: GradientSum,
                            stats: dict) -> dict:
        """Step 3, second half: D's fake passes after the real ones (`grads`, `stats`); one Adam
        step on their sum."""
        for shard, fake in zip(shards, fakes):
            with after(grads.total):
                stats = add_stats(stats, self._d_fake_pass(shard, fake["images"], grads))
        self._apply(self.d_opt, grads.total, self.discriminator.trainable_variables)
        return dict(stats, d_loss=stats["d_real"] + stats["d_fake"] + stats["recon"])

    def _d_real_pass(self, shard: Shard, part, grads: GradientSum) -> dict:
        """D on the augmented real images: hinge with random margins, plus reconstruction."""
        d = self.discriminator
        with tf.GradientTape() as tape:
            real_aug = self._augment(shard.real, shard.random(AUG_REAL))
            if d.has_decoders:
                logits, recs = d(real_aug, part=part, training=shard.last)
                recon = self.reconstruction_loss(real_aug, recs, part)
            else:  # the paper's "no decoders" ablation
                logits, recon = d(real_aug, training=shard.last), tf.constant(0.0)
            d_real = shard.weight * losses.d_hinge_real(
                _samples_first(logits, shard.batch), shard.random(MARGIN_REAL))
            scaled = self.d_opt.scale_loss(d_real + recon)
        grads.add(tape.gradient(scaled, d.trainable_variables))
        return dict(d_real=d_real, recon=recon, **real_logit_stats(logits, shard.weight))

    def _d_fake_pass(self, shard: Shard, fakes: list, grads: GradientSum) -> dict:
        """D on the detached augmented fakes: hinge with random margins."""
        d = self.discriminator
        with tf.GradientTape() as tape:
            logits = d([tf.stop_gradient(f) for f in fakes], training=shard.last)
            d_fake = shard.weight * losses.d_hinge_fake(
                _samples_first(logits, shard.batch), shard.random(MARGIN_FAKE))
            scaled = self.d_opt.scale_loss(d_fake)
        grads.add(tape.gradient(scaled, d.trainable_variables))
        return dict(d_fake=d_fake, **fake_logit_stats(logits, shard.weight))

    def reconstruction_loss(self, real_aug, recs, part):
        """Sum over the batch of the three decoders' losses, as the reference codes it: the
        whole image for the big and the small decoder, the quadrant `part` for the third."""
        rec_big, rec_small, rec_part = recs
        whole, piece = reconstruction_targets(real_aug, part, rec_big.shape[1])
        big, small, part_loss = self.recon_fn.pairs([rec_big, rec_small, rec_part],
                                                    [whole, whole, piece])
        return tf.reduce_sum(big) + tf.reduce_sum(small) + tf.reduce_sum(part_loss)

    # ----------------------------------------------------------------------------- 4. G step
    def train_generator(self, shards: list[Shard], fakes: list[dict]) -> dict:
        """Step 4: -mean D(G(z)) with the updated D on the same augmented fakes; one Adam step."""
        g_vars = self.generator.trainable_variables
        grads, g_loss = GradientSum(), 0.0
        for shard, fake in zip(shards, fakes):
            tape = fake["tape"] or tf.GradientTape()  # G's own pass, or a replay of it
            with after(grads.total), tape:
                images = fake["images"] if fake["tape"] else self.augmented_fakes(shard, shard.last)
                loss = shard.weight * losses.g_adversarial(
                    self.discriminator(images, training=shard.last))
                scaled = self.g_opt.scale_loss(loss)
            grads.add(tape.gradient(scaled, g_vars))
            g_loss += loss
        self._apply(self.g_opt, grads.total, g_vars)
        return dict(g_loss=g_loss)

    def _apply(self, optimizer, grads, variables):
        """One optimizer step (the optimizer all-reduces the gradients across replicas)."""
        if self.mixed and self.replicas > 1:
            grads = nan_unless_finite_everywhere(grads)
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
        whole, piece = reconstruction_targets(real, tf.constant(part), rec_big.shape[1])
        return [whole, rec_big, rec_small, rec_part, piece]


def reconstruction_targets(real_aug, part, size: int) -> tuple:
    """What the decoders chase, at their output `size`: the whole (augmented) real image, and its
    quadrant `part`."""
    return nearest_resize(real_aug, size), nearest_resize(quadrant(real_aug, part), size)


def _samples_first(logits, batch: int):
    """D's flat logits [big (B*k), small (B*k)] reordered sample by sample, for the margins."""
    return tf.reshape(tf.transpose(tf.reshape(logits, [2, batch, -1]), [1, 0, 2]), [-1])


# --------------------------------------------------------------------------------- the spec
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


def needs_vgg(cfg: TrainConfig) -> bool:
    """Only the decoders' LPIPS loss needs the VGG16 weights."""
    return cfg.decoders and cfg.recon_loss == "lpips"


def make_fastgan(cfg: TrainConfig, mixed: bool = False, strategy=None) -> FastGAN:
    recon = losses.reconstruction_loss(cfg.recon_loss, vgg_weights=cfg.vgg_weights or "imagenet",
                                       lpips_precision=cfg.lpips_precision) if cfg.decoders else None
    return FastGAN(cfg, recon, mixed=mixed, strategy=strategy)


def memory_estimate(cfg: TrainConfig, micro_batch: int, mode: str) -> dict:
    """Device memory of one step in precision `mode`: G's taped pass plus D's larger (real,
    decoding) pass."""
    with memory.precision(mode):
        g, d = build_generator(cfg), build_discriminator(cfg)
    r, seed = cfg.resolution, tf.constant([0, 0], tf.int64)
    passes = {
        "G": (lambda z: g(z, training=True, noise_seed=seed), lambda b: tf.TensorSpec([b, cfg.nz])),
        "D": ((lambda x: d(x, part=tf.constant(0), training=True)) if d.has_decoders
              else (lambda x: d(x, training=True)),
              lambda b: tf.TensorSpec([b, r, r, cfg.channels])),
    }
    lpips = (d.recon_resolution, cfg.channels) if needs_vgg(cfg) else None
    return memory.estimate(g, d, passes, micro_batch, mode, lpips_input=lpips)


SPEC = ModelSpec(
    name="fastgan",
    make_gan=make_fastgan,
    build_generator=build_generator,
    build_discriminator=build_discriminator,
    needs_vgg=needs_vgg,
    memory_estimate=memory_estimate,
)
