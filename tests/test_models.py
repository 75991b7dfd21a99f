"""Generator and Discriminator: parity with the reference, shapes, state handling, gradients."""

import time

import numpy as np
import pytest
import tensorflow as tf
import keras

from fastgan_tf.models import Discriminator, Generator, build_models, count_params

# Trainable parameter counts of the authors' PyTorch models (ngf = ndf = 64, nz = 256).
REFERENCE = {  # resolution: (G, D, D without decoders)
    256: (29_127_846, 11_526_160, 8_386_672),
    512: (29_174_392, 11_526_496, 8_387_008),
    1024: (29_176_512, 11_528_192, 8_388_704),
}
DECODERS = (1_439_712, 849_888, 849_888)  # big / small / part, 3,139,488 in total
# Our truncated models (not in the reference): recorded so that changes are noticed.
TRUNCATED = {64: (28_211_460, 10_923_520, 7_892_416), 128: (28_959_814, 11_427_968, 8_288_480)}


def state(model):
    return [v.numpy().copy() for v in model.variables]


def assert_same_state(before, model):
    for a, v in zip(before, model.variables):
        np.testing.assert_array_equal(a, v.numpy(), err_msg=v.path)


@pytest.mark.slow
@pytest.mark.parametrize("resolution", [256, 512, 1024, 128, 64])
def test_parameter_counts_match_reference(resolution):
    start = time.perf_counter()
    g = Generator(resolution)
    g(tf.zeros((1, 256)), training=False)
    d = Discriminator(resolution)
    d(tf.zeros((1, resolution, resolution, 3)), part=0, training=False)
    d_plain = Discriminator(resolution, decoders=False)
    d_plain(tf.zeros((1, resolution, resolution, 3)), training=False)
    got = (count_params(g), count_params(d), count_params(d_plain))
    assert got == REFERENCE.get(resolution) or got == TRUNCATED.get(resolution)
    assert got == {**REFERENCE, **TRUNCATED}[resolution]
    if resolution >= 128:
        names = ("decoder_big", "decoder_small", "decoder_part")
        decoders = tuple(count_params(getattr(d, n)) for n in names)
        assert decoders == DECODERS and sum(decoders) == 3_139_488
    print(f"resolution {resolution}: built in {time.perf_counter() - start:.1f}s")


def test_resolution_validation_and_attributes():
    for bad in (32, 100, 2048):
        with pytest.raises(ValueError, match="64, 128, 256, 512, 1024"):
            Generator(bad)
        with pytest.raises(ValueError, match="64, 128, 256, 512, 1024"):
            Discriminator(bad)
    for res, small, recon in ((64, 32, 64), (128, 64, 128), (256, 128, 128), (1024, 128, 128)):
        g, d = Generator(res, ngf=16), Discriminator(res, ndf=16)
        assert g.small_resolution == d.small_resolution == small and d.recon_resolution == recon
    assert Generator(1024).output_tanh and not Generator(512).output_tanh
    assert Generator(256, output_tanh=True).output_tanh and not Generator(1024, output_tanh=False).output_tanh
    with pytest.raises(ValueError):
        count_params(Generator(64, ngf=16))  # not built


def test_truncated_architecture_layout():
    g = Generator(64, ngf=16)
    assert g.stages == [8, 16, 32, 64] and g.gated == [64]
    assert Generator(128, ngf=16).gated == [64, 128]
    assert Generator(1024, ngf=16).gated == [64, 128, 256, 512]
    d = Discriminator(64, ndf=16)
    assert d.big_sizes == [32, 16, 8] and d.gated == [8] and d.small_sizes == [8]
    d = Discriminator(128, ndf=16)
    assert d.big_sizes == [64, 32, 16, 8] and d.gated == [16, 8] and d.small_sizes == [16, 8]
    d = Discriminator(256, ndf=16)
    assert d.big_sizes == [128, 64, 32, 16, 8] and d.gated == [32, 16, 8]
    assert hasattr(d, "se_256_32") and hasattr(d, "se_128_16") and hasattr(d, "se_64_8")


@pytest.mark.parametrize("resolution", [64, 128, 256])
def test_output_shapes_and_dtypes(resolution):
    b = 2
    g = Generator(resolution, ngf=16, nz=32, seed=0)
    big, small = g(tf.random.normal((b, 32)))
    s = g.small_resolution
    assert big.shape == (b, resolution, resolution, 3) and small.shape == (b, s, s, 3)
    assert big.dtype == small.dtype == tf.float32

    d = Discriminator(resolution, ndf=16)
    logits = d([big, small])
    assert logits.shape == (b * 50,) and logits.dtype == tf.float32
    real = tf.random.uniform((b, resolution, resolution, 3), -1, 1)
    logits, recs = d(real, part=tf.constant(3))
    assert logits.shape == (b * 50,) and len(recs) == 3
    r = d.recon_resolution
    for rec in recs:
        assert rec.shape == (b, r, r, 3) and rec.dtype == tf.float32
        assert np.abs(rec.numpy()).max() <= 1.0


def test_generator_tanh_flag():
    z = tf.random.normal((2, 16)) * 50
    raw = Generator(64, ngf=16, nz=16, seed=0)
    out = raw(z, training=False)
    tanh = Generator(64, ngf=16, nz=16, seed=0, output_tanh=True)
    tanh.build_for_restore()
    for a, b in zip(tanh.variables, raw.variables):
        a.assign(b)
    out_t = tanh(z, training=False)
    for a, b in zip(out, out_t):
        np.testing.assert_allclose(np.tanh(a.numpy()), b.numpy(), rtol=1e-5, atol=1e-6)


def test_discriminator_derives_small_view_by_torch_nearest():
    d = Discriminator(128, ndf=16)
    real = tf.random.uniform((2, 128, 128, 3), -1, 1)
    a = d(real, training=False)
    b = d([real, real[:, ::2, ::2, :]], training=False)
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
    # the big-path logits come first
    other = d([real, -real[:, ::2, ::2, :]], training=False)
    np.testing.assert_allclose(other.numpy()[:50], a.numpy()[:50], rtol=1e-5, atol=1e-6)
    assert not np.allclose(other.numpy()[50:], a.numpy()[50:])


def test_part_selects_the_matching_quadrant():
    d = Discriminator(64, ndf=16).build_for_restore()  # variables exist before tracing
    real = tf.random.uniform((2, 64, 64, 3), -1, 1)
    f16 = d.encode_big(real, training=False)[16].numpy()
    assert f16.shape[1:3] == (16, 16)
    quadrants = [f16[:, :8, :8], f16[:, :8, 8:], f16[:, 8:, :8], f16[:, 8:, 8:]]
    fn = tf.function(lambda x, p: d(x, part=p, training=False))
    recs = []
    for part, crop in enumerate(quadrants):
        np.testing.assert_array_equal(d.crop_part(f16, tf.constant(part)).numpy(), crop)
        _, (rec_big, _, rec_part) = fn(real, tf.constant(part, tf.int32))
        ref = d.decoder_part(crop, training=False).numpy()
        np.testing.assert_allclose(rec_part.numpy(), ref, rtol=1e-4, atol=1e-5)
        recs.append(rec_part.numpy())
    assert fn.experimental_get_tracing_count() == 1  # one trace for all four parts
    assert all(not np.allclose(recs[0], r) for r in recs[1:])
    _, (_, _, rec_int) = d(real, part=2, training=False)  # Python ints work too
    np.testing.assert_allclose(rec_int.numpy(), recs[2], rtol=1e-4, atol=1e-5)


def test_discriminator_options():
    d = Discriminator(64, ndf=16, decoders=False)
    real = tf.random.uniform((2, 64, 64, 3), -1, 1)
    out = d(real, part=1)
    assert isinstance(out, tf.Tensor) and out.shape == (100,)
    assert not hasattr(d, "decoder_big")
    with pytest.raises(ValueError, match="real"):
        Discriminator(64, ndf=16)([real, real[:, ::2, ::2]], part=0)
    with pytest.raises(ValueError, match="64px"):
        Discriminator(64, ndf=16)(tf.zeros((1, 32, 32, 3)))


def test_generator_without_sle():
    g = Generator(128, ngf=16, sle=False)
    big, small = g(tf.random.normal((2, 256)))
    assert big.shape == (2, 128, 128, 3) and small.shape == (2, 64, 64, 3)
    assert not any("se_" in v.path for v in g.variables)
    with_sle = Generator(128, ngf=16)
    with_sle.build_for_restore()
    assert count_params(with_sle) > count_params(g)


def test_noise_seeds_and_state():
    g = Generator(64, ngf=16, seed=5)
    z = tf.random.normal((2, 256))
    g.build_for_restore()
    for v in g.trainable_variables:  # make the noise visible in the output
        if v.path.endswith("weight"):
            v.assign(0.5)

    # sampling (training=False) and the noise_seed path change no state
    before = state(g)
    a = g(z, training=False, noise_seed=tf.constant([1, 2]))
    b = g(z, training=False, noise_seed=tf.constant([1, 2]))
    c = g(z, training=False, noise_seed=tf.constant([1, 3]))
    g(z, training=False)
    assert_same_state(before, g)
    np.testing.assert_array_equal(a[0].numpy(), b[0].numpy())
    assert not np.allclose(a[0].numpy(), c[0].numpy())

    # a training call advances SN u, BN moving stats and the noise counters
    g(z, training=True)
    changed = {v.path.split("/")[-1] for v, old in zip(g.variables, before)
               if not np.array_equal(old, v.numpy())}
    assert changed == {"u", "moving_mean", "moving_variance", "seed_state"}
    seeds = [v.numpy() for v in g.variables if v.path.endswith("seed_state")]
    assert len(seeds) == 4 and all(s[1] == 1 for s in seeds) and len({s[0] for s in seeds}) == 4

    # same constructor seed -> same noise seeds; a different one -> different seeds
    g2, g3 = Generator(64, ngf=16, seed=5), Generator(64, ngf=16, seed=6)
    build_models(g2, g3)
    s2 = [v.numpy()[0] for v in g2.variables if v.path.endswith("seed_state")]
    s3 = [v.numpy()[0] for v in g3.variables if v.path.endswith("seed_state")]
    assert s2 == [s[0] for s in seeds] and s2 != s3


def _twin_generators(resolution, **kwargs):
    """Two generators with equal weights and state, their noise inputs visible in the output."""
    twins = [Generator(resolution, ngf=8, nz=16, seed=3, **kwargs).build_for_restore()
             for _ in range(2)]
    twins[1].set_weights(twins[0].get_weights())
    for g in twins:
        for v in g.trainable_variables:
            if v.path.endswith("weight"):  # NoiseInjection weights start at 0
                v.assign(0.5)
    return twins


@pytest.mark.parametrize("resolution", [64, 128, 256])
def test_feature_and_synthesis_stages_reproduce_call(resolution):
    a, b = _twin_generators(resolution)
    z = tf.random.normal((3, 16), seed=1)
    seed = tf.constant([1, 2], tf.int64)
    feats = b.features(z, training=False, noise_seed=seed)
    assert sorted(feats) == [4, 8, 16, 32]  # every feature that gates a later stage
    assert all(f.shape[1] == r for r, f in feats.items())
    for got, expect in zip(b.synthesize(feats, feats, training=False, noise_seed=seed),
                           a(z, training=False, noise_seed=seed)):
        np.testing.assert_array_equal(got.numpy(), expect.numpy())
    # Training calls too: same outputs, and the same state updates (SN u, BN moving statistics,
    # noise counters), i.e. the same ops in the same order.
    feats = b.features(z, training=True)
    for got, expect in zip(b.synthesize(feats, feats, training=True), a(z, training=True)):
        np.testing.assert_array_equal(got.numpy(), expect.numpy())
    assert_same_state(state(a), b)


def test_synthesis_takes_its_gates_from_the_given_features():
    g, _ = _twin_generators(256)
    plain, _ = _twin_generators(256, sle=False)
    z1, z2 = tf.random.normal((2, 16), seed=2), tf.random.normal((2, 16), seed=3)
    seed = tf.constant([0, 0], tf.int64)

    def big(model, content_z, gates_z):
        content = model.features(content_z, training=False, noise_seed=seed)
        gates = model.features(gates_z, training=False, noise_seed=seed)
        return model.synthesize(content, gates, training=False, noise_seed=seed)[0].numpy()

    assert not np.allclose(big(g, z1, z1), big(g, z1, z2))
    # Without SLE nothing is gated: the gating features are not used.
    np.testing.assert_array_equal(big(plain, z1, z2),
                                  plain(z1, training=False, noise_seed=seed)[0].numpy())


def test_seed_none_is_reproducible_with_set_random_seed():
    keras.utils.set_random_seed(7)
    a = Generator(64, ngf=16).build_for_restore()
    keras.utils.set_random_seed(7)
    b = Generator(64, ngf=16).build_for_restore()
    assert a.seed == b.seed
    for va, vb in zip(a.variables, b.variables):
        np.testing.assert_array_equal(va.numpy(), vb.numpy())


def test_checkpoint_round_trip_after_build_for_restore(tmp_path):
    g, d = Generator(64, ngf=16, seed=1), Discriminator(64, ndf=16)
    z = tf.random.normal((2, 256))
    real = tf.random.uniform((2, 64, 64, 3), -1, 1)
    g(z)
    d(real, part=0)  # one training step's worth of state changes
    path = tf.train.Checkpoint(g=g, d=d).save(str(tmp_path / "ck"))
    saved = [n for n, _ in tf.train.list_variables(path) if n.startswith(("g/", "d/"))]
    assert len(saved) == len(g.variables) + len(d.variables)  # nothing silently left out
    g2, d2 = build_models(Generator(64, ngf=16, seed=2), Discriminator(64, ndf=16))
    tf.train.Checkpoint(g=g2, d=d2).restore(path).assert_consumed()
    for m, m2 in ((g, g2), (d, d2)):
        assert [v.path for v in m.variables] == [v.path for v in m2.variables]
        for v, v2 in zip(m.variables, m2.variables):
            np.testing.assert_array_equal(v.numpy(), v2.numpy())
    np.testing.assert_array_equal(g(z, training=True)[0].numpy(), g2(z, training=True)[0].numpy())


def test_gradients_reach_every_variable():
    g = Generator(64, ngf=16)
    d = Discriminator(64, ndf=16)
    z = tf.random.normal((2, 256))
    real = tf.random.uniform((2, 64, 64, 3), -1, 1)
    with tf.GradientTape() as tape:  # noise weights start at 0 and still get a gradient
        big, small = g(z)
        loss = tf.reduce_sum(big) + tf.reduce_sum(small ** 2)
    grads = tape.gradient(loss, g.trainable_variables)
    missing = [v.path for v, gr in zip(g.trainable_variables, grads) if gr is None]
    assert not missing
    assert all(np.isfinite(gr.numpy()).all() for gr in grads)
    assert any(v.path.endswith("noise1/weight") for v in g.trainable_variables)

    with tf.GradientTape() as tape:
        logits, recs = d(real, part=tf.constant(1))
        loss = tf.reduce_mean(logits) + sum(tf.reduce_mean(r ** 2) for r in recs)
    grads = tape.gradient(loss, d.trainable_variables)
    missing = [v.path for v, gr in zip(d.trainable_variables, grads) if gr is None]
    assert not missing and len(grads) == len(d.trainable_variables)
    assert any("decoder_part" in v.path for v in d.trainable_variables)

    # G also receives gradients through D (the G step)
    with tf.GradientTape() as tape:
        loss = -tf.reduce_mean(d(g(z)))
    grads = tape.gradient(loss, g.trainable_variables)
    assert all(gr is not None for gr in grads)


def test_mixed_precision_smoke():
    keras.mixed_precision.set_global_policy("mixed_float16")
    g = Generator(64, ngf=16)
    d = Discriminator(64, ndf=16)
    z = tf.random.normal((2, 256))
    with tf.GradientTape() as tape:
        big, small = g(z)
        logits, recs = d(tf.random.uniform((2, 64, 64, 3), -1, 1), part=tf.constant(0))
        fake_logits = d([big, small])
        loss = tf.reduce_mean(fake_logits) + tf.reduce_mean(logits)
    for t in (big, small, logits, fake_logits, *recs):
        assert t.dtype == tf.float32 and np.isfinite(t.numpy()).all()
    sn = [v for m in (g, d) for v in m.variables if v.path.endswith(("kernel", "/u"))]
    assert sn and all(v.dtype == "float32" for v in sn)
    assert all(v.dtype == "float32" for m in (g, d) for v in m.trainable_variables)
    grads = tape.gradient(loss, g.trainable_variables)
    assert all(gr is not None and np.isfinite(gr.numpy()).all() for gr in grads)
    keras.mixed_precision.set_global_policy("float32")


DISTRIBUTED_SCRIPT = """
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from fastgan_tf.models import Generator, Discriminator
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    g = Generator(64, ngf=16, sync_bn=True, seed=3).build_for_restore()
    d = Discriminator(64, ndf=16, sync_bn=True).build_for_restore()
    for v in g.trainable_variables:
        if v.path.endswith("weight"):
            v.assign(1.0)
z = tf.random.normal((2, 256))
real = tf.random.uniform((2, 64, 64, 3), -1, 1)

@tf.function
def step():
    def fn():
        with tf.GradientTape() as tape:
            big, small = g(z, training=True)
            logits, recs = d(real, part=tf.constant(1), training=True)
            loss = tf.reduce_mean(d([big, small], training=True)) + tf.reduce_mean(logits)
            loss += tf.add_n([tf.reduce_mean(r) for r in recs])
        grads = tape.gradient(loss, g.trainable_variables + d.trainable_variables)
        return big, tf.add_n([tf.reduce_sum(tf.abs(x)) for x in grads])
    return strategy.run(fn)

big, norm = step()
def values(v):  # per-replica values; a Keras variable wraps a MirroredVariable in .value
    return [x.numpy() for x in strategy.experimental_local_results(getattr(v, "value", v))]
assert all(np.isfinite(n) for n in values(norm))
b0, b1 = values(big)
assert not np.allclose(b0, b1), "same z: replicas must still draw different noise"
for v in g.variables + d.variables:
    if v.path.endswith(("moving_mean", "moving_variance", "/u", "seed_state")):
        first, *rest = values(v)
        assert len(rest) == 1
        assert all(np.array_equal(first, r) for r in rest), v.path
print("OK")
"""


@pytest.mark.slow
def test_mirrored_strategy_with_sync_bn(tmp_path):
    """Two logical CPUs (needs a fresh process): sync BN keeps replicas identical, noise differs."""
    import os
    import pathlib
    import subprocess
    import sys

    script = tmp_path / "distributed.py"
    script.write_text(DISTRIBUTED_SCRIPT)
    root = pathlib.Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root), TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="-1")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]


@pytest.mark.slow
def test_models_compile_with_xla():
    """The trainer's `xla` option: a G + D (with decoders) gradient step must compile."""
    g = Generator(64, ngf=16, seed=1).build_for_restore()
    d = Discriminator(64, ndf=16).build_for_restore()

    @tf.function(jit_compile=True)
    def step(z, real, part):
        with tf.GradientTape() as tape:
            big, small = g(z, training=True)
            logits, recs = d(real, part=part, training=True)
            loss = tf.reduce_mean(d([big, small], training=True)) + tf.reduce_mean(logits)
            loss += tf.add_n([tf.reduce_mean(r) for r in recs])
        grads = tape.gradient(loss, g.trainable_variables + d.trainable_variables)
        sample = g(z, training=False, noise_seed=tf.constant([1, 2], tf.int64))[0]
        return loss, tf.add_n([tf.reduce_sum(tf.abs(x)) for x in grads]), sample

    z, real = tf.random.normal((2, 256)), tf.random.uniform((2, 64, 64, 3), -1, 1)
    loss, norm, sample = step(z, real, tf.constant(2))
    assert np.isfinite(loss.numpy()) and np.isfinite(norm.numpy()) and norm.numpy() > 0
    eager = g(z, training=False, noise_seed=tf.constant([1, 2]))[0]
    np.testing.assert_allclose(sample.numpy(), eager.numpy(), rtol=1e-3, atol=1e-4)
