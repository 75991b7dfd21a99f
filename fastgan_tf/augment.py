"""DiffAugment (Zhao et al., NeurIPS 2020) as used by FastGAN, in plain differentiable TF ops.

Every augmentation is applied to real *and* fake images right before D, so it must let gradients
through to G: colour is arithmetic, translation a pad + gather, cutout a multiplicative mask. All
randomness comes from a `tf.random.Generator` (checkpointable), so a resumed run draws the same
numbers. Parameters are drawn independently per sample and per call, in a fixed order (per policy
name as listed; colour draws brightness, saturation, contrast; translation dy then dx; cutout
centre y then x). Uniform floats come from integer draws (`uniform01`) because TF's float
`Generator.uniform` gives different numbers under XLA; the integer draws are the same in both.

Images are NHWC floats (FastGAN keeps them in [-1, 1]); the output has the input's dtype. Height
and width must be static (they set the shift and cutout sizes); the batch size may be dynamic.
"""

import tensorflow as tf

POLICIES = ("color", "translation", "cutout")
TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5


def parse_policy(policy):
    """'color,translation' -> ('color', 'translation'); '' or None -> (); unknown -> ValueError."""
    names = tuple(p.strip() for p in (policy or "").split(",") if p.strip())
    unknown = [p for p in names if p not in POLICIES]
    if unknown:
        raise ValueError(
            f"Unknown DiffAugment policy {', '.join(map(repr, unknown))} in {policy!r}; "
            f"valid names: {', '.join(POLICIES)} (comma-separated, or '' for none)."
        )
    return names


def diff_augment(x, policy, rng):
    """Apply the comma-separated DiffAugment `policy` to a batch `x` with randomness from `rng`."""
    names = parse_policy(policy)
    x = tf.convert_to_tensor(x)
    for name in names:
        x = _RANDOM_OPS[name](x, rng)
    return x


# --- pure ops: the augmentation for given parameters (one value per sample) -------------------


def _per_sample(v, dtype):
    return tf.reshape(tf.cast(v, dtype), [-1, 1, 1, 1])


def adjust_brightness(x, shift):
    """x + shift: shift (B,) is added to every pixel and channel of its sample."""
    return x + _per_sample(shift, x.dtype)


def adjust_saturation(x, factor):
    """Scale each pixel's colour around its own channel mean (factor 0 -> grey, 1 -> unchanged)."""
    mean = tf.reduce_mean(x, axis=-1, keepdims=True)
    return (x - mean) * _per_sample(factor, x.dtype) + mean


def adjust_contrast(x, factor):
    """Scale each sample around its mean over H, W and C."""
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    return (x - mean) * _per_sample(factor, x.dtype) + mean


def translate(x, dy, dx):
    """Move the content of sample b down by dy[b] and right by dx[b] pixels, filling with 0.

    out[b, i, j] = x[b, i - dy, j - dx], or 0 where that is outside the image. As in DiffAugment:
    pad one ring of zeros and gather with indices clamped into the padded image, so any index that
    falls outside lands on the zero ring. Gathers have gradients, unlike image-resampling ops.
    """
    h, w = _static_hw(x)
    padded = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
    dy = tf.cast(tf.reshape(dy, [-1, 1]), tf.int32)
    dx = tf.cast(tf.reshape(dx, [-1, 1]), tf.int32)
    rows = tf.clip_by_value(tf.range(h)[None, :] - dy + 1, 0, h + 1)  # (B, H)
    cols = tf.clip_by_value(tf.range(w)[None, :] - dx + 1, 0, w + 1)  # (B, W)
    x = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(x, cols, axis=2, batch_dims=1)


def cutout(x, cy, cx, size):
    """Zero the square of side `size` (int or (h, w)) whose centre is at (cy[b], cx[b]).

    The square covers rows [cy - size//2, cy - size//2 + size) and the matching columns, clipped to
    the image (DiffAugment's convention), so near a border only part of it is cut.
    """
    sh, sw = (size, size) if isinstance(size, int) else size
    h, w = _static_hw(x)
    top = tf.cast(tf.reshape(cy, [-1, 1]), tf.int32) - sh // 2
    left = tf.cast(tf.reshape(cx, [-1, 1]), tf.int32) - sw // 2
    rows, cols = tf.range(h)[None, :], tf.range(w)[None, :]
    in_rows = tf.cast((rows >= top) & (rows < top + sh), x.dtype)  # (B, H)
    in_cols = tf.cast((cols >= left) & (cols < left + sw), x.dtype)  # (B, W)
    keep = 1 - in_rows[:, :, None, None] * in_cols[:, None, :, None]
    return x * keep


# --- random ops: draw the parameters from rng, then apply the pure op ---------------------------

_UNIFORM_BITS = 24  # float32 has a 24-bit significand: k / 2**24 is exact, and 2**24 divides 2**32


def uniform01(rng, shape):
    """float32 uniform on [0, 1) in steps of 2**-24, identical with and without XLA.

    `rng.uniform` for floats converts bits to floats differently under jit_compile, so the same
    seed would give a different run; the integer draw is bit-identical (and unbiased here).
    """
    k = rng.uniform(shape, minval=0, maxval=2**_UNIFORM_BITS, dtype=tf.int32)
    return tf.cast(k, tf.float32) * (2.0**-_UNIFORM_BITS)



def _color_dtype(x):
    # Half-precision means over a whole image lose digits: do colour maths in at least float32.
    return tf.float32 if x.dtype in (tf.float16, tf.bfloat16) else x.dtype


def rand_color(x, rng):
    """Brightness + [-0.5, 0.5), saturation x [0, 2), contrast x [0.5, 1.5), in that order."""
    batch = tf.shape(x)[0]
    brightness = uniform01(rng, [batch]) - 0.5
    saturation = uniform01(rng, [batch]) * 2.0
    contrast = uniform01(rng, [batch]) + 0.5
    y = tf.cast(x, _color_dtype(x))
    y = adjust_brightness(y, brightness)
    y = adjust_saturation(y, saturation)
    y = adjust_contrast(y, contrast)
    return tf.cast(y, x.dtype)


def translation_shift(size, ratio=TRANSLATION_RATIO):
    """Largest shift in pixels: int(size * ratio + 0.5) (16 px at 128, 32 at 256)."""
    return int(size * ratio + 0.5)


def rand_translation(x, rng, ratio=TRANSLATION_RATIO):
    """Shift each sample by integers dy, dx drawn uniformly from {-s..s}, zero fill."""
    h, w = _static_hw(x)
    batch = tf.shape(x)[0]
    sy, sx = translation_shift(h, ratio), translation_shift(w, ratio)
    dy = rng.uniform([batch], minval=-sy, maxval=sy + 1, dtype=tf.int32)
    dx = rng.uniform([batch], minval=-sx, maxval=sx + 1, dtype=tf.int32)
    return translate(x, dy, dx)


def cutout_size(size, ratio=CUTOUT_RATIO):
    """Side of the cut square: int(size * ratio + 0.5)."""
    return int(size * ratio + 0.5)


def rand_cutout(x, rng, ratio=CUTOUT_RATIO):
    """Zero one square of side int(size*0.5+0.5) per sample, centre drawn as in DiffAugment's code.

    The centre row is uniform over {0..H-1} when the side is odd and over {0..H} when it is even
    (upper bound H + 1 - side % 2), likewise the column; the square starts side//2 above/left of
    it and is clipped at the border.
    """
    h, w = _static_hw(x)
    batch = tf.shape(x)[0]
    sh, sw = cutout_size(h, ratio), cutout_size(w, ratio)
    cy = rng.uniform([batch], minval=0, maxval=h + 1 - sh % 2, dtype=tf.int32)
    cx = rng.uniform([batch], minval=0, maxval=w + 1 - sw % 2, dtype=tf.int32)
    return cutout(x, cy, cx, (sh, sw))


_RANDOM_OPS = {"color": rand_color, "translation": rand_translation, "cutout": rand_cutout}


def _static_hw(x):
    h, w = x.shape[1], x.shape[2]
    if h is None or w is None:
        raise ValueError(f"DiffAugment needs static image height and width, got shape {x.shape}.")
    return int(h), int(w)
