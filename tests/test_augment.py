"""DiffAugment: each op against numpy with the same random draws, plus gradients, XLA, seeding."""

import numpy as np
import pytest
import tensorflow as tf

from fastgan_tf import augment
from fastgan_tf.augment import POLICIES, diff_augment

H = 64  # translation shift s = 8, cutout side 32


def _images(rng, b=4, h=H, w=H, c=3):
    return rng.uniform(-1, 1, size=(b, h, w, c)).astype(np.float32)


# --- numpy references ----------------------------------------------------------------------------


def color_np(x, bright, sat, con):
    x = x + bright[:, None, None, None]
    m = x.mean(axis=-1, keepdims=True)
    x = (x - m) * sat[:, None, None, None] + m
    m = x.mean(axis=(1, 2, 3), keepdims=True)
    return (x - m) * con[:, None, None, None] + m


def translate_np(x, dy, dx):
    """out[b, i, j] = x[b, i - dy, j - dx], zero outside: written as slices, not gathers."""
    out = np.zeros_like(x)
    h, w = x.shape[1:3]
    for b, (sy, sx) in enumerate(zip(dy, dx)):
        out[b, max(sy, 0):h + min(sy, 0), max(sx, 0):w + min(sx, 0)] = x[
            b, max(-sy, 0):h + min(-sy, 0), max(-sx, 0):w + min(-sx, 0)
        ]
    return out


def cutout_np(x, cy, cx, size):
    out = x.copy()
    h, w = x.shape[1:3]
    for b, (y, xx) in enumerate(zip(cy, cx)):
        t, l = y - size // 2, xx - size // 2
        rows = slice(np.clip(t, 0, h), np.clip(t + size, 0, h))
        out[b, rows, np.clip(l, 0, w):np.clip(l + size, 0, w)] = 0
    return out


def expected_np(x, policy, seed):
    """Replay the documented draw order on an identically seeded generator, apply in numpy."""
    g = tf.random.Generator.from_seed(seed)
    b, h = x.shape[0], x.shape[1]

    def u():
        return augment.uniform01(g, [b]).numpy().astype(np.float64)

    def ints(lo, hi):
        return g.uniform([b], minval=lo, maxval=hi, dtype=tf.int32).numpy()

    x = x.astype(np.float64)
    for name in policy.split(","):
        if name == "color":
            x = color_np(x, u() - 0.5, u() * 2.0, u() + 0.5)
        elif name == "translation":
            s = int(h * 0.125 + 0.5)
            x = translate_np(x, ints(-s, s + 1), ints(-s, s + 1))
        elif name == "cutout":
            c = int(h * 0.5 + 0.5)
            x = cutout_np(x, ints(0, h + 1 - c % 2), ints(0, h + 1 - c % 2), c)
    return x


# --- policy parsing -------------------------------------------------------------------------------


def test_policies_and_parsing():
    assert POLICIES == ("color", "translation", "cutout")
    assert augment.parse_policy("") == ()
    assert augment.parse_policy(None) == ()
    assert augment.parse_policy(" color, translation ") == ("color", "translation")
    with pytest.raises(ValueError) as e:
        augment.parse_policy("color,flip")
    assert "'flip'" in str(e.value) and all(p in str(e.value) for p in POLICIES)


def test_empty_policy_is_identity(rng):
    x = _images(rng)
    np.testing.assert_array_equal(diff_augment(x, "", tf.random.Generator.from_seed(0)), x)


# --- pure ops with given parameters ---------------------------------------------------------------


def test_color_ops_match_numpy(rng):
    x = _images(rng, b=3, h=8, w=8)
    b, s, c = np.array([-0.5, 0.1, 0.4]), np.array([0.0, 1.0, 1.9]), np.array([0.5, 1.0, 1.4])
    got = augment.adjust_contrast(
        augment.adjust_saturation(augment.adjust_brightness(x, b), s), c
    ).numpy()
    np.testing.assert_allclose(got, color_np(x.astype(np.float64), b, s, c), atol=1e-5)
    # saturation 0 makes every pixel grey (all channels equal)
    grey = augment.adjust_saturation(x, np.zeros(3)).numpy()
    np.testing.assert_allclose(grey, np.repeat(x.mean(-1, keepdims=True), 3, -1), atol=1e-6)


def test_translate_moves_content_by_exactly_dy_dx_with_zero_fill():
    x = np.zeros((3, 16, 16, 1), np.float32)
    x[:, 5, 7, 0] = 1.0
    y = augment.translate(x, np.array([2, -3, 0]), np.array([1, 0, -7])).numpy()
    for b, (i, j) in enumerate([(7, 8), (2, 7), (5, 0)]):
        assert y[b, i, j, 0] == 1.0 and y[b].sum() == 1.0
    # zero fill: shifting a constant image leaves exactly a |dy| x W + H x |dx| band of zeros
    ones = np.ones((1, 16, 16, 2), np.float32)
    y = augment.translate(ones, np.array([3]), np.array([-2])).numpy()
    np.testing.assert_array_equal(y[0, :3], 0)
    np.testing.assert_array_equal(y[0, :, -2:], 0)
    assert y.sum() == 2 * 13 * 14


def test_translate_matches_numpy(rng):
    x = _images(rng, b=5, h=12, w=12)
    dy, dx = np.array([-2, 0, 3, 11, -12]), np.array([1, -1, 0, -5, 12])
    np.testing.assert_array_equal(augment.translate(x, dy, dx).numpy(), translate_np(x, dy, dx))


def test_cutout_zeroes_one_clipped_square(rng):
    x = _images(rng, b=3, h=16, w=16) + 3.0  # no zeros before cutout
    y = augment.cutout(x, np.array([8, 0, 16]), np.array([8, 5, 16]), 8).numpy()
    np.testing.assert_array_equal(y, cutout_np(x, [8, 0, 16], [8, 5, 16], 8))
    zero = (y == 0).all(-1)
    assert zero[0].sum() == 64 and zero[0, 4:12, 4:12].all()  # interior: full 8x8 square
    assert zero[1].sum() == 4 * 8 and zero[1, 0:4, 1:9].all()  # top edge: clipped to 4 rows
    assert zero[2].sum() == 4 * 4 and zero[2, 12:, 12:].all()  # corner


# --- random ops against numpy replays -------------------------------------------------------------


def test_uniform01_is_the_integer_draw_scaled():
    a = augment.uniform01(tf.random.Generator.from_seed(3), [20000]).numpy()
    k = tf.random.Generator.from_seed(3).uniform([20000], 0, 2**24, dtype=tf.int32).numpy()
    np.testing.assert_array_equal(a, k / 2**24)
    assert a.dtype == np.float32 and 0 <= a.min() and a.max() < 1 and abs(a.mean() - 0.5) < 0.01


@pytest.mark.parametrize(
    "policy", ["color", "translation", "cutout", "color,translation", "color,translation,cutout"]
)
def test_diff_augment_matches_numpy_replay(policy, rng):
    x = _images(rng, b=6)
    got = diff_augment(x, policy, tf.random.Generator.from_seed(42)).numpy()
    assert got.shape == x.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, expected_np(x, policy, 42), atol=2e-5)


def test_translation_shifts_cover_minus_s_to_s():
    x = np.zeros((600, H, H, 1), np.float32)
    x[:, 32, 32, 0] = 1.0
    y = augment.rand_translation(tf.constant(x), tf.random.Generator.from_seed(5)).numpy()
    rows, cols = np.nonzero(y[..., 0].reshape(600, -1))  # one bright pixel per sample
    assert np.array_equal(rows, np.arange(600))
    dy, dx = cols // H - 32, cols % H - 32
    assert set(dy) == set(range(-8, 9)) and set(dx) == set(range(-8, 9))


def test_cutout_square_size_and_centre_range():
    y = augment.rand_cutout(tf.ones((400, H, H, 1)), tf.random.Generator.from_seed(6)).numpy()
    for img in y[..., 0]:
        rows, cols = np.nonzero(img == 0)
        r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        assert len(rows) == (r1 - r0) * (c1 - c0)  # one solid rectangle...
        # ...the 32-square starting at centre - 16, centre in {0..64}, clipped to the image
        assert (r1 - r0 == 32 or r0 == 0 or r1 == H) and r1 - r0 >= 16
        assert (c1 - c0 == 32 or c0 == 0 or c1 == H) and c1 - c0 >= 16
    full = [(img == 0).sum() == 32 * 32 for img in y[..., 0]]
    assert 0 < sum(full) < len(full)


def test_color_parameter_ranges():
    """The colour factors drawn in rand_color's order span the documented ranges."""
    g = tf.random.Generator.from_seed(9)
    b, s, c = (augment.uniform01(g, [5000]).numpy() for _ in range(3))
    b, s, c = b - 0.5, 2 * s, c + 0.5
    assert -0.5 <= b.min() < -0.49 and 0.49 < b.max() < 0.5
    assert 0 <= s.min() < 0.01 and 1.99 < s.max() < 2
    assert 0.5 <= c.min() < 0.51 and 1.49 < c.max() < 1.5


# --- dtypes, seeding, graph modes -----------------------------------------------------------------


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16, tf.float64])
def test_keeps_dtype(dtype, rng):
    x = tf.cast(_images(rng), dtype)
    y = diff_augment(x, "color,translation,cutout", tf.random.Generator.from_seed(1))
    assert y.dtype == dtype and y.shape == x.shape
    ref = expected_np(tf.cast(x, tf.float64).numpy(), "color,translation,cutout", 1)
    tol = 1e-5 if dtype == tf.float64 else 0.06
    np.testing.assert_allclose(tf.cast(y, tf.float64).numpy(), ref, atol=tol)


def test_same_seed_same_output_different_seed_different(rng):
    x = _images(rng)
    policy = "color,translation,cutout"
    a = diff_augment(x, policy, tf.random.Generator.from_seed(7)).numpy()
    b = diff_augment(x, policy, tf.random.Generator.from_seed(7)).numpy()
    c = diff_augment(x, policy, tf.random.Generator.from_seed(8)).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    g = tf.random.Generator.from_seed(7)
    first, second = diff_augment(x, policy, g).numpy(), diff_augment(x, policy, g).numpy()
    assert not np.allclose(first, second)  # the generator advances: fresh draws per call


@pytest.mark.parametrize("jit", [False, True])
def test_tf_function_and_xla_match_eager(jit, rng):
    x = _images(rng)
    policy = "color,translation,cutout"
    eager = diff_augment(x, policy, tf.random.Generator.from_seed(11)).numpy()
    g = tf.random.Generator.from_seed(11)
    fn = tf.function(lambda t: diff_augment(t, policy, g), jit_compile=jit)
    np.testing.assert_allclose(fn(tf.constant(x)).numpy(), eager, atol=1e-5)


def test_dynamic_batch_size(rng):
    g = tf.random.Generator.from_seed(2)
    fn = tf.function(
        lambda t: diff_augment(t, "color,translation,cutout", g),
        input_signature=[tf.TensorSpec([None, H, H, 3], tf.float32)],
    )
    for b in (1, 3, 8):
        assert fn(tf.constant(_images(rng, b=b))).shape == (b, H, H, 3)


def test_needs_static_height_and_width():
    fn = tf.function(
        lambda t: diff_augment(t, "translation", tf.random.Generator.from_seed(0)),
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)],
    )
    with pytest.raises(ValueError, match="static"):
        fn.get_concrete_function()


# --- gradients ------------------------------------------------------------------------------------


def test_input_gradients_through_color_and_translation(rng):
    x = tf.constant(_images(rng))
    w = tf.constant(rng.normal(size=x.shape).astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = diff_augment(x, "color,translation", tf.random.Generator.from_seed(4))
        loss = tf.reduce_sum(y * w)
    g = tape.gradient(loss, x).numpy()
    assert np.isfinite(g).all()
    # at most (1 - (56/64)^2) = 23% of the pixels are shifted out of the image
    assert (g != 0).mean() > 0.75


@pytest.mark.slow
def test_gradient_is_the_exact_jacobian():
    """Theoretical vs numerical Jacobian of the full policy on a tiny float64 batch."""
    x = tf.constant(np.random.default_rng(0).uniform(-1, 1, (2, 6, 6, 3)))

    def f(t):  # same draws each evaluation
        return diff_augment(t, "color,translation,cutout", tf.random.Generator.from_seed(3))

    theoretical, numerical = tf.test.compute_gradient(f, [x])
    np.testing.assert_allclose(theoretical[0], numerical[0], atol=1e-6)
    assert np.abs(theoretical[0]).sum() > 0


def test_generator_like_variable_gets_gradients_through_d_of_augment():
    g_dense = tf.keras.layers.Dense(H * H * 3)
    d_conv = tf.keras.layers.Conv2D(4, 3, strides=4)
    z = tf.random.normal([2, 8], seed=0)
    rng = tf.random.Generator.from_seed(0)
    with tf.GradientTape() as tape:
        fake = tf.tanh(tf.reshape(g_dense(z), [2, H, H, 3]))
        logits = d_conv(diff_augment(fake, "color,translation,cutout", rng))
        loss = -tf.reduce_mean(logits)
    grads = tape.gradient(loss, g_dense.trainable_variables)
    assert all(gr is not None for gr in grads)
    assert all(float(tf.reduce_max(tf.abs(gr))) > 0 for gr in grads)
