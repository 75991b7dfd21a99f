"""Spectral Style-DCGAN baseline: parameter counts, layer semantics against numpy, losses."""

import numpy as np
import pytest
import tensorflow as tf
import keras

from fastgan_tf.models import layers as L
from fastgan_tf.models.ssd import (
    SSD_DEFAULTS, AdaIN, SSDDiscriminator, SSDGenerator, bce_d_loss, bce_g_loss,
)


def n_trainable(model):
    return sum(int(np.prod(v.shape)) for v in model.trainable_variables)


def np_lrelu(x):
    return np.where(x > 0, x, 0.2 * x)


def np_softplus(x):
    return np.logaddexp(0.0, x)


def torch_conv_transpose(x, kernel, stride, pad):
    """torch ConvTranspose2d on NHWC: scatter every input pixel times the kernel, crop `pad`.

    `kernel` is in Keras's Conv2DTranspose layout (kh, kw, out, in); torch's weight[c, o, a, b]
    is kernel[a, b, o, c].
    """
    b, h, w, _ = x.shape
    k, _, cout, _ = kernel.shape
    full = np.zeros((b, (h - 1) * stride + k, (w - 1) * stride + k, cout))
    for i in range(h):
        for j in range(w):
            full[:, i * stride:i * stride + k, j * stride:j * stride + k, :] += np.einsum(
                "nc,abOc->nabO", x[:, i, j, :], kernel
            )
    return full[:, pad:full.shape[1] - pad, pad:full.shape[2] - pad, :]


@pytest.fixture(scope="module")
def full_models():
    """Default-width G and D (nz=100, ngf=ndf=64), built once for the module."""
    g = SSDGenerator()
    d = SSDDiscriminator()
    g.build_for_restore(2)
    d.build_for_restore(2)
    return g, d


def test_defaults():
    assert SSD_DEFAULTS == {"resolution": 64, "batch_size": 32, "lr": 5e-4, "nz": 100,
                            "ngf": 64, "ndf": 64}


def test_parameter_counts_match_paper(full_models):
    g, d = full_models
    assert n_trainable(g) == 3_809_104
    assert n_trainable(d) == 2_765_568
    # Breakdown: DCGAN bias-free convs + mapping + AdaIN affines; D convs + BN on 3 layers.
    g_convs = sum(int(np.prod(u.kernel.shape)) for u in g.ups)
    assert g_convs == 3_574_784
    assert sum(int(np.prod(v.shape)) for m in g.mapping for v in m.trainable_variables) == 40_400
    assert sum(int(np.prod(v.shape)) for a in g.adains for v in a.trainable_variables) == 193_920
    assert sum(int(np.prod(c.kernel.shape)) for c in d.convs) == 2_763_776
    # Only SN's u vectors and BN moving stats are non-trainable.
    assert all(v.path.endswith(("/u", "moving_mean", "moving_variance"))
               for v in d.non_trainable_variables)
    assert not g.non_trainable_variables


def test_output_shapes_dtypes_and_range(full_models):
    g, d = full_models
    z = tf.random.normal((3, 100), seed=1)
    images = g(z, training=True)[0]
    assert images.shape == (3, 64, 64, 3) and images.dtype == tf.float32
    assert np.all(np.abs(images.numpy()) <= 1.0)
    logits = d(images, training=True)
    assert logits.shape == (3,) and logits.dtype == tf.float32
    assert np.all(np.isfinite(logits.numpy()))


def test_generator_feature_sizes_4_to_64():
    g = SSDGenerator(nz=8, ngf=2)
    z = tf.random.normal((2, 8), seed=2)
    g(z)
    x = tf.reshape(z, (-1, 1, 1, 8))
    sizes = []
    for up in g.ups:
        x = up(x)
        sizes.append((x.shape[1], x.shape[3]))
    assert sizes == [(4, 16), (8, 8), (16, 4), (32, 2), (64, 3)]


@pytest.mark.parametrize("index, stride, pad, size", [(0, 1, 0, 1), (1, 2, 1, 4), (4, 2, 1, 3)])
def test_conv_transpose_matches_torch_padding(rng, index, stride, pad, size):
    g = SSDGenerator(nz=8, ngf=2)
    g(tf.zeros((1, 8)))
    up = g.ups[index]
    kernel = up.kernel.numpy()
    assert up.bias is None
    x = rng.standard_normal((2, size, size, kernel.shape[3])).astype("float32")
    expected = torch_conv_transpose(x.astype("float64"), kernel.astype("float64"), stride, pad)
    got = up(x).numpy()
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_adain_matches_numpy(rng):
    layer = AdaIN(3)
    x = rng.standard_normal((2, 4, 4, 3)).astype("float32") * 3 + 1
    w = rng.standard_normal((2, 5)).astype("float32")
    got = layer(x, w).numpy()
    ws, bs = (v.numpy() for v in layer.scale.weights)
    wb, bb = (v.numpy() for v in layer.bias.weights)
    mean = x.mean(axis=(1, 2), keepdims=True)
    var = x.var(axis=(1, 2), keepdims=True)  # biased, like torch's InstanceNorm2d
    normed = (x - mean) / np.sqrt(var + 1e-5)
    gamma = (w @ ws + bs)[:, None, None, :]
    beta = (w @ wb + bb)[:, None, None, :]
    np.testing.assert_allclose(got, normed * (1 + gamma) + beta, rtol=1e-4, atol=1e-5)
    # Each sample's own statistics: a per-sample shift and scale of x does not change IN(x).
    x2 = x.copy()
    x2[1] = 5 * x2[1] - 7
    np.testing.assert_allclose(layer(x2, w).numpy(), got, rtol=1e-3, atol=1e-4)


def test_mapping_network_is_4_linear_lrelu(rng):
    g = SSDGenerator()
    z = rng.standard_normal((4, 100)).astype("float32")
    g(z)
    assert len(g.mapping) == 4
    h = z.astype("float64")
    for dense in g.mapping:
        kernel, bias = (v.numpy().astype("float64") for v in dense.weights)
        assert kernel.shape == (100, 100) and bias.shape == (100,)
        assert np.all(np.abs(kernel) <= 0.1) and np.all(np.abs(bias) <= 0.1)  # torch Linear init
        h = np_lrelu(h @ kernel + bias)
    w = g.style(z).numpy()
    np.testing.assert_allclose(w, h, rtol=1e-4, atol=1e-6)
    assert (w < 0).any()  # LeakyReLU (not ReLU) after the last layer too


def test_bce_losses_match_numpy(rng):
    real = rng.standard_normal(7).astype("float32") * 3
    fake = rng.standard_normal(7).astype("float32") * 3
    # -log sigmoid(l) = softplus(-l); -log(1 - sigmoid(l)) = softplus(l)
    d_expected = np_softplus(-real).mean() + np_softplus(fake).mean()
    g_expected = np_softplus(-fake).mean()
    d_loss, g_loss = bce_d_loss(real, fake), bce_g_loss(fake)
    assert d_loss.dtype == tf.float32 and g_loss.dtype == tf.float32
    np.testing.assert_allclose(d_loss.numpy(), d_expected, rtol=1e-5)
    np.testing.assert_allclose(g_loss.numpy(), g_expected, rtol=1e-5)
    # From logits: stable for saturated D, and float16 logits come back as float32.
    big = tf.constant([80.0, -80.0], tf.float16)
    assert np.isclose(bce_g_loss(big).numpy(), 40.0)
    assert bce_d_loss(big, big).dtype == tf.float32
    assert np.isfinite(bce_d_loss(big, big).numpy())


def test_generator_gradients_reach_every_variable():
    g, d = SSDGenerator(nz=16, ngf=4), SSDDiscriminator(ndf=4)
    z = tf.random.normal((4, 16), seed=3)
    with tf.GradientTape() as tape:
        loss = bce_g_loss(d(g(z, training=True)[0], training=True))
    grads = tape.gradient(loss, g.trainable_variables)
    assert len(grads) == len(g.trainable_variables) == 4 * 2 + 5 + 4 * 4
    for v, grad in zip(g.trainable_variables, grads):
        assert grad is not None, v.path
        assert float(tf.reduce_max(tf.abs(grad))) > 0, v.path


def test_discriminator_gradients_and_bn_modes():
    d = SSDDiscriminator(ndf=4)
    x = tf.random.uniform((4, 64, 64, 3), -1, 1, seed=4)
    with tf.GradientTape() as tape:
        loss = bce_d_loss(d(x, training=True), d(-x, training=True))
    grads = tape.gradient(loss, d.trainable_variables)
    assert all(g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)
    # Plain Keras BN: the moving stats moved when training; inference changes no state.
    bn = d.bns[1]
    assert isinstance(bn, keras.layers.BatchNormalization) and d.bns[0] is None
    assert not np.allclose(bn.moving_mean.numpy(), 0.0)
    before = [v.numpy().copy() for v in d.non_trainable_variables]
    d(x, training=False)
    for b, v in zip(before, d.non_trainable_variables):
        np.testing.assert_array_equal(b, v.numpy())


def test_discriminator_uses_pytorch_spectral_norm():
    keras.utils.set_random_seed(11)
    d = SSDDiscriminator(ndf=4)
    x = tf.random.uniform((2, 64, 64, 3), -1, 1, seed=5)
    d(x)
    assert len(d.convs) == 5
    for conv in d.convs:
        assert isinstance(conv, L.SNConv2D)
        u = conv.u.numpy().copy()
        d(x, training=False)
        np.testing.assert_array_equal(conv.u.numpy(), u)  # u is a buffer, updated only in training
        assert not conv.u.trainable
    u_start = [conv.u.numpy().copy() for conv in d.convs]
    for _ in range(5):
        d(x, training=True)  # training calls run the power iteration and store u
    for conv, u in zip(d.convs[:-1], u_start[:-1]):  # (the 1-row last conv has u = +-1 throughout)
        assert not np.allclose(conv.u.numpy(), u), conv.name
    for conv in d.convs:
        for _ in range(300):  # more power iterations (what 300 more training steps would run)
            conv.normalized_kernel(training=True)
        raw = conv.kernel.numpy()
        effective = conv.normalized_kernel(training=False).numpy()
        as_torch = lambda k: k.transpose(3, 2, 0, 1).reshape(k.shape[3], -1)  # noqa: E731
        sigma_eff = np.linalg.svd(as_torch(effective), compute_uv=False)[0]
        sigma_raw = np.linalg.svd(as_torch(raw), compute_uv=False)[0]
        assert abs(sigma_eff - 1.0) < 1e-2, conv.name
        assert abs(sigma_raw - 1.0) > 0.05  # the raw kernel is kept, not overwritten (torch SN)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])  # auto: bf16 on AMX CPUs
def test_mixed_precision_smoke(policy):
    keras.mixed_precision.set_global_policy(policy)
    g, d = SSDGenerator(nz=16, ngf=4), SSDDiscriminator(ndf=4)
    z = tf.random.normal((2, 16), seed=6)
    with tf.GradientTape(persistent=True) as tape:
        images = g(z, training=True)[0]
        fake = d(images, training=True)
        real = d(tf.random.uniform((2, 64, 64, 3), -1, 1, seed=7), training=True)
        d_loss, g_loss = bce_d_loss(real, fake), bce_g_loss(fake)
    assert images.dtype == tf.float32 and fake.dtype == tf.float32
    assert np.all(np.isfinite(images.numpy())) and np.all(np.isfinite(fake.numpy()))
    assert np.isfinite(d_loss.numpy()) and np.isfinite(g_loss.numpy())
    assert all(v.dtype == "float32" for v in g.variables + d.variables)
    for loss, model in ((g_loss, g), (d_loss, d)):
        grads = tape.gradient(loss, model.trainable_variables)
        assert all(gr is not None and np.all(np.isfinite(gr.numpy())) for gr in grads)


@pytest.mark.slow
def test_one_training_step_under_tf_function():
    """A D step then a G step (BCE, Adam 5e-4, betas 0.5/0.999) compile and move every weight."""
    g, d = SSDGenerator(nz=16, ngf=4), SSDDiscriminator(ndf=4)
    g_opt = keras.optimizers.Adam(SSD_DEFAULTS["lr"], beta_1=0.5, beta_2=0.999)
    d_opt = keras.optimizers.Adam(SSD_DEFAULTS["lr"], beta_1=0.5, beta_2=0.999)
    real = tf.random.uniform((4, 64, 64, 3), -1, 1, seed=8)
    g.build_for_restore(4)
    d.build_for_restore(4)
    g_before = [v.numpy().copy() for v in g.trainable_variables]
    d_before = [v.numpy().copy() for v in d.trainable_variables]

    @tf.function
    def step(z):
        with tf.GradientTape() as tape:
            d_loss = bce_d_loss(d(real, training=True), d(g(z, training=True)[0], training=True))
        d_opt.apply(tape.gradient(d_loss, d.trainable_variables), d.trainable_variables)
        with tf.GradientTape() as tape:
            g_loss = bce_g_loss(d(g(z, training=True)[0], training=True))
        g_opt.apply(tape.gradient(g_loss, g.trainable_variables), g.trainable_variables)
        return d_loss, g_loss

    d_loss, g_loss = step(tf.random.normal((4, 16), seed=9))
    assert np.isfinite(d_loss.numpy()) and np.isfinite(g_loss.numpy())
    assert all(not np.array_equal(b, v.numpy()) for b, v in zip(g_before, g.trainable_variables))
    assert all(not np.array_equal(b, v.numpy()) for b, v in zip(d_before, d.trainable_variables))


def test_checkpoint_saves_every_variable(tmp_path):
    """Layers kept in Python lists are invisible to tf.train.Checkpoint unless also named."""
    g, d = SSDGenerator().build_for_restore(), SSDDiscriminator().build_for_restore()
    prefix = tf.train.Checkpoint(g=g, d=d).save(str(tmp_path / "c"))
    saved = [n for n, _ in tf.train.list_variables(prefix) if "VARIABLE_VALUE" in n]
    assert len(saved) == len(g.variables) + len(d.variables) + 1  # + save_counter
