"""One epoch of training batches as a tf.data.Dataset, reproducible from (seed, epoch).

The dataset only carries batch indices and flip flags; each batch is gathered from a CPU
`tf.Variable` that holds the uint8 images, created once per image array and reused by every later
epoch. Why this design:
* No image constants in any graph: 1000 images at 1024^2 are 3 GB, over the 2 GB proto limit
  (and tf.data captures plain tensors by value, which serialises them for every new dataset).
* No Python inside the pipeline: a `tf.numpy_function` gather works, but TF's background threads
  then need the GIL, and a process that exits (or is interrupted) with batches in flight can
  hang forever at interpreter shutdown (seen here with TF 2.21 / Python 3.11). Pure TF ops also
  run in parallel with the Python training loop.
* Nothing random inside TF: the permutation and the flips come from a numpy Generator seeded with
  (seed, epoch), indexed by position in the epoch. Resuming mid-epoch (`skip_batches=k`) just drops
  the first k rows of that plan, so later batches are identical and skipped images are never read.

Unlike the reference (fresh OS-entropy permutation each epoch), runs are repeatable.
Memory: the variable is a second copy of the images; load_images(cache_dir=...) returns a memmap
of the decode cache, so the numpy side then costs page cache only.
"""

from __future__ import annotations

import weakref

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
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images (N, H, W, 1 or 3), got {images.dtype} "
                         f"{images.shape}")
    return images


# id(array) -> (weak reference to the array, its CPU variable): one copy per array, not per epoch.
_VARIABLES: dict[int, tuple[weakref.ref, tf.Variable]] = {}


def images_variable(images: np.ndarray) -> tf.Variable:
    """The CPU variable holding `images` (created on first use; treat `images` as read-only)."""
    key = id(images)
    entry = _VARIABLES.get(key)
    if entry is not None and entry[0]() is images:
        return entry[1]
    if tf.distribute.has_strategy():
        raise RuntimeError(
            "make_epoch_dataset must be called outside strategy.scope() "
            "(inside it the images would be mirrored onto every replica)"
        )
    with tf.init_scope(), tf.device("/CPU:0"):
        variable = tf.Variable(images, trainable=False, name="training_images")
    _VARIABLES[key] = (weakref.ref(images, lambda _, key=key: _VARIABLES.pop(key, None)), variable)
    return variable


def make_epoch_dataset(
    images: np.ndarray | ImageSet,
    batch_size: int,
    seed: int,
    epoch: int,
    skip_batches: int = 0,
    flip: bool = True,
) -> tf.data.Dataset:
    """float32 (B, H, W, C) batches in [-1, 1] for one epoch; drop_remainder, prefetched.

    `skip_batches=k` gives the same batches as the full epoch minus its first k, without touching
    the skipped images (used to resume mid-epoch). Flips are horizontal, per image.
    """
    images = _as_array(images)
    indices, flips = epoch_plan(len(images), batch_size, seed, epoch, flip)
    if not 0 <= skip_batches <= len(indices):
        raise ValueError(f"skip_batches must be in [0, {len(indices)}], got {skip_batches}")
    indices, flips = indices[skip_batches:], flips[skip_batches:]
    variable = images_variable(images)

    def load(batch_indices, batch_flips):
        batch = tf.gather(variable, batch_indices)  # reads only these rows
        if flip:
            batch = tf.where(batch_flips[:, None, None, None], tf.reverse(batch, axis=[2]), batch)
        return tf.cast(batch, tf.float32) / 127.5 - 1.0

    ds = tf.data.Dataset.from_tensor_slices((indices, flips))
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)
