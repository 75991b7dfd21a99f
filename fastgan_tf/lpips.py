"""LPIPS v0.1 'vgg' (Zhang et al., CVPR 2018): FastGAN's reconstruction loss for D's decoders.

Features of a frozen VGG16 at five taps (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3) are
unit-normalised over channels, their squared difference is weighted per channel by LPIPS's learned
non-negative 1x1 "lin" weights, averaged over space and summed over the taps: one value per sample.

Backbone caveat: this uses `keras.applications.VGG16`, whose ImageNet weights are the
Caffe-converted VGG16 (inputs 0..255, BGR, ImageNet means removed), not the torchvision VGG16 that
LPIPS's lin weights were trained on (and that the reference uses). The same architecture, taps and
lin weights give a distance of the same kind, close to but not identical with the `lpips` package's
values (the gap has not been measured: the ImageNet weights can't be downloaded on the build
machine). The project accepts this to stay TF-only; here LPIPS is a training loss, not a metric
to compare with papers.

Precision: VGG16 computes in float32 whatever G and D compute in (the reference's loss), or with
`precision="bf16"` (`--lpips-precision bf16`) its blocks 3-5 in bfloat16, about twice as fast on
CPUs with AMX; the distance itself is always float32 (see BF16_FROM_BLOCK).

The lin weights (fastgan_tf/assets/lpips_vgg_v0.1.npz, BSD-2, see LPIPS_LICENSE.txt) come from the
PyPI `lpips` package (tools/convert_lpips_weights.py). The VGG16 weights are not shipped: they are
Keras's own file, kept in Keras's cache folder, and fastgan_tf.downloads fetches them only when
asked to and when that can succeed quickly; otherwise it raises a one-line UserError naming the
alternatives.
"""

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from fastgan_tf import downloads
from fastgan_tf.config import LPIPS_PRECISIONS
from fastgan_tf.errors import UserError, one_line

LIN_WEIGHTS_PATH = Path(__file__).resolve().parent / "assets" / "lpips_vgg_v0.1.npz"

TAPS = ("block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3", "block5_conv3")
CHANNELS = (64, 128, 256, 512, 512)
EPS = 1e-10  # lpips.normalize_tensor
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))  # conv widths

# precision "bf16" (opt-in) runs VGG16's blocks 3-5 (69 % of its FLOPs) in bfloat16: LPIPS as a
# 256 px step runs it took 0.51x float32's time on a CPU with AMX. The input and blocks 1-2 stay
# float32: with ImageNet weights on real images, bfloat16 from block 1 on moved LPIPS's input
# gradient by 17-105 % of its norm (median per case), from block 2 on by 8-29 %, from block 3 on by
# 5-7 %; for scale, rounding its input as a bfloat16 decoder rounds its output moves the float32
# gradient by 10-81 % (benchmarks/lpips_precision.py, benchmarks/README.md).
PRECISIONS = LPIPS_PRECISIONS
BF16_FROM_BLOCK = 3


# --- VGG16 weights: Keras's own file, in Keras's cache (see fastgan_tf.downloads) -----------------


def vgg16_weights_path():
    """Path where the Keras-cached VGG16 no-top ImageNet weights are (or would be)."""
    return downloads.VGG16_NOTOP.path


def vgg16_weights_available():
    """True if the cached VGG16 weights exist with the hash Keras expects (no network used)."""
    return downloads.cached(downloads.VGG16_NOTOP) is not None


def fetch_vgg16_weights(timeout=downloads.PROBE_TIMEOUT):
    """Return the cached weights' path, downloading them first if that can work; else UserError."""
    return downloads.fetch(downloads.VGG16_NOTOP, timeout)


def resolve_vgg_weights(vgg_weights):
    """'imagenet' -> cached (or freshly downloaded) file; a path -> that file; None -> None."""
    if vgg_weights is None:
        return None
    if isinstance(vgg_weights, str) and vgg_weights == "imagenet":
        return fetch_vgg16_weights()
    path = Path(vgg_weights).expanduser()
    if not path.is_file():
        vgg16 = downloads.VGG16_NOTOP
        raise UserError(
            f"VGG16 weights file {path} not found; give the path of {vgg16.name}, "
            f"use 'imagenet' (Keras cache {vgg16.path.parent}), or train with --recon-loss l1."
        )
    return path


# --- the network ----------------------------------------------------------------------------------


def load_lin_weights(path=LIN_WEIGHTS_PATH):
    """The five non-negative per-channel LPIPS weights, float32 arrays of shape (C,)."""
    with np.load(path) as data:
        return [np.asarray(data[f"lin{i}"], np.float32) for i in range(len(TAPS))]


def caffe_preprocess(x):
    """[-1, 1] RGB -> what Keras's VGG16 expects: 0..255, BGR, ImageNet channel means removed."""
    x = (tf.cast(x, tf.float32) + 1.0) * 127.5
    return tf.reverse(x, axis=[-1]) - tf.constant(CAFFE_BGR_MEAN, tf.float32)


def as_rgb(x):
    """Greyscale NHWC (C = 1) -> 3 equal channels, which is what a grey photo is to VGG16."""
    return tf.tile(x, [1, 1, 1, 3]) if x.shape[-1] == 1 else x


def _frozen_variable(next_creator, **kwargs):
    # tf.Variables created trainable are watched by every GradientTape even when the Keras layer is
    # frozen; creating them non-trainable keeps gradients out of VGG altogether.
    kwargs["trainable"] = False
    return next_creator(**kwargs)


def vgg16(precision="float32", bf16_from_block=BF16_FROM_BLOCK):
    """`keras.applications.VGG16(include_top=False)`, layer for layer and name for name (so Keras's
    weight files load into it), its blocks from `bf16_from_block` on computing in bfloat16 when
    `precision` is "bf16" (float32 variables, as Keras's mixed policy)."""
    x = inputs = keras.Input((None, None, 3))
    for block, widths in enumerate(BLOCKS, start=1):
        dtype = "mixed_bfloat16" if precision == "bf16" and block >= bf16_from_block else "float32"
        for i, width in enumerate(widths, start=1):
            x = keras.layers.Conv2D(width, (3, 3), activation="relu", padding="same", dtype=dtype,
                                    name=f"block{block}_conv{i}")(x)
        x = keras.layers.MaxPooling2D((2, 2), strides=(2, 2), dtype=dtype,
                                      name=f"block{block}_pool")(x)
    return keras.Model(inputs, x, name="vgg16")


def build_vgg16_features(weights_path=None, precision="float32", bf16_from_block=BF16_FROM_BLOCK):
    """A frozen keras.Model: image (caffe-preprocessed) -> the five tapped activations, float32
    (or bfloat16 from block `bf16_from_block` on, with precision "bf16")."""
    if precision not in PRECISIONS:
        raise ValueError(f"Unknown LPIPS precision {precision!r}; valid: {', '.join(PRECISIONS)}.")
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")  # whatever G and D compute in
    try:
        with tf.variable_creator_scope(_frozen_variable):
            vgg = vgg16(precision, bf16_from_block)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    if weights_path is not None:
        try:
            vgg.load_weights(str(weights_path))
        except Exception as e:  # h5py/keras errors on a corrupt or unrelated file
            raise UserError(
                f"Could not load VGG16 weights from {weights_path} ({one_line(e)}); it should be "
                f"Keras's {downloads.VGG16_NOTOP.name} (delete it to re-download), or use "
                "--recon-loss l1."
            ) from None
    vgg.trainable = False
    taps = [vgg.get_layer(name).output for name in TAPS]  # Keras convs include their ReLU
    features = keras.Model(vgg.input, taps, name="lpips_vgg16_features")
    features.trainable = False
    return features


def normalize_channels(f, eps=EPS):
    """f / (||f||_channels + eps), as lpips.normalize_tensor.

    The squared norm is floored at 1e-30 before the sqrt: same value (the floor is far below eps),
    but no 0/0 NaN gradient where all channels of a pixel are zero (dead ReLUs).
    """
    norm = tf.sqrt(tf.maximum(tf.reduce_sum(tf.square(f), axis=-1, keepdims=True), 1e-30))
    return f / (norm + eps)


def tap_distance(a, b_hat, w):
    """Per sample: the spatial mean of sum_c w_c (a^_c - b_hat_c)^2, a^ = normalize_channels(a).

    Values as autodiff's composition; the gradient is written by hand so that the backward pass
    keeps `a` (which VGG16's backward keeps anyway) and a one-channel norm rather than the
    normalised copy of `a` that autodiff keeps: 7.6 MiB less per 128 px image (24 images in a
    256 px FastGAN step). Gradients equal autodiff's to float32 rounding (tests/test_lpips.py).
    """

    @tf.custom_gradient
    def distance(a, b_hat):
        squares = tf.reduce_sum(tf.square(a), axis=-1, keepdims=True)
        norm = tf.sqrt(tf.maximum(squares, 1e-30))
        denom = norm + EPS
        diff = tf.math.squared_difference(a / denom, b_hat)
        d = tf.reduce_mean(tf.reduce_sum(diff * w, axis=-1), axis=[1, 2])

        def grad(upstream):
            pixels = tf.cast(tf.shape(a)[1] * tf.shape(a)[2], a.dtype)
            g_hat = (2.0 / pixels) * upstream[:, None, None, None] * w * (a / denom - b_hat)
            # a^ = a / (|a| + eps): d a^_c / d a_k = delta_ck / denom - a_c a_k / (denom^2 |a|),
            # the second term absent where the floor holds |a| (dead pixels: a = 0 there anyway)
            dot = tf.reduce_sum(g_hat * a, axis=-1, keepdims=True)
            radial = tf.where(squares > 1e-30, dot / (denom * denom * norm), 0.0)
            return g_hat / denom - radial * a, -g_hat

        return d, grad

    return distance(a, b_hat)


class LPIPS(keras.layers.Layer):
    """LPIPS(pred, target) -> (B,) float32 distance; inputs NHWC in [-1, 1], same size (>= 16 px).

    Inputs have 3 channels, or 1 (greyscale, repeated to 3).

    vgg_weights: "imagenet" (Keras cache, see `vgg16_weights_path`), a path to
    vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5, or None (random VGG, for tests only).
    precision: "float32", or "bf16" (VGG16's blocks from `bf16_from_block` on in bfloat16; the
    distance itself is always computed in float32). Other splits than BF16_FROM_BLOCK are for
    benchmarks/lpips_precision.py.
    Nothing here is trainable; gradients flow to both inputs.
    """

    def __init__(self, vgg_weights="imagenet", lin_weights_path=LIN_WEIGHTS_PATH,
                 precision="float32", bf16_from_block=BF16_FROM_BLOCK, **kwargs):
        kwargs.setdefault("dtype", "float32")
        kwargs.setdefault("name", "lpips")
        super().__init__(**kwargs)
        self.features = build_vgg16_features(resolve_vgg_weights(vgg_weights), precision,
                                             bf16_from_block)
        self.lin = [tf.constant(w) for w in load_lin_weights(lin_weights_path)]
        self.trainable = False

    def call(self, pred, target):
        n = tf.shape(pred)[0]
        taps = self.taps(tf.concat([pred, target], axis=0))
        return self._distance([f[:n] for f in taps], [normalize_channels(f[n:]) for f in taps])

    def pairs(self, preds: list, targets: list) -> list:
        """LPIPS of each (pred, target) pair, per sample, with constant targets: the form of
        FastGAN's reconstruction loss, at the cost its FLOPs should have.

        The predictions go through VGG16 as one batch. The targets get no gradient, so they go
        through it without being recorded on any tape (no backward pass, no activations kept),
        once each: a target several pairs share (both whole-image decoders chase the same image)
        is computed once.
        """
        sizes = [p.shape[0] for p in preds]
        pred_taps = [tf.split(f, sizes) for f in self.taps(tf.concat(preds, axis=0))]
        unique = list({id(t): t for t in targets}.values())
        target_taps = [tf.split(normalize_channels(f), [t.shape[0] for t in unique])
                       for f in self.taps(tf.stop_gradient(tf.concat(unique, axis=0)))]
        where = [next(i for i, u in enumerate(unique) if u is t) for t in targets]
        return [self._distance([f[i] for f in pred_taps], [f[j] for f in target_taps])
                for i, j in enumerate(where)]

    def taps(self, images):
        """VGG16's five tapped activations of [-1, 1] images (1 or 3 channels)."""
        rgb = as_rgb(tf.cast(images, tf.float32))
        taps = self.features(caffe_preprocess(rgb), training=False)
        return [tf.cast(f, tf.float32) for f in taps]  # no-ops unless precision is "bf16"

    def _distance(self, taps_a: list, hats_b: list):
        """Per sample, summed over the taps: `tap_distance` of `a`'s taps to `b`'s, the latter
        already channel-normalised (a target shared by several pairs is normalised once)."""
        return sum(tap_distance(a, b_hat, w) for a, b_hat, w in zip(taps_a, hats_b, self.lin))

    def compute_output_shape(self, pred_shape, target_shape=None):
        return (pred_shape[0],)
