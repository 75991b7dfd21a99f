"""TorchAdam against a numpy transcription of torch.optim.Adam's documented update, and as a
drop-in for keras.optimizers.Adam (variables, checkpoints, loss scaling, XLA)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from fastgan_tf.config import TrainConfig
from fastgan_tf.optimizers import TorchAdam
from fastgan_tf.training.state import make_optimizer

LR, BETAS, EPS = 2e-4, (0.5, 0.999), 1e-8  # the reference's settings


def np_torch_adam(param, grads, lr=LR, betas=BETAS, eps=EPS):
    """torch.optim.Adam (amsgrad=False, weight_decay=0, maximize=False) in float64, as
    documented; yields (param, m, v) after each step."""
    b1, b2 = betas
    p = param.astype(np.float64)
    m, v = np.zeros_like(p), np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        g = g.astype(np.float64)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
        yield p, m, v


def random_gradients(rng, steps, size):
    """Gradients over 10 orders of magnitude; the first tenth of the weights only get 1e-9
    ones (where epsilon decides the update, and Keras's Adam differs most)."""
    scale = 10.0 ** rng.uniform(-9, 1, size)
    scale[: size // 10] = 1e-9
    return (scale * rng.normal(size=(steps, size))).astype(np.float32)


def run(optimizer, param, grads, jit_compile=False):
    """Apply `grads` one step at a time; yields (param, m, v) as float32 arrays."""
    var = tf.Variable(param)
    optimizer.build([var])
    step = tf.function(lambda g: optimizer.apply([g], [var]), jit_compile=jit_compile)
    for g in grads:
        step(tf.constant(g))
        yield var.numpy(), optimizer._momentums[0].numpy(), optimizer._velocities[0].numpy()


def differences_from_torch(optimizer, rng, steps=300, size=2000, jit_compile=False):
    """The largest |param - torch's| (in units of lr), |m - torch's| (in units of torch's
    sqrt(v), the gradients' RMS: m itself may cancel to ~0) and relative v error."""
    # Weights of ~1e-3 so that float32's rounding of the weight itself (~1e-10) stays far below
    # the update's (~lr * 1e-7).
    param = (1e-3 * rng.normal(size=size)).astype(np.float32)
    grads = random_gradients(rng, steps, size)
    worst = np.zeros(3)
    for got, expected in zip(run(optimizer, param, grads, jit_compile),
                             np_torch_adam(param, grads)):
        p, m, v = got
        worst = np.maximum(worst, [np.max(np.abs(p - expected[0])) / LR,
                                   np.max(np.abs(m - expected[1]) / np.sqrt(expected[2])),
                                   np.max(np.abs(v - expected[2]) / expected[2])])
    return worst


@pytest.mark.parametrize("jit_compile", [False, True])
def test_torch_adam_follows_torch_update_for_hundreds_of_steps(rng, jit_compile):
    param_error, m_error, v_error = differences_from_torch(TorchAdam(LR, *BETAS, EPS), rng,
                                                           jit_compile=jit_compile)
    # float32 rounding only (measured 7e-5, 1.2e-6, 3e-6): m and v carry a relative rounding
    # of ~1e-7 per step through ~1000 steps of memory, and each update follows them. Keras's
    # Adam is off by ~1 lr from the first step (the next test).
    assert param_error < 3e-4, param_error
    assert m_error < 1e-5 and v_error < 2e-5, (m_error, v_error)


def test_keras_adam_with_the_same_epsilon_is_not_torch_adam(rng):
    """Why TorchAdam exists: Keras's epsilon acts like torch's eps / sqrt(1 - beta2^t)."""
    keras_adam = keras.optimizers.Adam(LR, *BETAS, epsilon=EPS)
    param_error = differences_from_torch(keras_adam, rng, steps=10)[0]
    assert param_error > 0.5, param_error


def test_first_step_with_tiny_gradient_adds_epsilon_to_the_corrected_sqrt_v():
    """Step 1: m_hat = g, sqrt(v_hat) = |g|, so the update is lr * g / (|g| + eps)."""
    g = np.array([1e-9, -1e-9, 1e-3], np.float32)
    param = next(run(TorchAdam(LR, *BETAS, EPS), np.zeros(3, np.float32), [g]))[0]
    expected = -LR * g.astype(np.float64) / (np.abs(g) + EPS)  # [-lr / 11, lr / 11, ~-lr]
    np.testing.assert_allclose(param, expected, rtol=1e-6)


def test_variables_are_keras_adams_and_checkpoints_restore_both_ways(tmp_path):
    weights = [tf.Variable(np.ones((3, 2), np.float32)), tf.Variable(np.zeros(4, np.float32))]
    keras_adam, torch_adam = keras.optimizers.Adam(LR, *BETAS), TorchAdam(LR, *BETAS)
    keras_adam.build(weights)
    torch_adam.build(weights)

    def described(optimizer):
        prefix = optimizer.name + "/"
        return [(v.path.removeprefix(prefix), v.dtype, tuple(v.shape)) for v in optimizer.variables]

    assert described(torch_adam) == described(keras_adam)
    assert torch_adam.name.startswith("adam") and len(keras_adam.variables) == 2 + 2 * 2

    for i, v in enumerate(keras_adam.variables):
        v.assign(tf.fill(v.shape, tf.cast(i + 1, v.dtype)))
    path = tf.train.Checkpoint(opt=keras_adam).write(str(tmp_path / "keras"))
    tf.train.Checkpoint(opt=torch_adam).read(path).assert_consumed()
    for mine, theirs in zip(torch_adam.variables, keras_adam.variables):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())


def test_loss_scale_optimizer_wraps_torch_adam(rng):
    """The mixed-precision optimizer: scaled gradients in, torch's update out."""
    param = (1e-3 * rng.normal(size=50)).astype(np.float32)
    grads = random_gradients(rng, 3, 50)
    scaled = keras.optimizers.LossScaleOptimizer(TorchAdam(LR, *BETAS, EPS))
    var = tf.Variable(param)
    scaled.build([var])
    for g in grads:
        scaled.apply([tf.constant(g) * scaled.dynamic_scale], [var])
    expected = list(np_torch_adam(param, grads))[-1][0]
    np.testing.assert_allclose(var.numpy(), expected, rtol=0, atol=1e-5 * LR)


@pytest.mark.parametrize("mixed", [False, True])
def test_make_optimizer_gives_both_models_torch_adam(mixed):
    cfg = TrainConfig(dataset="x", lr=LR, beta1=BETAS[0], beta2=BETAS[1])
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    optimizer = make_optimizer(cfg, mixed, model)
    adam = optimizer.inner_optimizer if mixed else optimizer
    assert type(adam) is TorchAdam and adam.built
    assert (adam.beta_1, adam.beta_2, adam.epsilon) == (*BETAS, EPS)
    assert float(adam.learning_rate) == pytest.approx(LR)
