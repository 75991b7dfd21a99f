"""Building blocks of FastGAN, with the semantics of the authors' PyTorch code.

Everything here is channels-last (NHWC) and works under the ``mixed_float16`` policy: weights stay
float32, convolutions run in the compute dtype, and statistics (spectral norm, batch norm) are
computed in float32.

Three details decide whether a port behaves like the reference, so they are explicit here:

* ``SNConv2D`` is PyTorch's ``spectral_norm``: the trainable kernel is the *raw* weight, sigma is
  re-estimated by one power iteration per call and gradients flow through ``W / sigma``. (Keras's
  ``SpectralNormalization`` overwrites the kernel instead, which changes Adam's dynamics.)
* ``BatchNorm`` always normalises with the batch statistics, because the reference never puts its
  models in eval mode (not even for sampling or evaluation).
* ``NoiseInjection`` draws its noise from a checkpointed seed, so a resumed run continues with the
  same noise as an uninterrupted one.

Padding follows PyTorch's explicit zero padding (``padding=p`` pads p pixels on every side), which
TF's ``"same"`` does not reproduce for stride 2 with odd inputs.
"""

import os
import random

import numpy as np
import tensorflow as tf
import keras

from fastgan_tf.models.conv_grads import (
    conv3x3, conv_transpose_stride2, matmul_filter_gradients, upsampling_conv_transpose)

LRELU_SLOPE = 0.2
SN_EPS = 1e-12


# ---------------------------------------------------------------------------------------------
# Stateless helpers
# ---------------------------------------------------------------------------------------------


def lrelu(x):
    """LeakyReLU(0.2), the only activation in D."""
    return tf.nn.leaky_relu(x, alpha=LRELU_SLOPE)


def glu(x):
    """Gated linear unit over channels: first half * sigmoid(second half) (PyTorch's GLU order)."""
    a, b = tf.split(x, 2, axis=-1)
    return a * tf.sigmoid(b)


def swish(x):
    """x * sigmoid(x), used inside the SLE gates."""
    return x * tf.sigmoid(x)


def upsample_nearest2x(x):
    """Nearest-neighbour x2 upsampling (each pixel becomes a 2x2 block, as torch's Upsample).

    Broadcast + reshape rather than ``tf.image.resize``: the latter's gradient op
    (ResizeNearestNeighborGrad) cannot be compiled by XLA.
    """
    h, w, c = x.shape[1], x.shape[2], x.shape[3]
    x = tf.reshape(x, (-1, h, 1, w, 1, c)) * tf.ones((1, 1, 2, 1, 2, 1), dtype=x.dtype)
    return tf.reshape(x, (-1, 2 * h, 2 * w, c))


def adaptive_avg_pool(x, size):
    """torch's AdaptiveAvgPool2d(size) for inputs whose side is a multiple of ``size``."""
    x = tf.convert_to_tensor(x)
    h, w, c = x.shape[1], x.shape[2], x.shape[3]
    if h == size and w == size:
        return x
    if h % size or w % size:
        raise ValueError(f"adaptive_avg_pool needs sides divisible by {size}, got {h}x{w}")
    x = tf.reshape(x, (-1, size, h // size, size, w // size, c))
    return tf.reduce_mean(x, axis=(2, 4))


def _l2_normalize(x):
    """torch.nn.functional.normalize: x / max(||x||, eps)."""
    return x / tf.maximum(tf.norm(x), SN_EPS)


def _kernel_init():
    # A fresh initializer per variable: Keras initializers fix their seed at construction, so a
    # shared instance would give identical kernels to layers of the same shape.
    return keras.initializers.RandomNormal(mean=0.0, stddev=0.02)


def _unit_normal_init():
    """u ~ N(0, 1), then normalised (torch's spectral_norm initialisation of weight_u)."""
    normal = keras.initializers.RandomNormal(mean=0.0, stddev=1.0)

    def init(shape, dtype=None):
        u = tf.cast(normal(shape, dtype="float32"), "float32")
        return tf.cast(_l2_normalize(u), dtype or "float32")

    return init


# ---------------------------------------------------------------------------------------------
# Spectral normalisation (PyTorch semantics)
# ---------------------------------------------------------------------------------------------


class _SpectralNormMixin:
    """Shared power iteration for layers whose raw weight is ``self.kernel`` (out channels last).

    PyTorch's matrix is W = (out channels, everything else). Here ``wt = reshape(kernel, (-1, out))``
    is W transposed with its columns permuted, which changes neither sigma nor u (W W^T is the
    same), so no transpose of the kernel is needed; v is a local, its order never matters.
    ``u`` (length = out channels) is a non-trainable float32 weight, stored like torch's weight_u.
    """

    def _build_u(self, rows):
        self.u = self.add_weight(
            name="u", shape=(rows,), initializer=_unit_normal_init(), trainable=False,
            dtype="float32", autocast=False,
        )

    def _sigma(self, kernel, training):
        """One power iteration from the stored u; u is saved back only when training."""
        wt = tf.reshape(kernel, (-1, kernel.shape[-1]))  # W^T, up to a row permutation
        u = self.u.value
        v = tf.stop_gradient(_l2_normalize(tf.linalg.matvec(wt, u)))                    # W^T u
        u = tf.stop_gradient(_l2_normalize(tf.linalg.matvec(wt, v, transpose_a=True)))  # W v
        if training:
            self.u.assign(u)
        # sigma = u^T W v: the gradient flows into W here (u, v are constants), as in torch.
        return tf.tensordot(u, tf.linalg.matvec(wt, v, transpose_a=True), axes=1)

    def normalized_kernel(self, training=False):
        """W / sigma in float32 (runs one power iteration; stores u only when training)."""
        k = tf.convert_to_tensor(self.kernel)
        return k / self._sigma(k, training)


def _pixels(shape):
    """Height x width of an NHWC shape, None if either is unknown."""
    return None if shape[1] is None or shape[2] is None else shape[1] * shape[2]


class SNConv2D(_SpectralNormMixin, keras.layers.Layer):
    """Bias-free, spectrally normalised Conv2d with PyTorch's explicit zero padding.

    Args:
        filters: output channels.
        kernel_size: square kernel side.
        strides: stride (same in both directions).
        padding: pixels of zero padding on every side, as torch's ``padding=p``.

    Weights: ``kernel`` (kh, kw, in, out), the raw trainable weight, float32 even under mixed
    precision, initialised N(0, 0.02); ``u`` (out,), the persistent power-iteration vector. The
    matrix view for sigma is torch's (out, in*kh*kw) (see _SpectralNormMixin).
    """

    def __init__(self, filters, kernel_size, strides=1, padding=0, **kwargs):
        super().__init__(autocast=False, **kwargs)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.strides = int(strides)
        self.padding = int(padding)

    def build(self, input_shape):
        in_ch = int(input_shape[-1])
        k = self.kernel_size
        self.kernel = self.add_weight(
            name="kernel", shape=(k, k, in_ch, self.filters), initializer=_kernel_init(),
            trainable=True, dtype="float32", autocast=False,
        )
        self._build_u(self.filters)

    def call(self, inputs, training=False):
        kernel = self.normalized_kernel(training)
        x = tf.cast(inputs, self.compute_dtype)
        p, k, s = self.padding, self.kernel_size, self.strides
        if (k, s, p) == (3, 1, 1) and matmul_filter_gradients(
                self.compute_dtype, _pixels(self.compute_output_shape(x.shape))):
            return conv3x3(x, tf.cast(kernel, self.compute_dtype))
        if s == 1 and 2 * p == k - 1:
            padding = "SAME"  # identical to symmetric padding p for odd kernels at stride 1
        else:
            if p:
                x = tf.pad(x, [[0, 0], [p, p], [p, p], [0, 0]])
            padding = "VALID"
        return tf.nn.conv2d(x, tf.cast(kernel, self.compute_dtype), strides=s, padding=padding)

    def compute_output_shape(self, input_shape):
        def side(n):
            return None if n is None else (n + 2 * self.padding - self.kernel_size) // self.strides + 1

        return (input_shape[0], side(input_shape[1]), side(input_shape[2]), self.filters)


def fold_upsample_kernel(kernel):
    """A 3x3 conv kernel (3, 3, in, out) -> the stride-2 transposed conv's (4, 4, out, in) that
    computes the same conv after a nearest x2 upsampling (zero padding 1).

    Per axis, output row 2n sees input rows (n-1, n) with weights (k0, k1 + k2) and row 2n+1
    rows (n, n+1) with (k0 + k1, k2); as transposed-conv taps that is (k2, k1 + k2, k0 + k1,
    k0). Written as slices and sums: tf.einsum with the 0/1 fold matrices costs twice as much
    (0.27 against 0.13 s forward and backward on G's 1024-channel kernel, 2-core CPU).
    """
    def fold_axis(k, axis):
        k0, k1, k2 = tf.unstack(k, axis=axis)
        return tf.stack([k2, k1 + k2, k0 + k1, k0], axis=axis)

    return fold_axis(fold_axis(tf.transpose(kernel, [0, 1, 3, 2]), 0), 1)


class SNUpConv2D(SNConv2D):
    """Nearest x2 upsampling then a spectrally normalised 3x3 conv (padding 1), in one op.

    The same function and weights as ``SNConv2D(filters, 3, padding=1)`` applied to
    ``upsample_nearest2x(x)`` (equal to float32 rounding, the sums being regrouped), computed as
    a stride-2 transposed convolution with the 3x3 kernel folded into 4x4: 16 instead of 36
    multiply-adds per output pixel and input channel, and no 4x-sized upsampled copy of the
    input kept for the backward pass. The reference pays for both; the decoders and G's up
    blocks are most of a step's FLOPs at narrow widths. Weights as SNConv2D's (checkpoints are
    unchanged).
    """

    def __init__(self, filters, **kwargs):
        super().__init__(filters, 3, padding=1, **kwargs)

    def call(self, inputs, training=False):
        kernel = self.normalized_kernel(training)  # (3, 3, in, out), float32
        folded = fold_upsample_kernel(kernel)  # (4, 4, out, in)
        x = tf.cast(inputs, self.compute_dtype)
        folded = tf.cast(folded, self.compute_dtype)
        output_shape = self.compute_output_shape(x.shape)
        if matmul_filter_gradients(self.compute_dtype, _pixels(output_shape)):
            y = conv_transpose_stride2(x, folded)
        else:
            y = upsampling_conv_transpose(x, folded)
        return tf.ensure_shape(y, output_shape)

    def compute_output_shape(self, input_shape):
        def side(n):
            return None if n is None else 2 * n

        return (input_shape[0], side(input_shape[1]), side(input_shape[2]), self.filters)


class SNLatentConvTranspose(_SpectralNormMixin, keras.layers.Layer):
    """G's ``init`` layer: ConvTranspose2d(nz, filters, 4, stride 1, pad 0) applied to z as 1x1 map.

    On a 1x1 input that transposed conv is a dense map: out[b, i, j, o] = sum_c z[b, c] * K[c, i, j, o].
    ``kernel`` has shape (nz, size, size, filters), i.e. torch's (in, out, kh, kw) weight permuted,
    so the parameter count is nz*size*size*filters like the reference. Spectral norm uses torch's
    ConvTranspose matrix view (dim=1): out channels as rows, (filters, nz*size*size).
    """

    def __init__(self, filters, size=4, **kwargs):
        super().__init__(autocast=False, **kwargs)
        self.filters = int(filters)
        self.size = int(size)

    def build(self, input_shape):
        self.nz = int(input_shape[-1])
        self.kernel = self.add_weight(
            name="kernel", shape=(self.nz, self.size, self.size, self.filters),
            initializer=_kernel_init(), trainable=True, dtype="float32", autocast=False,
        )
        self._build_u(self.filters)

    def call(self, z, training=False):
        kernel = self.normalized_kernel(training)
        flat = tf.reshape(tf.cast(kernel, self.compute_dtype), (self.nz, -1))
        y = tf.matmul(tf.cast(z, self.compute_dtype), flat)
        return tf.reshape(y, (-1, self.size, self.size, self.filters))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.size, self.size, self.filters)


# ---------------------------------------------------------------------------------------------
# Normalisation and noise
# ---------------------------------------------------------------------------------------------


def _channel_sums(x):
    """Per-channel float64 sums of a channels-last float32 tensor, to float32 accuracy.

    One float32 accumulation over the 500k values of an 8x256x256 batch is off by ~5e-6 relative
    (tf.nn.moments; PyTorch's float32 is off by 1e-7). Here each row of the second-to-last axis
    (at most the image width) is summed in float32 and those short sums in float64: the result is
    within float32 rounding, without a float64 copy of ``x``, and faster than tf.nn.moments on
    CPU (benchmarks/bn_moments.py).
    """
    if x.shape.rank > 2:
        x = tf.reduce_sum(x, axis=-2)
    return tf.reduce_sum(tf.cast(x, tf.float64), axis=list(range(x.shape.rank - 1)))


def _sum_over_replicas(sums, synchronized):
    """``sums`` (float64, per channel and a count last) over every replica when synchronized."""
    context = tf.distribute.get_replica_context()
    if not synchronized or context is None or context.num_replicas_in_sync == 1:
        return sums
    return context.all_reduce(tf.distribute.ReduceOp.SUM, sums)


def batch_moments(x, synchronized=False):
    """(mean, biased variance, count) per channel of channels-last float32 ``x``, in two passes.

    The variance is the mean of (x - mean)^2 around the first pass's mean, never E[x^2] - E[x]^2,
    which cancels catastrophically when the mean is far from zero. ``synchronized`` (under
    tf.distribute) all-reduces each pass's float64 sums and the count, so every replica gets the
    statistics of the whole global batch, to the same accuracy as on one device. mean and
    variance are float32, count (the values per statistic) float64.
    """
    count = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), tf.float64)
    totals = _sum_over_replicas(tf.concat([_channel_sums(x), [count]], axis=0), synchronized)
    count = totals[-1]
    mean = totals[:-1] / count
    # The gradient through the mean's use here is zero (the deviations sum to 0), as in
    # tf.nn.moments. squared_difference, unlike square(x - mean), keeps no copy of the deviations
    # for the backward pass (it recomputes them from x, which BatchNorm keeps anyway): one
    # activation-sized tensor less per BatchNorm; the same values, gradients to float32 rounding.
    squares = _sum_over_replicas(
        _channel_sums(tf.math.squared_difference(x, tf.cast(tf.stop_gradient(mean), x.dtype))),
        synchronized)
    return tf.cast(mean, x.dtype), tf.cast(squares / count, x.dtype), count


def op_determinism() -> bool:
    """Whether ``tf.config.experimental.enable_op_determinism`` is in force (TensorFlow has no
    public getter; without its private one, ``TF_DETERMINISTIC_OPS`` decides)."""
    try:
        from tensorflow.python.framework import config as tf_config
        return bool(tf_config.is_op_determinism_enabled())
    except (ImportError, AttributeError):
        return os.environ.get("TF_DETERMINISTIC_OPS", "").lower() in ("1", "true")


# The fused op's bfloat16 kernel computes 16 channels at a time: with a multiple of 16 it took
# 0.35-0.46x the exact path's time, with 4 to 40 channels otherwise 2.8-10x longer (8 x 128 x
# 128 inputs, forward and backward; an Intel Xeon with AMX; benchmarks/batch_norm.py).
FUSED_CHANNEL_MULTIPLE = 16


def fused_batch_norm(dtype, shape, replicas=1) -> bool:
    """Whether BatchNorm runs as TensorFlow's fused op: bfloat16 NHWC inputs whose channels are
    a multiple of FUSED_CHANNEL_MULTIPLE, on a CPU (no GPU visible), statistics of one replica,
    op determinism off.

    There the exact float32 path's casts and reductions were most of a bfloat16 step's
    elementwise time, and the fused op's statistics (float32 accumulations of the bfloat16
    values, relative error ~1e-4) are far finer than bfloat16's own rounding (4e-3). Everywhere
    else BatchNorm keeps ``batch_moments`` (float32 to within rounding, synchronized across
    replicas, deterministic); on GPUs the fused op's bfloat16 kernels have never run here.
    """
    shape = tf.TensorShape(shape)
    return (tf.as_dtype(dtype) == tf.bfloat16 and shape.rank == 4
            and shape[-1] is not None and shape[-1] % FUSED_CHANNEL_MULTIPLE == 0
            and replicas == 1 and not op_determinism()
            and not tf.config.list_logical_devices("GPU"))


class BatchNorm(keras.layers.BatchNormalization):
    """BatchNorm that always normalises with the batch statistics (the reference is never in eval).

    ``training=True`` also updates the moving averages with PyTorch's semantics: momentum 0.9 in
    Keras's convention (torch's 0.1) and the *unbiased* batch variance (x n / (n - 1), n the
    values per statistic, over all replicas when synchronized). They are never used for
    normalisation (only a user who switches to inference gets them) and are kept so that
    checkpoints and exports carry torch's values. ``training=False`` changes no state, so
    sampling with G mutates nothing. Statistics are computed in float32 from float64 sums
    (``batch_moments``), also under float16 mixed precision; in bfloat16 on a CPU the fused op
    accumulates them in float32 (``fused_batch_norm``). ``sync=True`` computes them over all
    tf.distribute replicas.
    """

    def __init__(self, sync=False, **kwargs):
        super().__init__(
            momentum=0.9, epsilon=1e-5,
            gamma_initializer=keras.initializers.RandomNormal(mean=1.0, stddev=0.02),
            beta_initializer="zeros", synchronized=sync, **kwargs,
        )

    def call(self, inputs, training=False):
        if fused_batch_norm(self.compute_dtype, inputs.shape, self._replicas()):
            return self._fused_call(inputs, training)
        x = tf.cast(inputs, "float32")
        mean, variance, count = batch_moments(x, synchronized=self.synchronized)
        if training and self.trainable:
            unbiased = variance * tf.cast(count / tf.maximum(count - 1.0, 1.0), variance.dtype)
            self._update_moving_statistics(mean, unbiased)
        y = tf.nn.batch_normalization(
            x, mean, variance, offset=self.beta, scale=self.gamma, variance_epsilon=self.epsilon
        )
        return tf.cast(y, self.compute_dtype)

    def _replicas(self):
        """How many replicas share the statistics: 1 unless synchronized under tf.distribute."""
        context = tf.distribute.get_replica_context()
        return context.num_replicas_in_sync if self.synchronized and context else 1

    def _fused_call(self, inputs, training):
        """TensorFlow's fused op in the compute dtype: statistics accumulated in float32, the
        variance it returns already unbiased (a single value keeps 0)."""
        empty = tf.zeros((0,), "float32")
        y, mean, unbiased, *_ = tf.raw_ops.FusedBatchNormV3(
            x=tf.cast(inputs, self.compute_dtype), scale=self.gamma, offset=self.beta,
            mean=empty, variance=empty, epsilon=self.epsilon, is_training=True)
        if training and self.trainable:
            self._update_moving_statistics(mean, unbiased)
        return y

    def _update_moving_statistics(self, mean, unbiased):
        """torch's running averages, of the mean and of the unbiased variance."""
        m = self.momentum
        self.moving_mean.assign(self.moving_mean * m + mean * (1.0 - m))
        self.moving_variance.assign(self.moving_variance * m + unbiased * (1.0 - m))


def derive_seed(base_seed, index):
    """A 31-bit per-layer seed from a model seed and a layer index (collisions are negligible)."""
    state = np.random.SeedSequence([int(base_seed), int(index)]).generate_state(1, dtype=np.uint32)
    return int(state[0] >> 1)


class NoiseInjection(keras.layers.Layer):
    """x + weight * N(0, 1) noise of shape (B, H, W, 1), broadcast over channels.

    ``weight`` is one trainable scalar initialised to 0 (so the layer starts as the identity).
    The noise is drawn with ``tf.random.stateless_normal`` from ``seed_state``, a non-trainable int64
    weight [layer_seed, counter] that tf.train.Checkpoint saves:

    * training=True: use seed_state, then advance its counter (fresh noise every training call);
    * training=False: use seed_state without advancing it;
    * noise_seed given (int tensor of shape [2]): use a seed folded from noise_seed and ``index``
      and change no state, for reproducible sampling/evaluation.

    Under tf.distribute each replica folds in its replica id, so replicas draw different noise.
    """

    def __init__(self, index=0, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.index = int(index)
        self.initial_seed = int(seed) if seed is not None else random.getrandbits(31)

    def build(self, input_shape):
        self.weight = self.add_weight(
            name="weight", shape=(), initializer="zeros", trainable=True, dtype="float32",
            autocast=False,
        )
        initial = [self.initial_seed, 0]
        self.seed_state = self.add_weight(
            name="seed_state", shape=(2,), dtype="int64", trainable=False,
            initializer=lambda shape, dtype=None: tf.constant(initial, dtype="int64"),
        )

    def call(self, x, training=False, noise_seed=None):
        if noise_seed is not None:
            seed = tf.random.experimental.stateless_fold_in(
                tf.cast(noise_seed, "int64"), self.index
            )
        else:
            seed = tf.convert_to_tensor(self.seed_state)
            if training:
                self.seed_state.assign_add(tf.constant([0, 1], dtype="int64"))
        ctx = tf.distribute.get_replica_context()
        if ctx is not None and ctx.num_replicas_in_sync > 1:
            seed = tf.random.experimental.stateless_fold_in(seed, ctx.replica_id_in_sync_group)
        shape = tf.concat([tf.shape(x)[:3], [1]], axis=0)
        noise = tf.random.stateless_normal(shape, seed=seed, dtype="float32")
        return x + tf.cast(self.weight * noise, x.dtype)


# ---------------------------------------------------------------------------------------------
# Generator blocks
# ---------------------------------------------------------------------------------------------


class Block(keras.layers.Layer):
    """A layer made only of sub-layers: they create their variables on the first eager call.

    Skipping Keras's default build (a symbolic trace of ``call``) roughly halves model build time.
    """

    def build(self, input_shape=None):
        self.built = True



class SLE(Block):
    """Skip-layer excitation (the reference's ``SEBlock``): a low-res feature gates a high-res one.

    gate = sigmoid(conv1x1(swish(conv4x4_valid(adaptive_avg_pool(small, 4)))))  -> (B, 1, 1, C_big)
    output = big * gate (per channel; no residual).
    """

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        self.conv_4x4 = SNConv2D(channels, 4, name="conv_4x4")
        self.conv_1x1 = SNConv2D(channels, 1, name="conv_1x1")

    def call(self, small, big, training=False):
        g = adaptive_avg_pool(small, 4)
        g = swish(self.conv_4x4(g, training=training))
        g = tf.sigmoid(self.conv_1x1(g, training=training))
        return big * tf.cast(g, big.dtype)


class UpBlock(Block):
    """Simple up block: nearest x2 -> conv3x3 (-> 2*out) -> BN -> GLU. Also the decoders' ``up``."""

    def __init__(self, channels, sync_bn=False, **kwargs):
        super().__init__(**kwargs)
        self.conv = SNUpConv2D(2 * channels, name="conv")
        self.bn = BatchNorm(sync=sync_bn, name="bn")

    def call(self, x, training=False, noise_seed=None):
        x = self.conv(x, training=training)
        return glu(self.bn(x, training=training))


class UpBlockComp(Block):
    """Up block with two convs and noise:
    nearest x2 -> conv3x3 -> noise -> BN -> GLU -> conv3x3 -> noise -> BN -> GLU.

    ``noise_index`` numbers the first NoiseInjection (the second is noise_index + 1);
    ``seeds`` gives their initial seeds (None -> drawn from Python's ``random``).
    """

    def __init__(self, channels, sync_bn=False, noise_index=0, seeds=(None, None), **kwargs):
        super().__init__(**kwargs)
        self.conv1 = SNUpConv2D(2 * channels, name="conv1")
        self.noise1 = NoiseInjection(noise_index, seeds[0], name="noise1")
        self.bn1 = BatchNorm(sync=sync_bn, name="bn1")
        self.conv2 = SNConv2D(2 * channels, 3, padding=1, name="conv2")
        self.noise2 = NoiseInjection(noise_index + 1, seeds[1], name="noise2")
        self.bn2 = BatchNorm(sync=sync_bn, name="bn2")

    def call(self, x, training=False, noise_seed=None):
        x = self.conv1(x, training=training)
        x = glu(self.bn1(self.noise1(x, training=training, noise_seed=noise_seed), training=training))
        x = self.conv2(x, training=training)
        return glu(self.bn2(self.noise2(x, training=training, noise_seed=noise_seed), training=training))


# ---------------------------------------------------------------------------------------------
# Discriminator blocks
# ---------------------------------------------------------------------------------------------


class DownBlock(Block):
    """conv4x4 stride 2 (pad 1) -> BN -> LeakyReLU."""

    def __init__(self, channels, sync_bn=False, **kwargs):
        super().__init__(**kwargs)
        self.conv = SNConv2D(channels, 4, strides=2, padding=1, name="conv")
        self.bn = BatchNorm(sync=sync_bn, name="bn")

    def call(self, x, training=False):
        return lrelu(self.bn(self.conv(x, training=training), training=training))


class DownBlockComp(Block):
    """Residual down block, the mean of two branches:

    main:   conv4x4 s2 -> BN -> LReLU -> conv3x3 s1 -> BN -> LReLU
    direct: avgpool 2x2 -> conv1x1 -> BN -> LReLU
    """

    def __init__(self, channels, sync_bn=False, **kwargs):
        super().__init__(**kwargs)
        self.conv1 = SNConv2D(channels, 4, strides=2, padding=1, name="conv1")
        self.bn1 = BatchNorm(sync=sync_bn, name="bn1")
        self.conv2 = SNConv2D(channels, 3, padding=1, name="conv2")
        self.bn2 = BatchNorm(sync=sync_bn, name="bn2")
        self.conv_direct = SNConv2D(channels, 1, name="conv_direct")
        self.bn_direct = BatchNorm(sync=sync_bn, name="bn_direct")

    def call(self, x, training=False):
        main = lrelu(self.bn1(self.conv1(x, training=training), training=training))
        main = lrelu(self.bn2(self.conv2(main, training=training), training=training))
        direct = tf.nn.avg_pool2d(x, 2, 2, "VALID")
        direct = lrelu(self.bn_direct(self.conv_direct(direct, training=training), training=training))
        return (main + direct) / 2


class DownFromBig(Block):
    """D's stem on the full-resolution image; ends at 256x256 for resolutions >= 256.

    * 1024: conv4x4 s2 (-> widths[512]) -> LReLU -> conv4x4 s2 (-> widths[256]) -> BN -> LReLU
    * 512:  conv4x4 s2 (-> widths[256]) -> LReLU
    * <= 256: conv3x3 s1 (-> widths[resolution]) -> LReLU (the reference's 256 stem, reused for
      the truncated 128 and 64 models)

    ``widths`` maps spatial size -> channels.
    """

    def __init__(self, resolution, widths, sync_bn=False, **kwargs):
        super().__init__(**kwargs)
        self.resolution = resolution
        if resolution == 1024:
            self.conv1 = SNConv2D(widths[512], 4, strides=2, padding=1, name="conv1")
            self.conv2 = SNConv2D(widths[256], 4, strides=2, padding=1, name="conv2")
            self.bn2 = BatchNorm(sync=sync_bn, name="bn2")
        elif resolution == 512:
            self.conv1 = SNConv2D(widths[256], 4, strides=2, padding=1, name="conv1")
        else:
            self.conv1 = SNConv2D(widths[resolution], 3, padding=1, name="conv1")

    def call(self, x, training=False):
        x = lrelu(self.conv1(x, training=training))
        if self.resolution == 1024:
            x = lrelu(self.bn2(self.conv2(x, training=training), training=training))
        return x


class BigLogitHead(Block):
    """``rf_big``: conv1x1 (-> hidden) -> BN -> LReLU -> conv4x4 valid (-> 1): 8x8 -> 5x5 logits."""

    def __init__(self, hidden, sync_bn=False, **kwargs):
        super().__init__(**kwargs)
        self.conv = SNConv2D(hidden, 1, name="conv")
        self.bn = BatchNorm(sync=sync_bn, name="bn")
        self.conv_out = SNConv2D(1, 4, name="conv_out")

    def call(self, x, training=False):
        x = lrelu(self.bn(self.conv(x, training=training), training=training))
        return self.conv_out(x, training=training)


DECODER_WIDTHS = {16: 128, 32: 64, 64: 64, 128: 32}  # the reference's base-32 table, fixed


class SimpleDecoder(Block):
    """D's reconstruction decoder: 8x8 feature -> image at ``out_resolution`` in [-1, 1].

    adaptive avg pool 8x8 (identity on the 8x8 features D feeds it) -> UpBlock per x2 step with the
    fixed widths {16: 128, 32: 64, 64: 64, 128: 32} (independent of ndf, as in the reference) ->
    conv3x3 (-> ``channels``, 3 in the reference) -> tanh. The output is float32.
    """

    def __init__(self, out_resolution=128, sync_bn=False, channels=3, **kwargs):
        super().__init__(**kwargs)
        self.out_resolution = out_resolution
        self.sizes = [s for s in (16, 32, 64, 128) if s <= out_resolution]
        # One attribute per block, not a list: tf.train.Checkpoint does not see layers held in a
        # Keras-tracked Python list (they would silently be left out of checkpoints).
        for s in self.sizes:
            setattr(self, f"up_{s}", UpBlock(DECODER_WIDTHS[s], sync_bn=sync_bn, name=f"up_{s}"))
        self.to_rgb = SNConv2D(channels, 3, padding=1, name="to_rgb")  # name kept for checkpoints

    @property
    def ups(self):
        return [getattr(self, f"up_{s}") for s in self.sizes]

    def call(self, x, training=False):
        x = adaptive_avg_pool(x, 8)
        for up in self.ups:
            x = up(x, training=training)
        return tf.tanh(tf.cast(self.to_rgb(x, training=training), "float32"))
