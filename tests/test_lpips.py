"""LPIPS-VGG: lin weights, preprocessing, values against numpy, freezing, weight files, offline."""

import dataclasses
import hashlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from fastgan_tf import downloads, lpips
from fastgan_tf.errors import UserError


@pytest.fixture(scope="module")
def metric():
    keras.utils.set_random_seed(0)
    return lpips.LPIPS(vgg_weights=None)  # random VGG: no download in tests


def _pair(rng, b=2, size=32):
    a = rng.uniform(-1, 1, (b, size, size, 3)).astype(np.float32)
    return a, rng.uniform(-1, 1, (b, size, size, 3)).astype(np.float32)


def test_lin_weights_file():
    with np.load(lpips.LIN_WEIGHTS_PATH) as data:
        assert sorted(data.files) == [f"lin{i}" for i in range(5)]
        for i, c in enumerate((64, 128, 256, 512, 512)):
            w = data[f"lin{i}"]
            assert w.shape == (c,) and w.dtype == np.float32
            assert (w >= 0).all() and w.max() > 0.1
    assert (lpips.LIN_WEIGHTS_PATH.parent / "LPIPS_LICENSE.txt").is_file()


def test_caffe_preprocess_matches_keras(rng):
    x = rng.uniform(-1, 1, (2, 8, 8, 3)).astype(np.float32)
    expected = keras.applications.vgg16.preprocess_input((x + 1) * 127.5)
    np.testing.assert_allclose(lpips.caffe_preprocess(x).numpy(), expected, atol=1e-4)


def test_taps_are_relu_outputs_of_the_right_layers(metric):
    names = [t.name for t in metric.features.outputs]
    assert len(names) == 5
    for tap, out in zip(lpips.TAPS, metric.features.outputs):
        layer = metric.features.get_layer(tap)
        assert layer.activation is keras.activations.relu and out.shape[-1] == layer.filters
    assert [o.shape[-1] for o in metric.features.outputs] == list(lpips.CHANNELS)


def _lpips_numpy(metric, x, y):
    """Direct numpy LPIPS from the tapped features (numpy preprocessing too)."""

    def prep(v):
        return ((v + 1) * 127.5)[..., ::-1] - np.array([103.939, 116.779, 123.68])

    fx = metric.features(prep(x).astype(np.float32))
    fy = metric.features(prep(y).astype(np.float32))
    total = np.zeros(len(x))
    with np.load(lpips.LIN_WEIGHTS_PATH) as data:
        for i, (a, b) in enumerate(zip(fx, fy)):
            a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
            a = a / (np.sqrt((a**2).sum(-1, keepdims=True)) + 1e-10)
            b = b / (np.sqrt((b**2).sum(-1, keepdims=True)) + 1e-10)
            total += ((a - b) ** 2 @ data[f"lin{i}"].astype(np.float64)).mean((1, 2))
    return total


def test_value_matches_numpy(metric, rng):
    x, y = _pair(rng, b=3, size=48)
    got = metric(x, y)
    assert got.shape == (3,) and got.dtype == tf.float32
    np.testing.assert_allclose(got.numpy(), _lpips_numpy(metric, x, y), rtol=1e-5, atol=1e-5)


def test_zero_for_identical_symmetric_positive(metric, rng):
    x, y = _pair(rng)
    np.testing.assert_allclose(metric(x, x).numpy(), 0.0, atol=1e-7)
    np.testing.assert_allclose(metric(x, y).numpy(), metric(y, x).numpy(), rtol=1e-5)
    assert (metric(x, y).numpy() > 1e-4).all()
    # closer images are closer in LPIPS too (same direction, smaller step)
    near = metric(x, x + 0.05 * (y - x)).numpy()
    assert (near < metric(x, y).numpy()).all()


def test_gradients_reach_pred_not_vgg(metric, rng):
    x, y = _pair(rng)
    pred = tf.Variable(x)
    with tf.GradientTape() as tape:
        d = tf.reduce_sum(metric(pred, y))
    assert [v.name for v in tape.watched_variables()] == [pred.name]  # VGG is not even watched
    g = tape.gradient(d, pred)
    assert np.isfinite(g.numpy()).all() and float(tf.reduce_max(tf.abs(g))) > 0
    assert metric.trainable_variables == [] and len(metric.non_trainable_variables) == 26
    assert all(not v.trainable for v in metric.features.weights)


def test_no_nan_gradient_when_a_pixel_has_all_channels_zero():
    f = tf.constant(np.zeros((1, 2, 2, 4), np.float32))
    with tf.GradientTape() as tape:
        tape.watch(f)
        out = tf.reduce_sum(lpips.normalize_channels(f) * 3.0)
    assert np.isfinite(tape.gradient(out, f).numpy()).all()
    v = np.array([[[[3.0, 4.0]]]], np.float32)
    np.testing.assert_allclose(lpips.normalize_channels(v).numpy(), v / (5 + 1e-10), rtol=1e-7)


def test_float32_under_mixed_precision(rng):
    keras.mixed_precision.set_global_policy("mixed_float16")
    m = lpips.LPIPS(vgg_weights=None)
    assert keras.mixed_precision.global_policy().name == "mixed_float16"  # restored
    x, y = _pair(rng)
    out = m(tf.constant(x, tf.float16), tf.constant(y, tf.float16))
    assert out.dtype == tf.float32
    assert all(layer.compute_dtype == "float32" for layer in m.features.layers)


def test_vgg16_is_keras_vgg16_layer_for_layer():
    """Our VGG16 (built here to choose each block's precision) is Keras's: the same layers, names,
    settings and weight shapes, so Keras's weight files load into it (see the file tests below)."""
    ours = lpips.vgg16("bf16")
    theirs = keras.applications.VGG16(include_top=False, weights=None, input_shape=(None, None, 3))
    assert [layer.name for layer in ours.layers[1:]] == [layer.name for layer in theirs.layers[1:]]
    keys = ("filters", "kernel_size", "strides", "padding", "activation", "pool_size")
    for a, b in zip(ours.layers[1:], theirs.layers[1:]):
        assert {k: a.get_config().get(k) for k in keys} == {k: b.get_config().get(k) for k in keys}
    assert [w.shape for w in ours.weights] == [w.shape for w in theirs.weights]


def test_bf16_runs_blocks_3_to_5_in_bfloat16_and_keeps_the_distance(metric, rng):
    bf16 = lpips.LPIPS(vgg_weights=None, precision="bf16")
    bf16.features.set_weights(metric.features.get_weights())
    blocks = [layer for layer in bf16.features.layers if layer.name.startswith("block")]
    assert len(blocks) == 17  # 13 convolutions, 4 pools before block 5's last convolution
    for layer in blocks:
        block = int(layer.name[len("block")])
        assert layer.compute_dtype == ("bfloat16" if block >= lpips.BF16_FROM_BLOCK else "float32")
    assert all(w.dtype == "float32" and not w.trainable for w in bf16.features.weights)
    x, y = _pair(rng, b=3, size=48)
    pred = tf.Variable(x)
    grads = []
    for m in (metric, bf16):
        with tf.GradientTape() as tape:
            d = m(pred, y)
            total = tf.reduce_sum(d)
        grads.append(tape.gradient(total, pred).numpy().reshape(3, -1))
        assert d.dtype == tf.float32 and m.trainable_variables == []
        if m is metric:
            want = d.numpy()
    np.testing.assert_allclose(d.numpy(), want, rtol=2e-3)  # 1e-4 here: random VGG weights
    a, b = grads
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert (cosine > 0.98).all(), cosine
    with pytest.raises(ValueError, match="float16"):
        lpips.LPIPS(vgg_weights=None, precision="float16")


def test_works_in_xla(metric, rng):
    x, y = _pair(rng)
    fn = tf.function(lambda a, b: metric(a, b), jit_compile=True)
    np.testing.assert_allclose(fn(x, y).numpy(), metric(x, y).numpy(), rtol=1e-4)


# --- VGG16 weight files ------------------------------------------------------------------------


def _save_random_vgg(path):
    """A random VGG16 (no top) saved in Keras's legacy .h5 layout, like the real file."""
    keras.utils.set_random_seed(1)
    vgg = keras.applications.VGG16(include_top=False, weights=None, input_shape=(None, None, 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    vgg.save(path)
    return vgg


def _offline(monkeypatch):
    monkeypatch.setattr(downloads, "probe", lambda url, timeout: "offline")
    monkeypatch.setattr(downloads, "download", lambda *a, **k: pytest.fail("download called"))


def test_weights_path_follows_keras_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    expected = tmp_path / "kh" / "models" / downloads.VGG16_NOTOP.name
    assert lpips.vgg16_weights_path() == expected
    assert not lpips.vgg16_weights_available()


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # keras h5 saver
def test_loads_cached_imagenet_file_and_explicit_path(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    cached = tmp_path / "models" / downloads.VGG16_NOTOP.name
    vgg = _save_random_vgg(cached)
    _offline(monkeypatch)
    assert not lpips.vgg16_weights_available()  # wrong hash: not the real file
    with pytest.raises(UserError, match="not usable .its checksum is wrong"):
        lpips.fetch_vgg16_weights()  # ... so it is not used
    digest = hashlib.md5(cached.read_bytes()).hexdigest()
    monkeypatch.setattr(downloads, "VGG16_NOTOP",
                        dataclasses.replace(downloads.VGG16_NOTOP, checksum=f"md5:{digest}"))
    assert lpips.vgg16_weights_available()
    for weights, precision in (("imagenet", "float32"), (cached, "float32"), (str(cached), "bf16")):
        m = lpips.LPIPS(vgg_weights=weights, precision=precision)
        assert len(m.features.weights) == len(vgg.weights) == 26
        for a, b in zip(m.features.weights, vgg.weights):
            np.testing.assert_array_equal(a.value.numpy(), b.value.numpy())


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # keras h5 saver
def test_trainer_builds_lpips_in_the_configured_precision(tmp_path):
    from fastgan_tf.config import TrainConfig
    from fastgan_tf.training.fastgan import make_fastgan

    _save_random_vgg(tmp_path / "vgg16.h5")
    for precision, dtype in (("float32", "float32"), ("bf16", "bfloat16")):
        cfg = TrainConfig(dataset="demo", resolution=64, ngf=8, ndf=8, lpips_precision=precision,
                          vgg_weights=str(tmp_path / "vgg16.h5"))
        features = make_fastgan(cfg).recon_fn.lpips.features
        assert features.get_layer("block5_conv3").compute_dtype == dtype
        assert features.get_layer("block2_conv2").compute_dtype == "float32"


def test_bad_weight_paths_raise_user_error(tmp_path):
    with pytest.raises(UserError, match="not found") as e:
        lpips.LPIPS(vgg_weights=tmp_path / "nope.h5")
    assert "--recon-loss l1" in str(e.value)
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not an hdf5 file")
    with pytest.raises(UserError, match="junk.h5") as e:
        lpips.LPIPS(vgg_weights=junk)
    assert "\n" not in str(e.value) and "--recon-loss l1" in str(e.value)


def _assert_offline_message(err, keras_home):
    msg = str(err)
    assert "\n" not in msg
    for part in (downloads.VGG16_NOTOP.name, str(keras_home / "models"), downloads.VGG16_NOTOP.url,
                 "LPIPS", "--recon-loss l1", "--vgg-weights PATH"):
        assert part in msg, part


def test_offline_download_failure_is_one_line_user_error(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(downloads, "probe", lambda url, timeout: None)  # pretend the host answers
    calls = []

    def offline_download(url, dest, checksum=None, **kwargs):
        calls.append((url, dest, checksum))
        raise downloads.DownloadError("unreachable ([Errno -2] Name or service not known)")

    monkeypatch.setattr(downloads, "download", offline_download)
    with pytest.raises(UserError) as e:
        lpips.LPIPS()
    _assert_offline_message(e.value, tmp_path)
    assert "Name or service not known" in str(e.value)
    vgg16 = downloads.VGG16_NOTOP
    assert calls == [(vgg16.url, tmp_path / "models" / vgg16.name, vgg16.checksum)]


def test_unreachable_host_skips_the_download(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    _offline(monkeypatch)
    with pytest.raises(UserError) as e:
        lpips.fetch_vgg16_weights()
    _assert_offline_message(e.value, tmp_path)


def test_batched_pairs_keep_the_loss_and_gradients_of_one_call_per_pair(rng):
    """FastGAN's reconstruction loss: three predictions, two distinct targets. One VGG pass over
    the predictions and one, untaped, over the targets must give what three calls gave."""
    from fastgan_tf.losses import reconstruction_loss

    loss = reconstruction_loss("lpips", vgg_weights=None)
    preds = [tf.Variable(rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)) for _ in range(3)]
    whole = tf.Variable(rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32))
    piece = tf.Variable(rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32))
    targets = [whole, whole, piece]

    with tf.GradientTape() as tape:
        before = sum(tf.reduce_sum(loss(p, t)) for p, t in zip(preds, targets))
    expected = tape.gradient(before, preds)
    batches = []
    taps = loss.lpips.taps
    loss.lpips.taps = lambda images: batches.append(images.shape[0]) or taps(images)
    with tf.GradientTape() as tape:
        after = sum(tf.reduce_sum(d) for d in loss.pairs(preds, targets))
    got = tape.gradient(after, preds + [whole, piece])
    assert sorted(batches) == [4, 6]  # the shared target went through VGG16 once
    np.testing.assert_allclose(after.numpy(), before.numpy(), rtol=1e-5)
    for g, e in zip(got[:3], expected):
        np.testing.assert_allclose(g.numpy(), e.numpy(), rtol=1e-4, atol=1e-7)
    assert got[3] is None and got[4] is None  # the targets stay constants


def test_tap_distance_hand_gradient_equals_autodiff(rng):
    """The hand-written backward of one tap's distance against autodiff of its plain formula,
    with a dead pixel (all channels 0, the norm's floor) and gradients to both sides."""
    a = rng.uniform(0, 2, (3, 5, 4, 8)).astype(np.float32)
    a[0, 1, 2] = 0.0
    a[1, 0, 0, :7] = 0.0  # one live channel
    a = tf.Variable(a)
    b_hat = tf.Variable(lpips.normalize_channels(rng.uniform(0, 2, (3, 5, 4, 8)).astype(np.float32)))
    w = tf.constant(rng.uniform(0, 1, 8).astype(np.float32))
    up = tf.constant([0.5, -1.0, 2.0])

    def autodiff(a, b_hat):
        diff = tf.square(lpips.normalize_channels(a) - b_hat)
        return tf.reduce_mean(tf.reduce_sum(diff * w, axis=-1), axis=[1, 2])

    results = []
    for fn in (autodiff, lambda x, y: lpips.tap_distance(x, y, w)):
        with tf.GradientTape() as tape:
            d = fn(a, b_hat)
            loss = tf.reduce_sum(d * up)
        results.append([d, *tape.gradient(loss, [a, b_hat])])
    for got, want in zip(results[1], results[0]):
        assert np.isfinite(got.numpy()).all()
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=2e-5, atol=1e-7)
    assert float(tf.reduce_max(tf.abs(results[1][1]))) > 0
