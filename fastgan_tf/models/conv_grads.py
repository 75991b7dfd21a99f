"""Convolutions whose filter gradient is computed as a few large matrix products.

oneDNN's `Conv2DBackpropFilter`, which TensorFlow runs on x86 CPUs with `TF_ENABLE_ONEDNN_OPTS=1`
(train.py's default there), is slow at high resolution and few channels: in a 256 px step at
ngf 64 it took 4-5x longer per FLOP than the same layers' forward convolutions, 1.7-2.3 s of the
step for G's `feat_128` and `feat_256` (benchmarks/README.md). The filter gradient of a conv is
a sum over pixels of outer products of input and output gradient, i.e. a matrix product with the
batch and both spatial axes as its inner dimension; written that way it runs at GEMM speed.

Forward passes and input gradients stay TensorFlow's own ops; only the filter gradient changes,
to the same sums in another order (float32 rounding; tests/test_conv_grads.py). Used where it was
measured faster: on CPUs without AVX-512 with oneDNN on, in float32, for outputs of at least
128 x 128 pixels (`matmul_filter_gradients`). On an Intel Xeon with AVX-512 (and AMX) oneDNN's
own filter gradients were the faster ones: with the matmul form a 256 px step took 1.11x as
long at ngf 64 and at ngf 16 (benchmarks/README.md).
"""

import os

import tensorflow as tf

from fastgan_tf import cpu


# Below this many output pixels oneDNN's filter gradient is not the slow part: a 64 px, ngf 16
# step was 8 % slower with the matmul form everywhere (benchmarks/README.md).
MIN_OUTPUT_PIXELS = 128 * 128


def matmul_filter_gradients(dtype, output_pixels) -> bool:
    """Whether to use this module's convolutions: float32, oneDNN on, no GPU visible, a CPU
    without AVX-512, outputs of at least MIN_OUTPUT_PIXELS (height x width; None, unknown, counts
    as small).

    With oneDNN off (TensorFlow's Eigen kernels, e.g. under --deterministic) its filter gradient
    of a plain 3x3 conv is faster than the matmul form; with AVX-512 oneDNN's own is; on GPUs
    cuDNN's is untouched. Where the CPU's flags are not read (native Windows) the form is used.
    """
    return (tf.as_dtype(dtype) == tf.float32
            and (output_pixels or 0) >= MIN_OUTPUT_PIXELS
            and os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "1"
            and not tf.config.list_logical_devices("GPU")
            and not cpu.has_avx512())


def _serially(tensors_fn, count):
    """[tensors_fn(0), ..., tensors_fn(count - 1)], each started after the previous one is done,
    so that only one of their temporary copies exists at a time (they are activation-sized)."""
    results = []
    for i in range(count):
        with tf.control_dependencies(results[-1:]):
            results.append(tensors_fn(i))
    return results


def _pixels_by_channels(x):
    return tf.reshape(x, [-1, x.shape[-1]])


def _pad_one_pixel(x):
    """x with a border of one zero pixel around each image (NHWC)."""
    return tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])


@tf.custom_gradient
def conv3x3(x, kernel):
    """tf.nn.conv2d(x, kernel, 1, "SAME") for a (3, 3, in, out) kernel; filter gradient as nine
    products (x shifted by each tap)^T @ dy."""
    y = tf.nn.conv2d(x, kernel, strides=1, padding="SAME")

    def grad(dy):
        dx = tf.nn.conv2d_transpose(dy, kernel, tf.shape(x), strides=1, padding="SAME")
        h, w = tf.shape(x)[1], tf.shape(x)[2]
        padded = _pad_one_pixel(x)
        flat_dy = _pixels_by_channels(dy)

        def tap(t):
            i, j = divmod(t, 3)
            shifted = _pixels_by_channels(padded[:, i:i + h, j:j + w, :])
            return tf.matmul(shifted, flat_dy, transpose_a=True)  # (in, out)

        dk = tf.reshape(tf.stack(_serially(tap, 9)), kernel.shape)
        return dx, dk

    return y, grad


def upsampling_conv_transpose(x, kernel):
    """tf.nn.conv2d_transpose(x, kernel, 2x size, stride 2, "SAME"), kernel (4, 4, out, in)."""
    shape = tf.shape(x)
    out_shape = tf.stack([shape[0], 2 * shape[1], 2 * shape[2], kernel.shape[2]])
    return tf.nn.conv2d_transpose(x, kernel, out_shape, strides=2, padding="SAME")


@tf.custom_gradient
def conv_transpose_stride2(x, kernel):
    """tf.nn.conv2d_transpose(x, kernel, 2x size, stride 2, "SAME") for a (4, 4, out, in) kernel
    (`layers.SNUpConv2D`'s folded form); filter gradient as four products (x shifted by one of
    2 x 2 offsets)^T @ space_to_depth(dy), one per offset, each giving 2 x 2 kernel taps."""
    shape = tf.shape(x)
    out = kernel.shape[2]
    y = upsampling_conv_transpose(x, kernel)

    def grad(dy):
        dx = tf.nn.conv2d(dy, kernel, strides=2, padding="SAME")
        h, w = shape[1], shape[2]
        # Tap p = 2u + a of the kernel meets x[h] and dy[2h + p - 1] = padded dy[2(h + u) + a]:
        # block (h + u) of space_to_depth(padded dy), phase a.
        blocks = _pixels_by_channels(tf.nn.space_to_depth(_pad_one_pixel(dy), 2))  # (a, b, out)
        padded = _pad_one_pixel(x)

        def offset(t):
            u, v = divmod(t, 2)
            shifted = _pixels_by_channels(padded[:, 1 - u:2 - u + h, 1 - v:2 - v + w, :])
            return tf.matmul(shifted, blocks, transpose_a=True)  # (in, (a, b, out))

        g = tf.reshape(tf.stack(_serially(offset, 4)), [2, 2, x.shape[-1], 2, 2, out])
        dk = tf.reshape(tf.transpose(g, [0, 3, 1, 4, 5, 2]), [4, 4, out, x.shape[-1]])
        return dx, dk

    return y, grad
