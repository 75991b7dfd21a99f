"""Inception feature extractors for FID/KID, behind one interface.

- "keras": keras.applications.InceptionV3 with ImageNet weights (the default). Easy to get, fine for
  tracking a run, but its FID is NOT comparable with published numbers.
- "standard": the TensorFlow Inception graph of 2015-12-05 used by TTUR, pytorch-fid, clean-fid and
  the papers (FastGAN included), so FID/KID are comparable with the literature.

Both map NHWC images (uint8, or float in [-1, 1]) of any size to (N, 2048) pool features, in batches
of at most `batch_size` under a tf.function. Float images are first quantised to 0..255 like a
saved PNG, so generated images are measured the way stored real images are.
"""

import tarfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from google.protobuf.message import DecodeError

from fastgan_tf import downloads
from fastgan_tf.downloads import INCEPTION_GRAPH_FILE as STANDARD_GRAPH_FILE
from fastgan_tf.errors import UserError, one_line

BACKBONES = ("keras", "standard")
FEATURE_DIM = 2048
DEFAULT_BATCH_SIZE = 32  # measured fastest on CPU; ~1.5 GB of activations on a GPU
KERAS_INPUT_SIZE = 299

STANDARD_INPUT = "ExpandDims:0"  # (1, H, W, 3) float 0..255, before the graph's own resize to 299
STANDARD_OUTPUT = "pool_3:0"  # (1, 1, 1, 2048)


# --------------------------------------------------------------------------- weight files


def _check_name(name):
    if name not in BACKBONES:
        raise UserError(f"unknown FID backbone {name!r}: choose one of {', '.join(BACKBONES)}")


def backbone_weights(name):
    """The downloads table entry of backbone `name` (file, URL, cache folder, checksum)."""
    _check_name(name)
    return downloads.INCEPTION_V3_NOTOP if name == "keras" else downloads.INCEPTION_2015


def backbone_weights_path(name):
    """Where the cached weights of backbone `name` live (whether or not they exist yet)."""
    return backbone_weights(name).path


def backbone_weights_available(name):
    """True if verified weights are cached, so loading needs no download (lets a trainer skip
    FID). For "standard", an extracted classify_image_graph_def.pb beside the .tgz counts too."""
    return downloads.cached(backbone_weights(name)) is not None


def _existing_file(weights, suffixes, what):
    path = Path(weights).expanduser()
    if not path.is_file():
        raise UserError(f"{what} weights file {path} not found: pass the path of an existing "
                        "file (--inception-weights), or none to use the cached weights")
    if not path.name.lower().endswith(suffixes):
        raise UserError(f"{what} weights file {path} should end with {' or '.join(suffixes)}")
    return path


# --------------------------------------------------------------------------- backbones


def to_pixels(images):
    """uint8, or float in [-1, 1] -> float32 0..255, quantised like StyleGAN2-ADA saves images.

    floor(x * 127.5 + 128) clipped to 0..255 maps u / 127.5 - 1 back to exactly u for every uint8 u.
    Grayscale (C=1) is repeated to RGB.
    """
    x = tf.convert_to_tensor(images)
    if x.shape.rank != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(f"images must be NHWC with 1 or 3 channels, got shape {x.shape}")
    if x.dtype == tf.uint8:
        x = tf.cast(x, tf.float32)
    elif x.dtype.is_floating:
        x = tf.floor(tf.clip_by_value(tf.cast(x, tf.float32) * 127.5 + 128.0, 0.0, 255.0))
    else:
        raise ValueError(f"images must be uint8 or float in [-1, 1], got {x.dtype.name}")
    if x.shape[-1] == 1:
        x = tf.tile(x, [1, 1, 1, 3])
    return x


class Backbone:
    """Images -> (N, 2048) float32 features, `batch_size` images at a time.

    Subclasses implement `_features_from_pixels` (float32 0..255 NHWC -> (B, 2048)); it is traced
    once with a dynamic batch and size. `variant` identifies the features for caching (e.g. the
    random-init or reduced-size test variants must never share a cache with the real thing).
    """

    name = None
    feature_dim = FEATURE_DIM

    def __init__(self, batch_size, variant):
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.variant = variant
        self._forward = tf.function(
            self._features_from_pixels,
            input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)],
        )

    def _features_from_pixels(self, pixels):
        raise NotImplementedError

    def features(self, images):
        """NHWC uint8 or float [-1, 1] images of any size -> (N, 2048) float32 numpy features."""
        if not hasattr(images, "shape"):
            images = np.asarray(images)
        chunks = [
            self._forward(to_pixels(images[i : i + self.batch_size])).numpy()
            for i in range(0, images.shape[0], self.batch_size)
        ]
        if not chunks:
            return np.zeros((0, self.feature_dim), np.float32)
        return np.concatenate(chunks).astype(np.float32, copy=False)

    def __repr__(self):
        return f"{type(self).__name__}(variant={self.variant!r}, batch_size={self.batch_size})"


class KerasInception(Backbone):
    """keras.applications.InceptionV3, average-pooled 2048-d features at 299x299.

    weights: "imagenet" (Keras cache, downloaded on first use), None (random init: tests only), or
    a path to an .h5 weights file. input_size < 299 is only meant to keep tests fast (Keras's
    minimum is 75); features at another size are a different variant.
    """

    name = "keras"

    def __init__(
        self, weights="imagenet", batch_size=DEFAULT_BATCH_SIZE, input_size=KERAS_INPUT_SIZE
    ):
        if input_size < 75:
            raise ValueError(f"InceptionV3 needs input_size >= 75, got {input_size}")
        variant = "keras"
        if isinstance(weights, str) and weights == "imagenet":
            path = downloads.fetch(backbone_weights("keras"))
        elif weights is None:
            path, variant = None, "keras-random"
        else:
            path = _existing_file(weights, (".h5",), "Keras InceptionV3")
        if input_size != KERAS_INPUT_SIZE:
            variant += f"-{input_size}px"
        self.input_size = int(input_size)
        self.model = self._build(path)
        super().__init__(batch_size, variant)

    def _build(self, path):
        # FID statistics need float32, whatever mixed-precision policy the trainer has set.
        policy = keras.config.dtype_policy()
        keras.config.set_dtype_policy("float32")
        try:
            size = self.input_size
            model = keras.applications.InceptionV3(
                include_top=False, weights=None, pooling="avg", input_shape=(size, size, 3)
            )
        finally:
            keras.config.set_dtype_policy(policy)
        if path is not None:
            try:
                model.load_weights(path)
            except Exception as e:
                raise UserError(
                    f"cannot load Keras InceptionV3 weights from {path}: {one_line(e)}"
                ) from e
        return model

    def _features_from_pixels(self, pixels):
        size = [self.input_size, self.input_size]
        x = tf.image.resize(pixels, size, method="bilinear", antialias=True)
        x = x / 127.5 - 1.0  # keras.applications.inception_v3.preprocess_input
        return tf.cast(self.model(x, training=False), tf.float32)


def _graph_bytes_from_tgz(path):
    with tarfile.open(path, "r:*") as tar:
        for member in tar.getmembers():
            if member.isfile() and Path(member.name).name == STANDARD_GRAPH_FILE:
                return tar.extractfile(member).read()
    raise UserError(f"{path} does not contain {STANDARD_GRAPH_FILE}: use the original "
                    f"{downloads.INCEPTION_2015.url}")


def _read_graph_def(path):
    """The GraphDef from classify_image_graph_def.pb, or from inside the original .tgz."""
    try:
        if path.name.lower().endswith(".pb"):
            data = path.read_bytes()
        else:
            data = _graph_bytes_from_tgz(path)
        return tf.compat.v1.GraphDef.FromString(data)
    except (OSError, tarfile.TarError, EOFError, DecodeError) as e:
        raise UserError(
            f"{path} is not a readable Inception graph ({one_line(e)}): delete it to re-download, "
            f"or get {downloads.INCEPTION_2015.url}"
        ) from e


def _node(name, op, inputs, dtype, **attrs):
    node = tf.compat.v1.NodeDef(name=name, op=op, input=inputs)
    node.attr["T" if op != "Const" else "dtype"].type = dtype
    for key, value in attrs.items():
        node.attr[key].CopyFrom(value)
    return node


def _batchnorm_as_basic_ops(node):
    """Rewrite BatchNormWithGlobalNormalization as (x - mean) * rsqrt(var + eps) [* gamma] + beta.

    The 2015 graph uses this op, which was removed in GraphDef version 9: TF2 functions run at the
    current version and refuse it. Same arithmetic order as its kernel; the last node keeps the
    original name so consumers are untouched.
    """
    x, mean, var, beta, gamma = [i for i in node.input if not i.startswith("^")]
    controls = [i for i in node.input if i.startswith("^")]
    dtype = node.attr["T"].type
    eps = tf.compat.v1.AttrValue(
        tensor=tf.make_tensor_proto(node.attr["variance_epsilon"].f, dtype=tf.as_dtype(dtype))
    )
    p = node.name + "/_as_basic_ops"
    nodes = [
        _node(f"{p}/eps", "Const", [], dtype, value=eps),
        _node(f"{p}/var_eps", "AddV2", [var, f"{p}/eps"], dtype),
        _node(f"{p}/rsqrt", "Rsqrt", [f"{p}/var_eps"], dtype),
    ]
    factor = f"{p}/rsqrt"
    if node.attr["scale_after_normalization"].b:
        nodes.append(_node(f"{p}/factor", "Mul", [factor, gamma], dtype))
        factor = f"{p}/factor"
    nodes += [
        _node(f"{p}/centred", "Sub", [x, mean], dtype),
        _node(f"{p}/scaled", "Mul", [f"{p}/centred", factor], dtype),
        _node(node.name, "AddV2", [f"{p}/scaled", beta] + controls, dtype),
    ]
    return nodes


def _prepare_graph_def(graph_def, path):
    """Make the 2015 graph usable with a dynamic batch in TF2.

    TTUR patches every tensor's static batch-1 shape to None after import. Here the GraphDef is
    fixed before import instead: recorded `_output_shapes` (batch 1) are dropped so shape inference
    sees the fed batch, pinned devices are cleared, and removed ops are rewritten.
    """
    names = {node.name for node in graph_def.node}
    for tensor in (STANDARD_INPUT, STANDARD_OUTPUT):
        if tensor.split(":")[0] not in names:
            raise UserError(f"{path} has no tensor {tensor}: it is not the 2015-12-05 Inception "
                            f"graph ({downloads.INCEPTION_2015.url})")
    out = tf.compat.v1.GraphDef()
    out.versions.CopyFrom(graph_def.versions)
    out.library.CopyFrom(graph_def.library)
    for node in graph_def.node:
        if node.op == "BatchNormWithGlobalNormalization":
            out.node.extend(_batchnorm_as_basic_ops(node))
        else:
            out.node.add().CopyFrom(node)
    for node in out.node:
        if "_output_shapes" in node.attr:
            del node.attr["_output_shapes"]
        node.device = ""
    return out


def _wrap_graph(graph_def, path):
    """A concrete function (B, H, W, 3) float 0..255 -> pool_3 (B, 1, 1, 2048)."""

    def _import(images):
        (pool,) = tf.compat.v1.import_graph_def(
            graph_def,
            input_map={STANDARD_INPUT: images},
            return_elements=[STANDARD_OUTPUT],
            name="inception_2015",
        )
        return pool

    try:
        signature = [tf.TensorSpec([None, None, None, 3], tf.float32)]
        return tf.compat.v1.wrap_function(_import, signature)
    except (ValueError, TypeError, tf.errors.OpError) as e:
        reason = one_line(e)[:300]
        raise UserError(f"cannot import the Inception graph from {path}: {reason}") from e


class StandardInception(Backbone):
    """The 2015-12-05 TF Inception graph (TTUR / pytorch-fid / clean-fid), pool_3 features.

    Like TTUR, images go in as float 0..255 at their own size at 'ExpandDims:0'; the graph itself
    resizes them to 299 (legacy TF bilinear) and rescales them. weights: "imagenet" (the
    fastgan_tf cache folder, see fastgan_tf.paths.cache_dir; downloaded on first use and checked
    as fastgan_tf.downloads explains: no checksum of it is published) or a path to the original
    .tgz or to classify_image_graph_def.pb.
    """

    name = "standard"

    def __init__(self, weights="imagenet", batch_size=DEFAULT_BATCH_SIZE):
        if weights is None:
            raise UserError("the standard backbone has no random initialisation: use "
                            "weights='imagenet' or a path to inception-2015-12-05.tgz")
        if isinstance(weights, str) and weights == "imagenet":
            path = downloads.fetch(backbone_weights("standard"))
        else:
            path = _existing_file(weights, (".tgz", ".tar.gz", ".pb"), "Standard Inception")
        self.weights_path = path
        self._graph_fn = _wrap_graph(_prepare_graph_def(_read_graph_def(path), path), path)
        super().__init__(batch_size, "standard")

    def _features_from_pixels(self, pixels):
        return tf.reshape(self._graph_fn(pixels), [-1, FEATURE_DIM])


def load_backbone(name="keras", weights="imagenet", batch_size=DEFAULT_BATCH_SIZE, input_size=None):
    """Build the FID/KID feature extractor `name` (see BACKBONES).

    weights: "imagenet" = the published weights from the cache (downloaded on first use; offline
    -> UserError saying where to put the file), a path to a weights file, or None (random init,
    keras only, for tests). input_size: keras only, below 299 for fast pipeline checks (tests and
    benchmarks/ablations.py offline); its features are a variant of their own, never cached
    together with the real ones.
    """
    _check_name(name)
    if name == "keras":
        return KerasInception(weights, batch_size, input_size or KERAS_INPUT_SIZE)
    if input_size is not None:
        raise ValueError("input_size applies only to the keras backbone")
    return StandardInception(weights, batch_size)
