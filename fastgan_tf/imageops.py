"""Small image tensor operations with PyTorch's exact semantics, shared by the models and losses."""

from __future__ import annotations

import tensorflow as tf


def nearest_resize(images: tf.Tensor, size: int) -> tf.Tensor:
    """Nearest-neighbour resize of NHWC square images with PyTorch's `F.interpolate` indexing.

    PyTorch picks source index floor(i * in / out); `tf.image.resize(method="nearest")` uses
    half-pixel centres and would pick the other pixel of every pair when halving. FastGAN's
    reconstruction targets and the discriminator's small view depend on this choice.
    """
    in_size = images.shape[1]
    if in_size == size:
        return images
    index = (tf.range(size) * in_size) // size
    return tf.gather(tf.gather(images, index, axis=1), index, axis=2)


def quadrant(images: tf.Tensor, part: tf.Tensor) -> tf.Tensor:
    """The quadrant `part` of NHWC images: 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right.

    `part` may be a tensor, so a compiled step does not retrace for each quadrant. Gathers, not
    `tf.slice`: under XLA a slice start (and its gradient's padding) must be a compile-time
    constant, so a random `part` made jit_compile recompile the whole training step every call.
    """
    half = images.shape[1] // 2
    rows = (part // 2) * half + tf.range(half)
    cols = (part % 2) * half + tf.range(half)
    return tf.gather(tf.gather(images, rows, axis=1), cols, axis=2)  # static H and W are kept
