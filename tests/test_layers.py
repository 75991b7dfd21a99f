"""Building blocks against hand-computed numpy references (PyTorch semantics)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import keras

from fastgan_tf.models import layers as L

# ------------------------------------------------------------------------------------------------
# numpy references
# ------------------------------------------------------------------------------------------------


def np_normalize(x):
    return x / max(np.linalg.norm(x), 1e-12)


def torch_view(kernel):
    """Conv2d kernel (kh, kw, in, out) -> torch's SN matrix (out, in*kh*kw)."""
    return np.transpose(kernel, (3, 2, 0, 1)).reshape(kernel.shape[-1], -1)


def np_power_step(w, u):
    """One torch power iteration: returns (u_new, v, sigma)."""
    v = np_normalize(w.T @ u)
    u = np_normalize(w @ v)
    return u, v, float(u @ w @ v)


def np_conv(x, k, stride=1, pad=0):
    """Cross-correlation of NHWC x with (kh, kw, in, out) k after explicit zero padding."""
    x = np.pad(x, [(0, 0), (pad, pad), (pad, pad), (0, 0)])
    kh, kw = k.shape[:2]
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))  # B,H',W',C,kh,kw
    win = win[:, ::stride, ::stride]
    return np.einsum("bhwcij,ijco->bhwo", win, k)


def np_bn(x, gamma, beta, eps=1e-5):
    mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def np_bn_input_gradient(x, gamma, loss_grad, eps=1e-5):
    """d loss / d x of BatchNorm on batch statistics (beta = 0); d loss / d y = loss_grad(y)."""
    normalized = (x - x.mean(axis=(0, 1, 2))) / np.sqrt(x.var(axis=(0, 1, 2)) + eps)
    dx_hat = loss_grad(gamma * normalized) * gamma
    return (dx_hat - dx_hat.mean(axis=(0, 1, 2))
            - normalized * (dx_hat * normalized).mean(axis=(0, 1, 2))) / np.sqrt(
                x.var(axis=(0, 1, 2)) + eps)


def np_sigmoid(x):
    return 1 / (1 + np.exp(-x))


def np_glu(x):
    c = x.shape[-1] // 2
    return x[..., :c] * np_sigmoid(x[..., c:])


def np_lrelu(x):
    return np.where(x > 0, x, 0.2 * x)


def np_sn_kernel(layer):
    """W / sigma for an SN conv layer after one power step from its stored u (no state change)."""
    k = layer.kernel.numpy().astype(np.float64)
    _, _, sigma = np_power_step(torch_view(k), layer.u.numpy().astype(np.float64))
    return k / sigma


def kernel_with_singular_values(shape, s, rng):
    """A conv kernel whose torch matrix view has singular values s (fast power-iteration tests)."""
    kh, kw, cin, cout = shape
    a, _ = np.linalg.qr(rng.normal(size=(cout, cout)))
    b, _ = np.linalg.qr(rng.normal(size=(cin * kh * kw, cout)))
    w = a @ np.diag(s) @ b.T  # (out, in*kh*kw)
    return np.transpose(w.reshape(cout, cin, kh, kw), (2, 3, 1, 0)).astype(np.float32)


def built_conv(filters, k, cin, strides=1, padding=0):
    layer = L.SNConv2D(filters, k, strides=strides, padding=padding)
    layer.build((None, None, None, cin))
    return layer


# ------------------------------------------------------------------------------------------------
# SNConv2D
# ------------------------------------------------------------------------------------------------


def test_snconv_weights_are_float32_raw_kernel_and_unit_u():
    layer = built_conv(64, 3, 64)
    assert layer.kernel.trainable and layer.kernel.dtype == "float32"
    assert not layer.u.trainable and layer.u.dtype == "float32" and layer.u.shape == (64,)
    assert np.linalg.norm(layer.u.numpy()) == pytest.approx(1.0, abs=1e-6)
    k = layer.kernel.numpy()
    assert abs(k.mean()) < 2e-3 and k.std() == pytest.approx(0.02, rel=0.05)
    assert [w.name for w in layer.trainable_weights] == ["kernel"]  # no bias


def test_snconv_sigma_converges_to_largest_singular_value(rng):
    layer = built_conv(4, 3, 3)
    layer.kernel.assign(kernel_with_singular_values((3, 3, 3, 4), [3.0, 1.5, 0.5, 0.1], rng))
    for _ in range(30):
        wn = layer.normalized_kernel(training=True).numpy()
    k = layer.kernel.numpy()
    sigma = np.linalg.svd(torch_view(k.astype(np.float64)), compute_uv=False)[0]
    assert sigma == pytest.approx(3.0, rel=1e-5)
    np.testing.assert_allclose(k / wn, sigma, rtol=1e-5)
    assert np.linalg.svd(torch_view(wn), compute_uv=False)[0] == pytest.approx(1.0, rel=1e-5)


def test_snconv_one_call_is_one_power_iteration_and_output_matches(rng):
    layer = built_conv(5, 3, 2, padding=1)
    x = rng.normal(size=(2, 6, 6, 2)).astype(np.float32)
    k = layer.kernel.numpy().astype(np.float64)
    u0 = layer.u.numpy().astype(np.float64)
    u1, _, sigma = np_power_step(torch_view(k), u0)
    y = layer(x, training=True).numpy()
    np.testing.assert_allclose(layer.u.numpy(), u1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y, np_conv(x, k / sigma, pad=1), rtol=1e-4, atol=1e-5)
    u2, _, sigma2 = np_power_step(torch_view(k), u1)
    layer(x, training=True)
    np.testing.assert_allclose(layer.u.numpy(), u2, rtol=1e-5, atol=1e-6)


def test_snconv_does_not_update_u_when_not_training(rng):
    layer = built_conv(4, 3, 3, padding=1)
    x = rng.normal(size=(1, 5, 5, 3)).astype(np.float32)
    u0 = layer.u.numpy().copy()
    y = layer(x, training=False).numpy()
    np.testing.assert_array_equal(layer.u.numpy(), u0)
    # the call still normalises with one power step from the stored u
    np.testing.assert_allclose(y, np_conv(x, np_sn_kernel(layer), pad=1), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "k,stride,pad,size",
    [(4, 2, 1, 8), (4, 2, 1, 7), (3, 1, 1, 6), (3, 1, 1, 5), (1, 1, 0, 4), (4, 1, 0, 8), (4, 1, 0, 4)],
)
def test_snconv_padding_matches_explicit_zero_pad(rng, k, stride, pad, size):
    layer = built_conv(3, k, 2, strides=stride, padding=pad)
    x = rng.normal(size=(2, size, size, 2)).astype(np.float32)
    ref = np_conv(x, np_sn_kernel(layer), stride=stride, pad=pad)
    y = layer(x, training=False).numpy()
    assert y.shape == ref.shape
    assert y.shape[1:3] == layer.compute_output_shape(x.shape)[1:3]
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5)


def test_snconv_gradient_flows_through_sigma(rng):
    """d/dK of sum(R * conv(x, K / (u^T W(K) v))) with u, v constants, by finite differences."""
    layer = built_conv(3, 3, 2, padding=1)
    x = rng.normal(size=(1, 4, 4, 2))
    k = layer.kernel.numpy().astype(np.float64)
    u, v, sigma = np_power_step(torch_view(k), layer.u.numpy().astype(np.float64))
    # weights correlated with the output, so that the sigma term of the gradient is large
    r = np_conv(x, k / sigma, pad=1) + 0.1 * rng.normal(size=(1, 4, 4, 3))

    def loss(kk):
        sigma = u @ torch_view(kk) @ v
        return float(np.sum(r * np_conv(x, kk / sigma, pad=1)))

    with tf.GradientTape() as tape:
        y = layer(x.astype(np.float32), training=False)
        total = tf.reduce_sum(tf.constant(r, tf.float32) * y)
    grad = tape.gradient(total, layer.kernel).numpy()
    fd = np.zeros_like(k)
    eps = 1e-6
    for idx in np.ndindex(k.shape):
        kp, km = k.copy(), k.copy()
        kp[idx] += eps
        km[idx] -= eps
        fd[idx] = (loss(kp) - loss(km)) / (2 * eps)
    np.testing.assert_allclose(grad, fd, rtol=2e-3, atol=2e-3 * np.abs(fd).max())
    # and it is not the gradient with sigma held constant
    const = np.zeros_like(k)
    for idx in np.ndindex(k.shape):
        e = np.zeros_like(k)
        e[idx] = 1.0
        const[idx] = np.sum(r * np_conv(x, e / sigma, pad=1))
    assert np.abs(const - fd).max() > 0.05 * np.abs(fd).max()


def test_snconv_keeps_float32_kernel_under_mixed_precision(rng):
    keras.mixed_precision.set_global_policy("mixed_float16")
    layer = L.SNConv2D(4, 3, padding=1)
    y = layer(rng.normal(size=(1, 4, 4, 2)).astype(np.float32), training=True)
    assert y.dtype == tf.float16
    assert layer.kernel.dtype == "float32" and layer.u.dtype == "float32"
    k = layer.kernel.numpy()
    assert np.any(k.astype(np.float16).astype(np.float32) != k)  # not quantised to fp16


# ------------------------------------------------------------------------------------------------
# G's init layer: ConvTranspose2d(nz, C, 4) on a 1x1 map
# ------------------------------------------------------------------------------------------------


def test_fold_upsample_kernel_by_hand():
    k = tf.reshape(tf.range(9.0), (3, 3, 1, 1))  # rows (0 1 2), (3 4 5), (6 7 8)
    # per axis (k2, k1 + k2, k0 + k1, k0): rows (6 7 8), (9 11 13), (3 5 7), (0 1 2), then columns
    want = [[8, 15, 13, 6], [13, 24, 20, 9], [7, 12, 8, 3], [2, 3, 1, 0]]
    np.testing.assert_array_equal(L.fold_upsample_kernel(k)[:, :, 0, 0], want)
    k2 = tf.reshape(tf.range(3 * 3 * 2 * 5, dtype=tf.float32), (3, 3, 2, 5))
    assert L.fold_upsample_kernel(k2).shape == (4, 4, 5, 2)  # (taps, out, in) for the transpose
    np.testing.assert_array_equal(L.fold_upsample_kernel(k2)[3, 3], tf.transpose(k2[0, 0]))


@pytest.mark.parametrize("shape", [(2, 5, 7, 3), (3, 8, 8, 16)])
def test_upconv_is_upsample_then_conv_in_values_gradients_and_u(rng, shape):
    """The folded stride-2 form computes nearest x2 + 3x3 conv: outputs, both gradients and
    the power iteration's u agree with the two-op form to float32 rounding."""
    x = tf.constant(rng.normal(size=shape).astype(np.float32))
    fused, plain = L.SNUpConv2D(6), L.SNConv2D(6, 3, padding=1)
    fused.build(x.shape)
    plain.build((None, None, None, shape[-1]))
    plain.kernel.assign(fused.kernel)
    plain.u.assign(fused.u)
    dy = tf.constant(rng.normal(size=(shape[0], 2 * shape[1], 2 * shape[2], 6)), tf.float32)
    results = []
    for layer, f in ((fused, lambda t: fused(t, training=True)),
                     (plain, lambda t: plain(L.upsample_nearest2x(t), training=True))):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = f(x)
            loss = tf.reduce_sum(y * dy)
        results.append([y, *tape.gradient(loss, [x, layer.kernel]), layer.u])
    for got, want in zip(*results):  # float32 rounding of sums whose terms reach the max
        scale = np.abs(want.numpy()).max()
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=2e-6 * scale)
    assert fused.compute_output_shape(shape) == results[0][0].shape


def test_upconv_computes_in_the_policy_dtype(rng):
    x = rng.normal(size=(2, 4, 4, 3)).astype(np.float32)
    layer = L.SNUpConv2D(4, dtype=keras.mixed_precision.DTypePolicy("mixed_bfloat16"))
    want = L.SNConv2D(4, 3, padding=1)
    layer.build(x.shape)
    want.build(x.shape)
    want.kernel.assign(layer.kernel)
    want.u.assign(layer.u)
    y = layer(x)
    assert y.dtype == tf.bfloat16 and layer.kernel.dtype == tf.float32
    expected = want(L.upsample_nearest2x(x)).numpy()  # bfloat16 keeps 8 bits of mantissa
    np.testing.assert_allclose(tf.cast(y, tf.float32).numpy(), expected,
                               rtol=0.02, atol=0.02 * np.abs(expected).max())


def test_latent_conv_transpose_is_a_conv_transpose_with_torch_sn_view(rng):
    nz, c = 6, 5
    layer = L.SNLatentConvTranspose(c, size=4)
    z = rng.normal(size=(3, nz)).astype(np.float32)
    layer(z, training=False)
    assert layer.kernel.shape == (nz, 4, 4, c)
    assert sum(int(np.prod(w.shape)) for w in layer.trainable_weights) == nz * 16 * c
    k = layer.kernel.numpy().astype(np.float64)
    w_rows_out = np.transpose(k, (3, 0, 1, 2)).reshape(c, -1)       # torch dim=1: out channels
    w_rows_in = k.reshape(nz, -1)                                   # dim=0 view (not used)
    u1, _, sigma = np_power_step(w_rows_out, layer.u.numpy().astype(np.float64))
    y = layer(z, training=True).numpy()
    np.testing.assert_allclose(layer.u.numpy(), u1, rtol=1e-5, atol=1e-6)
    # equal to a real transposed convolution of the 1x1 map with W / sigma
    filt = np.transpose(k / sigma, (1, 2, 3, 0)).astype(np.float32)  # (kh, kw, out, in)
    ref = tf.nn.conv2d_transpose(z.reshape(3, 1, 1, nz), filt, (3, 4, 4, c), 1, "VALID").numpy()
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-6)
    # after enough power iterations sigma is the top singular value of the dim=1 view
    for _ in range(300):
        wn = layer.normalized_kernel(training=True).numpy()
    s_out = np.linalg.svd(w_rows_out, compute_uv=False)[0]
    s_in = np.linalg.svd(w_rows_in, compute_uv=False)[0]
    np.testing.assert_allclose(k / wn, s_out, rtol=1e-4)
    assert abs(s_in - s_out) > 1e-3 * s_out  # the two views really differ


# ------------------------------------------------------------------------------------------------
# Stateless helpers
# ------------------------------------------------------------------------------------------------


def test_glu_swish_lrelu(rng):
    x = rng.normal(size=(2, 3, 3, 6)).astype(np.float32)
    np.testing.assert_allclose(L.glu(x).numpy(), np_glu(x), rtol=1e-6)
    np.testing.assert_allclose(L.swish(x).numpy(), x * np_sigmoid(x), rtol=1e-6)
    np.testing.assert_allclose(L.lrelu(x).numpy(), np_lrelu(x), rtol=1e-6)


def test_resampling_helpers_match_torch(rng):
    x = rng.normal(size=(2, 8, 8, 3)).astype(np.float32)
    up = np.repeat(np.repeat(x, 2, axis=1), 2, axis=2)
    np.testing.assert_array_equal(L.upsample_nearest2x(x).numpy(), up)
    pooled = x.reshape(2, 4, 2, 4, 2, 3).mean(axis=(2, 4))
    np.testing.assert_allclose(L.adaptive_avg_pool(x, 4).numpy(), pooled, rtol=1e-6)


# ------------------------------------------------------------------------------------------------
# BatchNorm
# ------------------------------------------------------------------------------------------------


def test_batchnorm_initialisation():
    bn = L.BatchNorm()
    bn.build((None, 4, 4, 2000))
    assert bn.momentum == 0.9 and bn.epsilon == 1e-5
    g = bn.gamma.numpy()
    assert g.mean() == pytest.approx(1.0, abs=3e-3) and g.std() == pytest.approx(0.02, rel=0.1)
    np.testing.assert_array_equal(bn.beta.numpy(), 0.0)


@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_always_uses_batch_statistics(rng, training):
    bn = L.BatchNorm()
    x = (3 + 2 * rng.normal(size=(4, 3, 3, 5))).astype(np.float32)
    bn.build(x.shape)
    bn.gamma.assign(rng.normal(1, 0.3, size=5).astype(np.float32))
    bn.beta.assign(rng.normal(0, 0.3, size=5).astype(np.float32))
    y = bn(x, training=training).numpy()
    np.testing.assert_allclose(y, np_bn(x, bn.gamma.numpy(), bn.beta.numpy()), rtol=1e-4, atol=1e-5)
    mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2), ddof=1)
    if training:  # torch's running stats: momentum 0.1 (Keras 0.9), the unbiased variance
        np.testing.assert_allclose(bn.moving_mean.numpy(), 0.1 * mean, rtol=1e-5)
        np.testing.assert_allclose(bn.moving_variance.numpy(), 0.9 + 0.1 * var, rtol=1e-5)
    else:
        np.testing.assert_array_equal(bn.moving_mean.numpy(), 0.0)
        np.testing.assert_array_equal(bn.moving_variance.numpy(), 1.0)


def test_batch_moments_are_float32_roundings_of_the_float64_moments(rng):
    """8 x 256 x 256 values per channel around 50: tf.nn.moments is off by ~4e-6 (mean) and
    ~3e-5 (variance) relative here; the two-pass float64 sums are within float32's rounding."""
    shape = (8, 256, 256, 8)
    x = (50 + rng.uniform(-10, 10, 8) + rng.uniform(0.5, 3, 8) * rng.normal(size=shape))
    x = x.astype(np.float32)
    mean, variance, count = L.batch_moments(tf.constant(x))
    exact = x.astype(np.float64)
    assert mean.dtype == variance.dtype == tf.float32 and float(count) == 8 * 256 * 256
    float32_ulp = np.finfo(np.float32).eps
    np.testing.assert_allclose(mean.numpy(), exact.mean(axis=(0, 1, 2)), rtol=float32_ulp, atol=0)
    np.testing.assert_allclose(variance.numpy(), exact.var(axis=(0, 1, 2)), rtol=float32_ulp,
                               atol=0)


def test_batch_moments_have_tf_nn_moments_gradient_and_compile_with_xla(rng):
    x = tf.constant((3 + 2 * rng.normal(size=(4, 8, 8, 5))).astype(np.float32))
    weights = tf.constant(rng.normal(size=(2, 5)).astype(np.float32))

    def loss_and_gradient(moments):
        with tf.GradientTape() as tape:
            tape.watch(x)
            mean, variance = moments(x)[:2]
            loss = tf.reduce_sum(weights[0] * mean + weights[1] * tf.math.rsqrt(variance + 1e-5))
        return loss, tape.gradient(loss, x)

    expected = loss_and_gradient(lambda t: tf.nn.moments(t, axes=[0, 1, 2]))
    for compiled in (False, True):
        got = tf.function(lambda: loss_and_gradient(L.batch_moments), jit_compile=compiled)()
        np.testing.assert_allclose(got[0].numpy(), expected[0].numpy(), rtol=1e-6)
        np.testing.assert_allclose(got[1].numpy(), expected[1].numpy(), rtol=1e-4, atol=1e-8)


def test_batchnorm_float16_input_computes_in_float32(rng):
    keras.mixed_precision.set_global_policy("mixed_float16")
    bn = L.BatchNorm()
    x = (300 + 50 * rng.normal(size=(4, 8, 8, 3))).astype(np.float16)
    y = bn(x, training=True)
    assert y.dtype == tf.float16 and bn.gamma.dtype == "float32"
    ref = np_bn(x.astype(np.float32), bn.gamma.numpy(), bn.beta.numpy())
    np.testing.assert_allclose(y.numpy().astype(np.float32), ref, atol=2e-2)
    exact = x.astype(np.float64)
    assert bn.moving_mean.dtype == bn.moving_variance.dtype == "float32"
    np.testing.assert_allclose(bn.moving_mean.numpy(), 0.1 * exact.mean(axis=(0, 1, 2)), rtol=1e-6)
    np.testing.assert_allclose(bn.moving_variance.numpy(),
                               0.9 + 0.1 * exact.var(axis=(0, 1, 2), ddof=1), rtol=1e-6)


def test_fused_batch_norm_only_in_bfloat16_on_one_cpu_replica_without_op_determinism(monkeypatch):
    monkeypatch.setattr(L, "op_determinism", lambda: False)  # whatever an earlier test left
    nhwc = (8, 32, 32, 48)
    assert L.fused_batch_norm(tf.bfloat16, nhwc) and L.fused_batch_norm("bfloat16", nhwc, replicas=1)
    assert L.fused_batch_norm("bfloat16", (None, None, None, 16))
    assert not L.fused_batch_norm("float32", nhwc)
    assert not L.fused_batch_norm("float16", nhwc)
    assert not L.fused_batch_norm("bfloat16", (8, 48))
    assert not L.fused_batch_norm("bfloat16", tf.TensorShape(None))  # unknown rank
    assert not L.fused_batch_norm("bfloat16", nhwc, replicas=2)
    for channels in (4, 8, 24, 40, None):  # the fused op was slower (or unknown)
        assert not L.fused_batch_norm("bfloat16", (8, 32, 32, channels))
    with monkeypatch.context() as m:
        m.setattr(L, "op_determinism", lambda: True)
        assert not L.fused_batch_norm("bfloat16", nhwc)
    with monkeypatch.context() as m:
        m.setattr(tf.config, "list_logical_devices",
                  lambda kind=None: ["/device:GPU:0"] if kind == "GPU" else [])
        assert not L.fused_batch_norm("bfloat16", nhwc)


def test_op_determinism_reads_tensorflows_state():
    from tensorflow.python.framework import config as tf_config

    before = tf_config.is_op_determinism_enabled()
    try:
        tf_config.disable_op_determinism()
        assert not L.op_determinism()
        tf.config.experimental.enable_op_determinism()
        assert L.op_determinism()
    finally:
        (tf.config.experimental.enable_op_determinism if before
         else tf_config.disable_op_determinism)()


def test_batchnorm_in_bfloat16_is_the_fused_op_with_the_float32_paths_semantics(rng, monkeypatch):
    """Outputs, the three gradients and torch's running statistics of the bfloat16 values, to
    bfloat16's rounding (the statistics to float32's)."""
    monkeypatch.setattr(L, "op_determinism", lambda: False)  # whatever an earlier test left
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    x = tf.cast((3 + 2 * rng.normal(size=(4, 6, 6, 16))).astype(np.float32), tf.bfloat16)
    exact = tf.cast(x, tf.float64).numpy()
    bn = L.BatchNorm()
    bn.build(x.shape)
    gamma = rng.normal(1, 0.3, size=16)
    bn.gamma.assign(gamma.astype(np.float32))
    bn.beta.assign(rng.normal(0, 0.3, size=16).astype(np.float32))
    # bfloat16 values: the gradient reaching the layer (cast to bfloat16) is exactly this
    upstream = tf.cast(tf.cast(rng.normal(size=x.shape), tf.bfloat16), tf.float64).numpy()
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = bn(x, training=True)
        loss = tf.reduce_sum(tf.cast(y, tf.float32) * upstream.astype(np.float32))
    dx, dgamma, dbeta = tape.gradient(loss, [x, bn.gamma, bn.beta])

    assert y.dtype == dx.dtype == tf.bfloat16 and dgamma.dtype == tf.float32
    np.testing.assert_allclose(tf.cast(y, tf.float32).numpy(), np_bn(exact, gamma, bn.beta.numpy()),
                               atol=3e-2)
    expected_dx = np_bn_input_gradient(exact, gamma, lambda _: upstream)
    assert np.linalg.norm(tf.cast(dx, tf.float64).numpy() - expected_dx) <= (
        1e-2 * np.linalg.norm(expected_dx))
    normalized = np_bn(exact, 1.0, 0.0)
    np.testing.assert_allclose(dgamma.numpy(), (upstream * normalized).sum(axis=(0, 1, 2)),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dbeta.numpy(), upstream.sum(axis=(0, 1, 2)), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(bn.moving_mean.numpy(), 0.1 * exact.mean(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(),
                               0.9 + 0.1 * exact.var(axis=(0, 1, 2), ddof=1), rtol=1e-5)

    graph = tf.function(lambda v: bn(v)).get_concrete_function(
        tf.TensorSpec(x.shape, tf.bfloat16)).graph
    assert "FusedBatchNormV3" in {op.type for op in graph.get_operations()}


def test_batchnorm_in_bfloat16_keeps_a_single_values_variance_at_zero(monkeypatch):
    monkeypatch.setattr(L, "op_determinism", lambda: False)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    bn = L.BatchNorm()
    bn(tf.ones((1, 1, 1, 16), tf.bfloat16), training=True)
    np.testing.assert_allclose(bn.moving_mean.numpy(), 0.1)
    np.testing.assert_allclose(bn.moving_variance.numpy(), 0.9)


SYNC_BN = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    from fastgan_tf.models import layers as L

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    x = (40 + 3 * np.random.default_rng(0).normal(size=(4, 16, 16, 6))).astype(np.float32)

    def run(strategy, batches):
        with strategy.scope():
            bn = L.BatchNorm(sync=True)
            bn.build(x.shape)
            bn.gamma.assign(np.linspace(0.5, 1.5, 6, dtype=np.float32))

        def step(batch):
            with tf.GradientTape() as tape:
                tape.watch(batch)
                y = bn(batch, training=True)
                loss = tf.reduce_sum(y ** 3 * tf.range(6, dtype=tf.float32))
            return y, tape.gradient(loss, batch)

        outs = strategy.experimental_local_results(strategy.run(tf.function(step), (batches,)))
        y, grad = (np.concatenate([o[i].numpy() for o in outs]) for i in (0, 1))
        return dict(y=y.tolist(), grad=grad.tolist(), mean=bn.moving_mean.numpy().tolist(),
                    variance=bn.moving_variance.numpy().tolist())

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    halves = mirrored.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(x[2 * ctx.replica_id_in_sync_group:][:2]))
    one = tf.distribute.OneDeviceStrategy("/cpu:0")
    json.dump(dict(two=run(mirrored, halves), one=run(one, tf.constant(x)),
                   x=x.tolist()), sys.stdout)
""")


@pytest.mark.slow
def test_synchronized_batchnorm_over_two_replicas_matches_one_device(tmp_path):
    """~15 s (a subprocess: devices are configured once per process). Two CPU replicas of 2
    images: the same outputs, input gradients and running statistics (unbiased over all
    4 x 16 x 16 values) as one device with all 4 images."""
    script = tmp_path / "sync_bn.py"
    script.write_text(SYNC_BN)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="-1",
               PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = json.loads(done.stdout)
    two, one, x = runs["two"], runs["one"], np.asarray(runs["x"], np.float64)
    for key in ("y", "mean", "variance"):
        np.testing.assert_allclose(two[key], one[key], rtol=1e-5, atol=1e-6, err_msg=key)
    # Input gradients: float32 backward passes (mean / std ~ 13 here costs digits), summed in
    # another order on two replicas; both are as close to the float64 gradient (~1e-5).
    exact = np_bn_input_gradient(x, np.linspace(0.5, 1.5, 6), lambda y: 3 * y ** 2 * np.arange(6))
    for run in (one, two):
        assert np.linalg.norm(np.asarray(run["grad"]) - exact) <= 3e-5 * np.linalg.norm(exact)
    np.testing.assert_allclose(two["mean"], 0.1 * x.mean(axis=(0, 1, 2)), rtol=1e-6)
    np.testing.assert_allclose(two["variance"], 0.9 + 0.1 * x.var(axis=(0, 1, 2), ddof=1),
                               rtol=1e-6)


# ------------------------------------------------------------------------------------------------
# NoiseInjection
# ------------------------------------------------------------------------------------------------


def test_noise_zero_weight_is_identity(rng):
    layer = L.NoiseInjection(index=0, seed=5)
    x = rng.normal(size=(2, 4, 4, 3)).astype(np.float32)
    for kw in ({"training": True}, {"training": False}, {"noise_seed": tf.constant([1, 2])}):
        np.testing.assert_array_equal(layer(x, **kw).numpy(), x)
    assert layer.weight.trainable and layer.weight.numpy() == 0.0


def test_noise_is_deterministic_from_seed_state_and_advances_only_in_training(rng):
    layer = L.NoiseInjection(index=3, seed=77)
    x = rng.normal(size=(2, 4, 5, 3)).astype(np.float32)
    layer.build(x.shape)
    layer.weight.assign(0.7)
    assert not layer.seed_state.trainable and layer.seed_state.dtype == "int64"
    np.testing.assert_array_equal(layer.seed_state.numpy(), [77, 0])

    def expected(seed):
        n = tf.random.stateless_normal((2, 4, 5, 1), seed=tf.constant(seed, tf.int64)).numpy()
        return x + 0.7 * n

    np.testing.assert_allclose(layer(x, training=False).numpy(), expected([77, 0]), rtol=1e-6)
    np.testing.assert_array_equal(layer.seed_state.numpy(), [77, 0])
    np.testing.assert_allclose(layer(x, training=True).numpy(), expected([77, 0]), rtol=1e-6)
    np.testing.assert_array_equal(layer.seed_state.numpy(), [77, 1])
    np.testing.assert_allclose(layer(x, training=True).numpy(), expected([77, 1]), rtol=1e-6)
    np.testing.assert_array_equal(layer.seed_state.numpy(), [77, 2])
    # the noise is one map per sample, broadcast over channels
    d = layer(x, training=False).numpy() - x
    np.testing.assert_allclose(d[..., 0], d[..., 2], atol=1e-6)


def test_noise_seed_path_is_pure_and_depends_on_index(rng):
    a, b = L.NoiseInjection(index=0, seed=1), L.NoiseInjection(index=1, seed=1)
    x = rng.normal(size=(2, 4, 4, 2)).astype(np.float32)
    for layer in (a, b):
        layer.build(x.shape)
        layer.weight.assign(1.0)
    s = tf.constant([10, 20], tf.int32)
    ya = a(x, training=True, noise_seed=s).numpy()
    np.testing.assert_array_equal(a.seed_state.numpy(), [1, 0])  # no state change, even training
    np.testing.assert_array_equal(a(x, training=True, noise_seed=s).numpy(), ya)
    seed = tf.random.experimental.stateless_fold_in(tf.constant([10, 20], tf.int64), 0)
    np.testing.assert_allclose(ya - x, tf.random.stateless_normal((2, 4, 4, 1), seed=seed).numpy()
                               * np.ones((1, 1, 1, 2)), rtol=1e-6, atol=1e-7)
    assert not np.allclose(b(x, noise_seed=s).numpy(), ya)  # other layer index, other noise
    assert not np.allclose(a(x, noise_seed=tf.constant([10, 21])).numpy(), ya)


def test_noise_seed_state_round_trips_through_checkpoint(rng, tmp_path):
    x = rng.normal(size=(1, 4, 4, 2)).astype(np.float32)
    a = L.NoiseInjection(seed=3)
    a(x, training=True)
    a.weight.assign(0.5)
    path = tf.train.Checkpoint(n=a).save(str(tmp_path / "ck"))
    b = L.NoiseInjection(seed=99)
    b(x, training=False)
    tf.train.Checkpoint(n=b).restore(path).assert_consumed()
    np.testing.assert_array_equal(b.seed_state.numpy(), [3, 1])
    np.testing.assert_array_equal(b(x, training=True).numpy(), a(x, training=True).numpy())


def test_derive_seed_is_stable_and_distinct():
    seeds = [L.derive_seed(123, i) for i in range(16)]
    assert len(set(seeds)) == 16 and seeds == [L.derive_seed(123, i) for i in range(16)]
    assert all(0 <= s < 2**31 for s in seeds) and seeds[0] != L.derive_seed(124, 0)


# ------------------------------------------------------------------------------------------------
# Blocks
# ------------------------------------------------------------------------------------------------


def test_sle_matches_hand_computation(rng):
    sle = L.SLE(3)
    small = rng.normal(size=(2, 8, 8, 4)).astype(np.float32)
    big = rng.normal(size=(2, 6, 6, 3)).astype(np.float32)
    sle(small, big, training=False)
    k1, k2 = np_sn_kernel(sle.conv_4x4), np_sn_kernel(sle.conv_1x1)
    pooled = small.reshape(2, 4, 2, 4, 2, 4).mean(axis=(2, 4))       # AdaptiveAvgPool(4)
    g = np.einsum("bijc,ijco->bo", pooled, k1)                       # conv4x4 valid -> 1x1
    g = g * np_sigmoid(g)                                            # swish
    g = np_sigmoid(g @ k2[0, 0])                                     # conv1x1, sigmoid
    ref = big * g[:, None, None, :]
    np.testing.assert_allclose(sle(small, big, training=False).numpy(), ref, rtol=1e-4, atol=1e-6)


def test_upblock_and_upblockcomp_match_numpy(rng):
    x = rng.normal(size=(2, 4, 4, 6)).astype(np.float32)
    up = np.repeat(np.repeat(x, 2, axis=1), 2, axis=2)
    block = L.UpBlock(5)
    y = block(x, training=False).numpy()
    ref = np_glu(np_bn(np_conv(up, np_sn_kernel(block.conv), pad=1), block.bn.gamma.numpy(), 0))
    np.testing.assert_allclose(y, ref, rtol=1e-3, atol=1e-4)
    assert y.shape == (2, 8, 8, 5)

    comp = L.UpBlockComp(5, noise_index=0, seeds=(1, 2))
    y = comp(x, training=False).numpy()  # noise weights are 0 at init
    h = np_glu(np_bn(np_conv(up, np_sn_kernel(comp.conv1), pad=1), comp.bn1.gamma.numpy(), 0))
    ref = np_glu(np_bn(np_conv(h, np_sn_kernel(comp.conv2), pad=1), comp.bn2.gamma.numpy(), 0))
    np.testing.assert_allclose(y, ref, rtol=1e-3, atol=1e-4)
    assert [v.name for v in comp.trainable_weights].count("weight") == 2


def test_downblocks_match_numpy(rng):
    x = rng.normal(size=(2, 8, 8, 3)).astype(np.float32)
    block = L.DownBlock(4)
    y = block(x, training=False).numpy()
    ref = np_lrelu(np_bn(np_conv(x, np_sn_kernel(block.conv), 2, 1), block.bn.gamma.numpy(), 0))
    np.testing.assert_allclose(y, ref, rtol=1e-3, atol=1e-4)

    comp = L.DownBlockComp(4)
    y = comp(x, training=False).numpy()
    main = np_lrelu(np_bn(np_conv(x, np_sn_kernel(comp.conv1), 2, 1), comp.bn1.gamma.numpy(), 0))
    main = np_lrelu(np_bn(np_conv(main, np_sn_kernel(comp.conv2), 1, 1), comp.bn2.gamma.numpy(), 0))
    pooled = x.reshape(2, 4, 2, 4, 2, 3).mean(axis=(2, 4))
    direct = np_lrelu(np_bn(np_conv(pooled, np_sn_kernel(comp.conv_direct)),
                            comp.bn_direct.gamma.numpy(), 0))
    np.testing.assert_allclose(y, (main + direct) / 2, rtol=1e-3, atol=1e-4)
    assert y.shape == (2, 4, 4, 4)


def test_simple_decoder_shapes_and_range(rng):
    x = rng.normal(size=(2, 8, 8, 16)).astype(np.float32)
    for res, n_ups in ((128, 4), (64, 3), (32, 2)):
        dec = L.SimpleDecoder(res)
        y = dec(x, training=False)
        assert y.shape == (2, res, res, 3) and y.dtype == tf.float32 and len(dec.ups) == n_ups
        assert np.abs(y.numpy()).max() <= 1.0
    assert [u.conv.filters for u in L.SimpleDecoder(128).ups] == [256, 128, 128, 64]  # 2 * width
