"""FastGAN losses: random-margin hinge against numpy with the same draws, G loss, reconstruction."""

import numpy as np
import pytest
import tensorflow as tf

from fastgan_tf import losses
from fastgan_tf.augment import uniform01


def _margins(seed, shape):
    """The margins d_hinge_* draw from Generator.from_seed(seed): 0.8 + 0.2 * U[0,1) per logit."""
    return 0.8 + 0.2 * uniform01(tf.random.Generator.from_seed(seed), shape).numpy()


LOGITS = np.array([[-2.0, -0.5, 0.0, 0.3], [0.85, 0.95, 1.0, 3.0]], np.float32)


def test_d_hinge_real_matches_numpy():
    got = losses.d_hinge_real(LOGITS, tf.random.Generator.from_seed(1))
    m = _margins(1, LOGITS.shape)
    assert got.dtype == tf.float32 and got.shape == ()
    np.testing.assert_allclose(got.numpy(), np.maximum(m - LOGITS, 0).mean(), rtol=1e-6)


def test_d_hinge_fake_matches_numpy():
    got = losses.d_hinge_fake(-LOGITS, tf.random.Generator.from_seed(2))
    m = _margins(2, LOGITS.shape)
    np.testing.assert_allclose(got.numpy(), np.maximum(m - LOGITS, 0).mean(), rtol=1e-6)


def test_margin_is_fresh_per_logit_in_0_8_to_1():
    """With logits 0 the hinge is the mean margin; one logit at a time exposes each margin."""
    rng = tf.random.Generator.from_seed(3)
    ms = np.array([losses.d_hinge_real(tf.zeros([1]), rng).numpy() for _ in range(300)])
    assert 0.8 <= ms.min() < 0.81 and 0.99 < ms.max() < 1.0 and len(np.unique(ms)) > 290
    big = losses.d_hinge_real(tf.zeros([100, 50]), tf.random.Generator.from_seed(4)).numpy()
    assert abs(big - 0.9) < 0.005
    # logits beyond the margin cost nothing; the fake hinge mirrors the real one
    assert losses.d_hinge_real(tf.ones([10]), rng).numpy() == 0.0
    assert losses.d_hinge_fake(-tf.ones([10]), rng).numpy() == 0.0
    assert losses.d_hinge_fake(tf.fill([10], 2.0), rng).numpy() >= 2.8


def test_hinge_gradients_and_half_precision_inputs():
    logits = tf.constant(LOGITS, tf.float16)
    with tf.GradientTape() as tape:
        tape.watch(logits)
        loss = losses.d_hinge_real(logits, tf.random.Generator.from_seed(1))
    assert loss.dtype == tf.float32
    m = _margins(1, LOGITS.shape)
    active = m - LOGITS.astype(np.float16).astype(np.float32) > 0
    expected = -active.astype(np.float32) / LOGITS.size
    np.testing.assert_allclose(tape.gradient(loss, logits).numpy(), expected, atol=1e-4)


def test_g_adversarial():
    assert losses.g_adversarial(LOGITS).numpy() == pytest.approx(-LOGITS.mean())
    assert losses.g_adversarial(tf.constant(LOGITS, tf.bfloat16)).dtype == tf.float32


def test_recon_loss_names():
    assert losses.RECON_LOSSES == ("lpips", "l1", "mse")
    with pytest.raises(ValueError, match="l1"):
        losses.reconstruction_loss("l2")


@pytest.mark.parametrize(
    "kind,fn",
    [("l1", lambda d: np.abs(d).mean((1, 2, 3))), ("mse", lambda d: (d**2).mean((1, 2, 3)))],
)
def test_pixel_losses_per_sample(kind, fn, rng):
    pred = rng.uniform(-1, 1, (3, 16, 16, 3)).astype(np.float32)
    target = rng.uniform(-1, 1, (3, 16, 16, 3)).astype(np.float32)
    loss = losses.reconstruction_loss(kind)
    got = loss(pred, target)
    assert got.shape == (3,) and got.dtype == tf.float32
    np.testing.assert_allclose(got.numpy(), fn(pred.astype(np.float64) - target), rtol=1e-5)
    half = loss(tf.constant(pred, tf.float16), tf.constant(target, tf.float16))
    assert half.dtype == tf.float32


@pytest.mark.parametrize("kind", ["l1", "mse", "lpips"])
def test_target_gets_no_gradient_pred_does(kind, rng):
    loss = losses.reconstruction_loss(kind, vgg_weights=None)
    pred = tf.Variable(rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32))
    target = tf.Variable(rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32))
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(loss(pred, target))
    g_pred, g_target = tape.gradient(total, [pred, target])
    assert g_target is None
    assert g_pred is not None and float(tf.reduce_max(tf.abs(g_pred))) > 0


def test_lpips_kind_is_the_lpips_layer(rng):
    loss = losses.reconstruction_loss("lpips", vgg_weights=None)
    assert loss.kind == "lpips" and loss.lpips is not None
    a = rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    b = rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(loss(a, b).numpy(), loss.lpips(a, b).numpy(), rtol=1e-6)
    assert loss(a, b).shape == (2,)
