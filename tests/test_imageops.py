"""Nearest resize with PyTorch indexing and quadrant selection."""

import numpy as np
import tensorflow as tf

from fastgan_tf.imageops import nearest_resize, quadrant


def test_nearest_resize_picks_torch_indices():
    x = np.arange(2 * 8 * 8 * 3, dtype=np.float32).reshape(2, 8, 8, 3)
    out = nearest_resize(tf.constant(x), 4).numpy()
    np.testing.assert_array_equal(out, x[:, ::2, ::2])  # torch: floor(i * 8 / 4) = 0, 2, 4, 6
    up = nearest_resize(tf.constant(x), 16).numpy()
    np.testing.assert_array_equal(up, x.repeat(2, axis=1).repeat(2, axis=2))
    assert nearest_resize(tf.constant(x), 8).shape == (2, 8, 8, 3)


def test_quadrants_row_first_with_tensor_part():
    x = np.arange(1 * 4 * 4 * 1, dtype=np.float32).reshape(1, 4, 4, 1)
    expected = {0: x[:, :2, :2], 1: x[:, :2, 2:], 2: x[:, 2:, :2], 3: x[:, 2:, 2:]}
    crop = tf.function(lambda part: quadrant(tf.constant(x), part))
    for part, want in expected.items():
        got = crop(tf.constant(part))
        assert got.shape == (1, 2, 2, 1)
        np.testing.assert_array_equal(got.numpy(), want)
    assert crop.experimental_get_tracing_count() == 1
