"""Splitting one training step over replicas and micro-batches without changing the update.

The global batch (`batch_size`) is cut into *shards*: one per replica (tf.distribute) times
`accumulate` micro-batches per replica. Each shard computes its share of the global losses (means
weighted by shard / global batch size, sums as they are) and the gradients are summed: over
micro-batches by `GradientSum`, over replicas by the optimizer's all-reduce. So D and G take one
step per global batch and only BatchNorm sees smaller batches.

Randomness is drawn per global step, never per shard: one key per step, from which every draw (z,
augmentation, margins, the decoded quadrant) is made for the whole global batch; each shard keeps
its rows (`StepRandom`). A sample gets the same z, augmentation and margins on 1 device x 8,
2 replicas x 4 or 2 micro-batches x 4. (G's per-pixel noise is the exception: `Shard.noise_seed`.)
"""

from __future__ import annotations

from contextlib import contextmanager

import tensorflow as tf

# Random streams of one step: each gets its own key, so the draws do not depend on call order.
Z, PART, AUG_REAL, AUG_FAKE_BIG, AUG_FAKE_SMALL, MARGIN_REAL, MARGIN_FAKE, NOISE = range(1, 9)


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
    """One shard's inputs: its real rows, its z, its random streams and its share of the batch.

    `last` marks the last micro-batch of the replica: state updates (spectral-norm power
    iterations, BatchNorm moving averages, noise counters) happen in that pass only, so every
    micro-batch uses the sigma the whole batch would use.
    """

    def __init__(self, real, key, index, shards: int, global_batch: int, nz: int, micro: int,
                 last: bool):
        self.real, self.key, self.index, self.shards, self.micro = real, key, index, shards, micro
        self.last = last
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


def split_batch(real, key, replicas: int, accumulate: int, nz: int) -> list[Shard]:
    """This replica's micro-batches of the global batch `real`, each with its random streams."""
    global_batch = int(real.shape[0])
    micro_batch = global_batch // (replicas * accumulate)
    replica = tf.distribute.get_replica_context().replica_id_in_sync_group
    grouped = tf.reshape(real, [replicas, accumulate, micro_batch, *real.shape[1:]])
    mine = tf.gather(grouped, replica)
    return [Shard(mine[m], key, replica * accumulate + m, replicas * accumulate, global_batch, nz,
                  m, last=m == accumulate - 1)
            for m in range(accumulate)]


def check_batch_split(batch_size: int, replicas: int, accumulate: int) -> int:
    """The micro-batch each replica computes at once; a UserError when the batch does not split."""
    from fastgan_tf.errors import UserError

    shards = replicas * accumulate
    if batch_size % shards:
        raise UserError(
            f"--batch-size {batch_size} cannot be split into {replicas} replica(s) x --accumulate "
            f"{accumulate}: use a batch size that is a multiple of {shards}")
    return batch_size // shards


class GradientSum:
    """Gradients summed over micro-batches (None where a pass gives a variable no gradient)."""

    def __init__(self):
        self.total = None

    def add(self, grads) -> None:
        if self.total is None:
            self.total = list(grads)
        else:
            self.total = [t if g is None else g if t is None else t + g
                          for t, g in zip(self.total, grads)]


def add_stats(total: dict, stats: dict) -> dict:
    """Loss records summed over micro-batches (each is already weighted by its share)."""
    return {**total, **{k: total.get(k, 0.0) + v for k, v in stats.items()}}


@contextmanager
def after(tensors):
    """Make the ops of the block wait for `tensors`, so that one micro-batch's activations are
    freed before the next pass allocates its own.

    Through one grouping op: TensorFlow would otherwise add an edge from every tensor to every
    op of the block that reads no other op of it. The step awaits hundreds of gradients, and
    its 64 px graph had 336,700 control edges that way, 7,787 this way; tracing and optimising
    the larger graph set the process's peak memory (benchmarks/README.md)."""
    waits = [t for t in (tensors or []) if t is not None]
    with tf.control_dependencies([tf.group(*waits)] if waits else []):
        yield


def nan_unless_finite_everywhere(grads):
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
