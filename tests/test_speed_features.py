"""Speed and memory levers of the training step: XLA, mixed precision, gradient accumulation."""

import json
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from fastgan_tf.config import TrainConfig, validate
from fastgan_tf.errors import UserError
from fastgan_tf.losses import reconstruction_loss
from fastgan_tf.models import layers as L
from fastgan_tf.training.fastgan import FastGAN
from fastgan_tf.training.sharding import GradientSum, StepRandom, after, split_batch
from fastgan_tf.training.precision import set_policy

RES = 64


def _cfg(**kw):
    base = dict(dataset="x", resolution=RES, ngf=8, ndf=8, nz=32, batch_size=8, recon_loss="l1")
    return TrainConfig(**{**base, **kw})


def _gan(cfg, mixed=False, sgd=None, cls=FastGAN):
    keras.utils.set_random_seed(5)  # identical initial weights for every model built like this
    gan = cls(cfg, reconstruction_loss("l1"), mixed=mixed)
    if sgd:  # plain SGD: the update is lr * gradient, so updates compare like gradients
        gan.d_opt, gan.g_opt = keras.optimizers.SGD(sgd), keras.optimizers.SGD(sgd)
        gan.d_opt.build(gan.discriminator.trainable_variables)
        gan.g_opt.build(gan.generator.trainable_variables)
    return gan


def _real(batch=8, seed=0):
    return tf.constant(np.random.default_rng(seed).uniform(-1, 1, (batch, RES, RES, 3)), tf.float32)


def _weights(gan):
    return [v.numpy() for v in gan.generator.trainable_variables
            + gan.discriminator.trainable_variables]


def _relative(a, b):
    num = sum(float(np.sum((x - y) ** 2)) for x, y in zip(a, b))
    return (num / sum(float(np.sum(x ** 2)) for x in a)) ** 0.5


# --------------------------------------------------------------------------- randomness
def test_shards_draw_the_rows_of_the_global_batch():
    key = tf.constant([3, 4], tf.int64)
    whole = StepRandom(key, 1).uniform([8], minval=0, maxval=100, dtype=tf.int32).numpy()
    halves = [StepRandom(key, 1, index=i, shards=2).uniform([4], minval=0, maxval=100,
                                                           dtype=tf.int32).numpy()
              for i in range(2)]
    np.testing.assert_array_equal(np.concatenate(halves), whole)
    z = StepRandom(key, 2).normal([6, 5]).numpy()
    z_last = StepRandom(key, 2, index=2, shards=3).normal([2, 5]).numpy()
    np.testing.assert_array_equal(z_last, z[4:])
    scalar = [StepRandom(key, 3, index=i, shards=2).uniform([], 0, 4, tf.int32) for i in range(2)]
    assert int(scalar[0]) == int(scalar[1])  # e.g. the decoded quadrant: one per step


# --------------------------------------------------------------------------- accumulation
def _batch_independent(monkeypatch):
    """BatchNorm with fixed statistics and no noise: each sample's result depends on itself only."""
    def bn(self, inputs, training=False):
        return tf.cast(tf.cast(inputs, tf.float32) * self.gamma + self.beta, self.compute_dtype)

    monkeypatch.setattr(L.BatchNorm, "call", bn)
    monkeypatch.setattr(L.NoiseInjection, "call",
                        lambda self, x, training=False, noise_seed=None: x + 0.0 * self.weight)


@pytest.mark.slow
def test_accumulating_2x4_gives_the_update_of_1x8(monkeypatch):
    """Exact up to float rounding once BatchNorm's statistics do not depend on the batch.

    With the models' real BatchNorm each micro-batch normalises with its own statistics, so the
    two differ like batch 4 and batch 8 do (README: "Gradient accumulation").
    """
    _batch_independent(monkeypatch)
    real = _real()
    results = []
    for accumulate in (1, 2):
        gan = _gan(_cfg(accumulate=accumulate, ema_decay=0.5), sgd=0.01)
        before = _weights(gan)
        ema_before = gan.generator_ema.trainable_variables[0].numpy()
        stats = {k: float(v) for k, v in gan.train_on_batch(real).items()}
        results.append(([a - b for a, b in zip(_weights(gan), before)], stats, gan))
    (full, s1, _), (accumulated, s2, gan2) = results
    assert _relative(full, accumulated) < 1e-4
    for k in ("d_real", "d_fake", "recon", "d_loss", "g_loss"):
        assert s2[k] == pytest.approx(s1[k], rel=1e-5, abs=1e-6), k
    # The counters and the EMA move once per (global) step, not once per micro-batch.
    assert int(gan2.step.numpy()) == 1 and int(gan2.batch_in_epoch.numpy()) == 1
    live = gan2.generator.trainable_variables[0].numpy()
    np.testing.assert_allclose(gan2.generator_ema.trainable_variables[0].numpy(),
                               0.5 * ema_before + 0.5 * live, rtol=1e-6, atol=1e-7)


def test_accumulate_must_divide_the_batch():
    with pytest.raises(UserError, match="--accumulate 3"):
        validate(_cfg(accumulate=3))
    with pytest.raises(UserError, match="--accumulate 0"):
        validate(_cfg(accumulate=0))


# --------------------------------------------------------------------------- order of the step
class _GeneratorFirst(FastGAN):
    """The reference's order, G's taped pass before D's real passes: what the step replaced."""

    def train_step(self, real, key):
        shards = split_batch(real, key, self.replicas, self.cfg.accumulate, self.cfg.nz)
        fakes = self.generate(shards)
        d_grads = GradientSum()
        real_stats = self.discriminator_on_reals(shards, d_grads)
        d_stats = self.train_discriminator(shards, fakes, d_grads, real_stats)
        g_stats = self.train_generator(shards, fakes)
        self.update_ema()
        return {**d_stats, **g_stats}


def _generator_ops_free_to_start_early(gan, real) -> list[str]:
    """G's forward ops that do not depend on D's real-pass gradients in the traced step.

    Such an op may run while the real pass is still alive, and G's activations with it."""
    graph = gan._compiled.get_concrete_function(real).graph
    consumers = {}
    for op in graph.get_operations():
        for source in [t.op for t in op.inputs] + list(op.control_inputs):
            consumers.setdefault(source.name, []).append(op)
    # Names follow the call order of each model in the step; D's real pass has the decoders.
    real_pass = [op for op in graph.get_operations()
                 if op.name.startswith("gradient_tape/discriminator") and "/decoder_" in op.name]
    after_real, stack = set(), list(real_pass)
    while stack:
        for op in consumers.get(stack.pop().name, []):
            if op.name not in after_real:
                after_real.add(op.name)
                stack.append(op)
    return [op.name for op in graph.get_operations()
            if op.name.startswith("generator") and op.type != "Placeholder"
            and op.name not in after_real]


@pytest.mark.parametrize("accumulate", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_generator_waits_for_the_real_passes(accumulate):
    """G's activations never coexist with D's largest pass; the reference's order would let them."""
    cfg = _cfg(batch_size=4, accumulate=accumulate)
    real = _real(4)
    assert _generator_ops_free_to_start_early(_gan(cfg), real) == []
    assert len(_generator_ops_free_to_start_early(_gan(cfg, cls=_GeneratorFirst), real)) > 100


def test_after_waits_through_one_grouping_op():
    """One control edge per op of the block, not one per awaited tensor: the step awaits
    hundreds of gradients (336,700 control edges at 64 px per tensor, 7,787 through one op)."""
    @tf.function(autograph=False)
    def fn(x):
        waits = [x * 2.0, x * 3.0, x * 4.0]
        with after(waits):
            return x + 1.0

    ops = fn.get_concrete_function(tf.TensorSpec([2])).graph.get_operations()
    (group,) = [op for op in ops if op.type == "NoOp"]
    assert sorted(op.type for op in group.control_inputs) == ["Mul"] * 3
    waiting = [op for op in ops if op.control_inputs and op is not group]
    assert waiting and all(op.control_inputs == [group] for op in waiting)
    (add,) = [op for op in ops if op.type == "AddV2"]  # waits through its constant operand
    assert any(group in t.op.control_inputs for t in add.inputs) or add.control_inputs == [group]


@pytest.mark.slow
def test_the_order_of_the_step_does_not_change_the_update():
    """Same update to float32 rounding: the reorder moves independent work only.

    Not bit-for-bit: the control dependencies change which ops grappler fuses (gradients differ
    in the last bits). Plain SGD, so that updates compare like gradients (Adam's first steps are
    ~lr * sign(gradient))."""
    real = _real(4)
    gans = [_gan(_cfg(batch_size=4), sgd=0.01), _gan(_cfg(batch_size=4), sgd=0.01,
                                                     cls=_GeneratorFirst)]
    before = _weights(gans[0])
    for _ in range(2):
        ours, reference = [{k: float(v) for k, v in gan.train_on_batch(real).items()}
                           for gan in gans]
        assert ours == pytest.approx(reference, rel=1e-5, abs=1e-7)
    updates = [[a - b for a, b in zip(_weights(gan), before)] for gan in gans]
    assert _relative(updates[1], updates[0]) < 1e-5


# --------------------------------------------------------------------------- mixed precision
@pytest.mark.slow
def test_mixed_precision_trains_with_float32_master_weights(tmp_path):
    set_policy("on")
    gan = _gan(_cfg(batch_size=4), mixed=True)
    for _ in range(3):
        stats = {k: float(v) for k, v in gan.train_on_batch(_real(4)).items()}
        assert all(np.isfinite(v) for v in stats.values()), stats
    assert gan.generator.layers[0].compute_dtype == "float16"
    variables = gan.generator.trainable_variables + gan.discriminator.trainable_variables
    assert {v.dtype for v in variables} == {"float32"}
    path = tf.train.Checkpoint(**gan.trackables()).write(str(tmp_path / "ckpt"))
    keys = tf.train.load_checkpoint(path).get_variable_to_shape_map()
    scales = [k for k in keys if "dynamic_scale" in k]
    assert len(scales) == 2  # one loss scale per optimizer, saved with the run
    assert tf.train.load_checkpoint(path).get_tensor(scales[0]) > 0


@pytest.mark.slow
def test_bfloat16_trains_with_float32_master_weights_and_no_loss_scale(tmp_path):
    set_policy("bf16")
    gan = _gan(_cfg(batch_size=4), mixed=False)  # bfloat16 has float32's range: no loss scale
    for _ in range(3):
        stats = gan.train_on_batch(_real(4))
        assert all(v.dtype == tf.float32 and np.isfinite(float(v)) for v in stats.values())
    assert gan.generator.layers[0].compute_dtype == "bfloat16"
    assert gan.discriminator.compute_dtype == "bfloat16"
    variables = gan.generator.variables + gan.discriminator.variables + gan.generator_ema.variables
    assert {v.dtype for v in variables if "float" in v.dtype} == {"float32"}
    images = gan.sample()
    assert images.dtype == tf.float32 and np.isfinite(images.numpy()).all()
    path = tf.train.Checkpoint(**gan.trackables()).write(str(tmp_path / "ckpt"))
    assert not [k for k in tf.train.load_checkpoint(path).get_variable_to_shape_map()
                if "dynamic_scale" in k]


# --------------------------------------------------------------------------- XLA
@pytest.mark.slow
def test_xla_step_compiles_once_and_matches_the_plain_step():
    """~60 s on 2 cores: XLA compiles the whole step (~30 s) once, then reuses it."""
    real = _real()
    plain = _gan(_cfg())
    xla = _gan(_cfg(xla=True))
    times = []
    for step in range(3):
        start = time.perf_counter()
        fast = {k: float(v) for k, v in xla.train_on_batch(real).items()}
        times.append(time.perf_counter() - start)
        slow = {k: float(v) for k, v in plain.train_on_batch(real).items()}
        # Same random numbers, so the first D losses agree to rounding. Everything after Adam's
        # first update (the G loss, later steps) drifts a little: Adam's first step is ~lr *
        # sign(gradient), and XLA's different kernels flip the sign of near-zero gradients.
        for k in ("d_real", "d_fake", "recon", "g_loss"):
            tolerance = 1e-4 if step == 0 and k != "g_loss" else 2e-2
            assert fast[k] == pytest.approx(slow[k], rel=tolerance), (step, k, fast, slow)
    # A recompilation per call (a value XLA needs as a constant changing each step) would make
    # every call as slow as the first.
    assert max(times[1:]) < times[0] / 4, times
    assert xla._compiled.experimental_get_tracing_count() == 1


# --------------------------------------------------------------------------- memory estimate
@pytest.mark.slow
def test_dry_run_prints_a_memory_estimate_that_scales_with_the_micro_batch(image_folder, tmp_path,
                                                                          capsys):
    from fastgan_tf.cli.train import main

    args = ["--dataset", str(image_folder), "--resolution", "64", "--ngf", "16", "--ndf", "16",
            "--recon-loss", "l1", "--batch-size", "8", "--out", str(tmp_path), "--dry-run"]
    reports = []
    for accumulate in ("1", "4"):
        assert main([*args, "--accumulate", accumulate]) == 0
        reports.append(json.loads(capsys.readouterr().out)["memory_estimate"])
    one, four = reports
    assert one["micro_batch_per_device"] == 8 and four["micro_batch_per_device"] == 2
    assert one["weights_optimizer_gradients_gib"] == four["weights_optimizer_gradients_gib"]
    assert 3.0 < one["activations_gib"] / four["activations_gib"] < 4.0  # per-sample + fixed part
    assert one["device_total_gib"] > one["activations_gib"]


def test_memory_estimate_counts_lpips_in_float32_whatever_its_precision():
    """--lpips-precision bf16 raised the measured tensor peak a little rather than lowering it
    (benchmarks/README.md): the estimate must not shrink with it."""
    from fastgan_tf.training.fastgan import memory_estimate

    totals = {precision: memory_estimate(_cfg(recon_loss="lpips", lpips_precision=precision), 2,
                                         "off")["device_total_gib"]
              for precision in ("float32", "bf16")}
    assert totals["bf16"] == totals["float32"], totals
