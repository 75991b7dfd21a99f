"""One epoch of training batches as a tf.data.Dataset, reproducible from (seed, epoch).

The decoded uint8 images stay a numpy array (possibly a memmap of the decode cache); the dataset
only carries batch indices and flip flags, and a `tf.numpy_function` gathers each batch. So the
graph holds no image constants (1000 images at 1024^2 are 3 GB, beyond the 2 GB GraphDef limit),
and nothing random happens inside TF: the permutation and the flips come from a numpy Generator
seeded with (seed, epoch) and are indexed by position in the epoch. Resuming mid-epoch is then
just dropping the first k rows of that plan (`skip_batches`), with identical later batches.

Unlike the reference (fresh OS-entropy permutation each epoch), runs are repeatable.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from fastgan_tf.data.images import ImageSet
from fastgan_tf.errors import UserError


def steps_per_epoch(num_images: int, batch_size: int) -> int:
    """Full batches per epoch (the last partial batch is dropped)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if num_images < batch_size:
        raise UserError(
            f"Batch size {batch_size} is larger than the dataset ({num_images} images): "
            f"use --batch-size {max(num_images, 1)} or smaller, or add more images"
        )
    return num_images // batch_size


def _generator(seed: int, epoch: int) -> np.random.Generator:
    # SeedSequence needs non-negative ints; masking keeps distinct seeds distinct.
    return np.random.default_rng([int(seed) & (2**64 - 1), int(epoch) & (2**64 - 1)])


def epoch_plan(
    num_images: int, batch_size: int, seed: int, epoch: int, flip: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """(indices, flips), both shaped (steps, batch_size): which image goes where, mirrored or not.

    A pure function of its arguments, so any process can rebuild any epoch exactly.
    """
    steps = steps_per_epoch(num_images, batch_size)
    rng = _generator(seed, epoch)
    order = rng.permutation(num_images)
    flips = rng.random(num_images) < 0.5  # flip of the image at each epoch position
    used = steps * batch_size
    indices = order[:used].reshape(steps, batch_size)
    flips = flips[:used].reshape(steps, batch_size) & bool(flip)
    return indices.astype(np.int64), flips


def _as_array(images) -> np.ndarray:
    images = images.images if isinstance(images, ImageSet) else images
    if not isinstance(images, np.ndarray):
        images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images (N, H, W, 3), got {images.dtype} {images.shape}")
    return images


def make_epoch_dataset(
    images: np.ndarray | ImageSet,
    batch_size: int,
    seed: int,
    epoch: int,
    skip_batches: int = 0,
    flip: bool = True,
) -> tf.data.Dataset:
    """float32 (B, H, W, 3) batches in [-1, 1] for one epoch; drop_remainder, prefetched.

    `skip_batches=k` gives the same batches as the full epoch minus its first k, without touching
    the skipped images (used to resume mid-epoch).
    """
    images = _as_array(images)
    indices, flips = epoch_plan(len(images), batch_size, seed, epoch, flip)
    if not 0 <= skip_batches <= len(indices):
        raise ValueError(f"skip_batches must be in [0, {len(indices)}], got {skip_batches}")
    indices, flips = indices[skip_batches:], flips[skip_batches:]

    def gather(batch_indices: np.ndarray, batch_flips: np.ndarray) -> np.ndarray:
        batch = np.array(images[batch_indices])  # a real copy, also when `images` is a memmap
        batch[batch_flips] = batch[batch_flips, :, ::-1]  # horizontal flip (axis 2 = width)
        return batch

    def load(batch_indices, batch_flips):
        batch = tf.numpy_function(gather, [batch_indices, batch_flips], tf.uint8, stateful=False)
        batch.set_shape((batch_size, *images.shape[1:]))
        return tf.cast(batch, tf.float32) / 127.5 - 1.0

    ds = tf.data.Dataset.from_tensor_slices((indices, flips))
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)
