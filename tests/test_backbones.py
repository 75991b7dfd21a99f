"""Inception backbones: random-weight Keras InceptionV3 at 75 px, and a tiny stand-in for the
2015-12-05 Inception graph (the real files cannot be downloaded here)."""

import tarfile
import urllib.error
import urllib.request

import h5py
import numpy as np
import pytest
import tensorflow as tf

from fastgan_tf import downloads
from fastgan_tf.errors import UserError
from fastgan_tf.metrics import backbones
from fastgan_tf.metrics import (
    backbone_weights_available,
    backbone_weights_path,
    load_backbone,
)

SMALL = 75  # Keras's minimum InceptionV3 input: keeps the Keras tests fast (tests only)


def _images(rng, n, size=32):
    u8 = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    return u8, (u8.astype(np.float32) / 127.5 - 1.0)


def _assert_one_line(error, *parts):
    message = str(error.value)
    assert "\n" not in message
    for part in parts:
        assert str(part) in message, f"{part!r} not in {message!r}"


def test_to_pixels_quantises_like_saved_images():
    u8 = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
    pixels = backbones.to_pixels(u8.astype(np.float32) / 127.5 - 1.0).numpy()
    assert pixels.shape == (1, 16, 16, 3)
    np.testing.assert_array_equal(pixels[..., 0], u8[..., 0])
    out_of_range = backbones.to_pixels(np.array([-3.0, 1.0, 2.0], np.float32).reshape(1, 1, 1, 3))
    np.testing.assert_array_equal(out_of_range.numpy().ravel(), [0.0, 255.0, 255.0])


# --------------------------------------------------------------------------- keras


@pytest.fixture(scope="module")
def keras_backbone():
    return load_backbone("keras", weights=None, batch_size=4, input_size=SMALL)


def test_keras_features_shape_batches_and_dtypes(keras_backbone, rng):
    u8, f = _images(rng, 5)
    feats = keras_backbone.features(f)  # one batch of 4, then 1
    assert feats.shape == (5, 2048) and feats.dtype == np.float32
    assert np.isfinite(feats).all() and np.ptp(feats, axis=0).max() > 0
    per_image = np.concatenate([keras_backbone.features(f[i : i + 1]) for i in range(5)])
    np.testing.assert_allclose(feats, per_image, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(keras_backbone.features(u8), feats, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(keras_backbone.features(tf.constant(f)), feats, rtol=1e-5, atol=1e-6)
    assert keras_backbone.name == "keras" and keras_backbone.feature_dim == 2048
    assert keras_backbone.variant == "keras-random-75px"


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Keras's own legacy-HDF5 writer
def test_keras_weights_file_is_honoured(keras_backbone, rng, tmp_path):
    _, f = _images(rng, 3, size=40)
    expected = keras_backbone.features(f)
    # The format of Keras's own inception_v3_..._notop.h5 (legacy HDF5 weights) ...
    legacy = tmp_path / "inception_notop.h5"
    with h5py.File(legacy, "w") as h5:
        from keras.src.legacy.saving import legacy_h5_format

        legacy_h5_format.save_weights_to_hdf5_group(h5, keras_backbone.model)
    # ... and Keras 3's .weights.h5. Each load starts from a new random init, so equal features
    # mean the file was read.
    modern = tmp_path / "inception.weights.h5"
    keras_backbone.model.save_weights(modern)
    for weights in (legacy, str(modern)):
        backbone = load_backbone("keras", weights=weights, input_size=SMALL)
        assert backbone.variant == "keras-75px"
        np.testing.assert_allclose(backbone.features(f), expected, rtol=1e-5, atol=1e-6)


def test_keras_offline_message(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setattr(downloads, "probe", lambda url, timeout: "Name or service not known")
    monkeypatch.setattr(downloads, "download", lambda *a, **k: pytest.fail("download called"))
    weights = downloads.INCEPTION_V3_NOTOP
    expected_path = tmp_path / "keras_home" / "models" / weights.name
    assert backbone_weights_path("keras") == expected_path
    assert not backbone_weights_available("keras")
    with pytest.raises(UserError) as error:
        load_backbone("keras", input_size=SMALL)
    _assert_one_line(error, weights.name, weights.url, expected_path.parent,
                     "Name or service not known", "--inception-weights PATH")


def test_imagenet_weights_are_fetched_through_the_downloads_table(monkeypatch):
    fetched = []

    def fetch(weights, *args):
        fetched.append(weights)
        raise UserError("stop before building the model")

    monkeypatch.setattr(downloads, "fetch", fetch)
    for name in backbones.BACKBONES:
        with pytest.raises(UserError, match="stop before"):
            load_backbone(name)
    assert fetched == [downloads.INCEPTION_V3_NOTOP, downloads.INCEPTION_2015]


def test_missing_weights_file_and_unknown_name(tmp_path):
    with pytest.raises(UserError) as error:
        load_backbone("keras", weights=tmp_path / "nope.h5", input_size=SMALL)
    _assert_one_line(error, tmp_path / "nope.h5")
    with pytest.raises(UserError, match="unknown FID backbone"):
        load_backbone("vgg")


# --------------------------------------------------------------------------- standard (2015 graph)

RESIZE = 9  # the stand-in graph resizes to 9x9 instead of 299x299 to stay cheap
EPS = 0.001


def _stand_in_graph_def(params):
    """A small GraphDef shaped like classify_image_graph_def.pb around the tensors the loader uses.

    Like the original: a batch-1 'ExpandDims' after a decoded image, the graph's own bilinear resize
    and (x - 128) / 128, a BatchNormWithGlobalNormalization (removed from TF in GraphDef version 9),
    `_output_shapes` recording batch 1 everywhere, and 'pool_3' of shape (1, 1, 1, 2048).
    """
    graph = tf.Graph()
    with graph.as_default():
        decoded = tf.compat.v1.placeholder(tf.uint8, [None, None, 3], name="DecodeJpeg")
        x = tf.expand_dims(tf.cast(decoded, tf.float32, name="Cast"), 0, name="ExpandDims")
        x = tf.compat.v1.image.resize_bilinear(x, [RESIZE, RESIZE], name="ResizeBilinear")
        x = tf.multiply(tf.subtract(x, 128.0, name="Sub"), 1.0 / 128.0, name="Mul")
        x = tf.nn.conv2d(x, tf.constant(params["kernel"]), 1, "SAME", name="conv/Conv2D")
        bn_names = ("mean", "var", "beta", "gamma")
        bn_inputs = [tf.constant(params[k], name=f"conv/batchnorm/{k}") for k in bn_names]
        x = tf.identity(x, name="conv/batchnorm")  # becomes BatchNormWithGlobalNormalization below
        x = tf.nn.relu(x, name="conv")
        shape = tf.raw_ops.Shape(input=x)  # a dynamic-shape op, like real graphs have
        x = tf.reduce_mean(tf.reshape(x, tf.stack([shape[0], -1, 2048])), axis=1)
        pool = tf.reshape(x, tf.stack([shape[0], 1, 1, 2048]), name="pool_3")
        assert pool.shape.as_list() == [1, 1, 1, 2048]
    graph_def = graph.as_graph_def(add_shapes=True)
    graph_def.versions.producer = 5
    bn = next(node for node in graph_def.node if node.name == "conv/batchnorm")
    bn.op = "BatchNormWithGlobalNormalization"
    bn.input.extend(t.op.name for t in bn_inputs)
    bn.attr["variance_epsilon"].f = EPS
    bn.attr["scale_after_normalization"].b = True
    assert len(bn.attr["_output_shapes"].list.shape[0].dim) == 4
    return graph_def


def _direct(stand_in, u8):
    """The stand-in graph's computation written out with TF eager + numpy, batch at once."""
    params = stand_in["params"]
    x = tf.compat.v1.image.resize_bilinear(tf.cast(u8, tf.float32), [RESIZE, RESIZE]).numpy()
    x = tf.nn.conv2d((x - 128.0) / 128.0, params["kernel"], 1, "SAME").numpy().astype(np.float64)
    x = (x - params["mean"]) / np.sqrt(params["var"] + EPS) * params["gamma"] + params["beta"]
    return np.maximum(x, 0.0).mean(axis=(1, 2))


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory):
    rng = np.random.default_rng(5)
    params = {
        "kernel": (rng.normal(size=(3, 3, 3, 2048)) * 0.2).astype(np.float32),
        "mean": rng.normal(size=2048).astype(np.float32) * 0.1,
        "var": rng.uniform(0.5, 2.0, size=2048).astype(np.float32),
        "beta": rng.normal(size=2048).astype(np.float32) * 0.1,
        "gamma": rng.uniform(0.5, 1.5, size=2048).astype(np.float32),
    }
    folder = tmp_path_factory.mktemp("inception")
    pb = folder / backbones.STANDARD_GRAPH_FILE
    pb.write_bytes(_stand_in_graph_def(params).SerializeToString())
    (folder / "LICENSE").write_text("stand-in")
    tgz = folder / "inception-2015-12-05.tgz"
    with tarfile.open(tgz, "w:gz") as tar:  # same layout as the original archive
        tar.add(pb, arcname=backbones.STANDARD_GRAPH_FILE)
        tar.add(folder / "LICENSE", arcname="LICENSE")
    return {"params": params, "tgz": tgz, "pb": pb}


def test_standard_batches_match_single_images_and_direct_computation(stand_in, rng):
    backbone = load_backbone("standard", weights=stand_in["tgz"], batch_size=3)
    assert (backbone.name, backbone.variant, backbone.feature_dim) == ("standard", "standard", 2048)
    # TTUR's patch: the recorded batch-1 static shapes must not survive the import, or any caller
    # tracing with a concrete batch size fails with "Dimension 0 ... are 7 and 1".
    assert backbone._graph_fn.structured_outputs.shape.as_list() == [None, 1, 1, 2048]
    u8, f = _images(rng, 7, size=20)
    feats = backbone.features(u8)  # batches of 3, 3, 1
    assert feats.shape == (7, 2048)
    per_image = np.concatenate([backbone.features(u8[i : i + 1]) for i in range(7)])
    np.testing.assert_allclose(feats, per_image, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(feats, _direct(stand_in, u8), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(backbone.features(f), feats, rtol=1e-6, atol=1e-6)
    # Any input size: the graph resizes by itself.
    u8_big, _ = _images(rng, 2, size=33)
    big = backbone.features(u8_big)
    np.testing.assert_allclose(big, _direct(stand_in, u8_big), rtol=1e-4, atol=1e-5)
    # The bare .pb works too.
    from_pb = load_backbone("standard", weights=stand_in["pb"], batch_size=8)
    np.testing.assert_allclose(from_pb.features(u8), feats, rtol=1e-6, atol=1e-6)


def _no_network(*args, **kwargs):
    raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")


def test_standard_uses_cache_folder(stand_in, tmp_path, monkeypatch, rng):
    monkeypatch.setenv("FASTGAN_CACHE", str(tmp_path))
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    tgz = tmp_path / "inception-2015-12-05.tgz"
    assert backbone_weights_path("standard") == tgz
    assert not backbone_weights_available("standard")
    tgz.write_bytes(stand_in["tgz"].read_bytes())
    assert backbone_weights_available("standard")
    u8, _ = _images(rng, 2, size=16)
    feats = load_backbone("standard").features(u8)
    np.testing.assert_allclose(feats, _direct(stand_in, u8), rtol=1e-4, atol=1e-5)
    # No checksum is published: the first copy that passed the content check was recorded, and a
    # later change of the file is caught (here offline: one line that says why).
    assert (tmp_path / "inception-2015-12-05.tgz.sha256").read_text().split()[1] == tgz.name
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(stand_in["pb"], arcname=backbones.STANDARD_GRAPH_FILE)
    assert not backbone_weights_available("standard")
    with pytest.raises(UserError) as error:
        load_backbone("standard")
    _assert_one_line(error, tgz.name, "is not the copy first checked here",
                     "--inception-weights PATH")


def test_standard_accepts_an_extracted_graph_in_the_cache(stand_in, tmp_path, monkeypatch, rng):
    monkeypatch.setenv("FASTGAN_CACHE", str(tmp_path))
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    (tmp_path / backbones.STANDARD_GRAPH_FILE).write_bytes(stand_in["pb"].read_bytes())
    assert backbone_weights_available("standard")
    backbone = load_backbone("standard")
    assert backbone.weights_path == tmp_path / backbones.STANDARD_GRAPH_FILE


def test_standard_offline_message(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTGAN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    with pytest.raises(UserError) as error:
        load_backbone("standard")
    target = tmp_path / "cache" / "inception-2015-12-05.tgz"
    _assert_one_line(error, downloads.INCEPTION_2015.url, target.name, target.parent,
                     "--fid-every 0")
    assert not (tmp_path / "cache").exists()  # nothing written, not even the folder


def test_standard_rejects_wrong_files(tmp_path):
    not_inception = tmp_path / "other.tgz"
    (tmp_path / "readme.txt").write_text("x")
    with tarfile.open(not_inception, "w:gz") as tar:
        tar.add(tmp_path / "readme.txt", arcname="readme.txt")
    with pytest.raises(UserError) as error:
        load_backbone("standard", weights=not_inception)
    _assert_one_line(error, not_inception, backbones.STANDARD_GRAPH_FILE)
    garbage = tmp_path / "classify_image_graph_def.pb"
    garbage.write_bytes(b"\x00not a graph")
    with pytest.raises(UserError) as error:
        load_backbone("standard", weights=garbage)
    _assert_one_line(error, garbage)
    with pytest.raises(UserError):
        load_backbone("standard", weights=None)
