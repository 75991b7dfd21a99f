"""Export the EMA generator for use without fastgan-tf: a SavedModel plus a `.keras` archive,
and on request TensorFlow Lite models.

`DIR` becomes a TensorFlow SavedModel (load it with `tf.saved_model.load(DIR)`, no fastgan_tf
needed) with two signatures:

- ``serving_default(z)``: z float32 (N, nz) -> {"images": uint8 (N, R, R, C),
  "images_float": float32 (N, R, R, C) in [-1, 1]}, noise from the fixed seed (0, 0); C is 3, or
  1 for a greyscale (``--channels 1``) run;
- ``generate_with_noise_seed(z, noise_seed)``: the same with noise_seed int64 (2,), e.g. to
  reproduce `evaluate.py --generate`, whose k-th batch uses noise seed (seed, k).

Next to it: ``generator.keras`` (the Keras model: `keras.saving.load_model` with fastgan_tf
imported, which registers the classes; see `load_keras_export`), ``generator.json`` (constructor
arguments, signatures and provenance) and README.txt.

With ``tflite=True`` also ``generator.tflite`` (float32 weights) and ``generator_fp16.tflite``
(float16 weights): serving_default for a fixed batch of latents, built from only TFLite's builtin
ops. The graph is frozen and rewritten first (`_tflite_graph`) for three of its parts:

- the noise inputs draw ``stateless_normal`` noise from the fixed seed (0, 0): for a fixed batch
  that noise is a constant, computed once and stored in place of the random ops (hence the fixed
  batch; the SavedModel draws it for any N);
- the spectral-norm power iteration (which still runs with training=False) reads frozen
  constants, so the converter folds W / sigma into the stored kernels;
- BatchNorm's float64 sums (TFLite has no float64 arithmetic) run in float32.

The float16 model is the float32 one with its large constants stored as float16
(`_with_float16_weights`; TFLite's own float16 pass would overflow BatchNorm's value counts).
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.lite.python import schema_py_generated as tflite_schema
from tensorflow.lite.tools import flatbuffer_utils
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from fastgan_tf.errors import UserError, one_line
from fastgan_tf.io import atomic_path, atomic_write_bytes, atomic_write_text

SEEDED_SIGNATURE = "generate_with_noise_seed"
KERAS_FILE = "generator.keras"
CONFIG_FILE = "generator.json"
TFLITE_FILES = {"float32": "generator.tflite", "float16": "generator_fp16.tflite"}
TFLITE_BATCH = 16  # the evaluation batch: BatchNorm normalises with the batch's statistics
NOISE_OPS = ("StatelessRandomNormalV2",)  # what tf.random.stateless_normal traces to
FLOAT16_MIN_VALUES = 1024  # smaller constants stay float32 (TFLite's dynamic-range threshold)

README = """\
FastGAN generator exported by fastgan-tf ({resolution}x{resolution} {colour}, latent size {nz}).
Source: {source}

This folder is a TensorFlow SavedModel. It needs only TensorFlow (no fastgan-tf):

    import numpy as np
    import tensorflow as tf

    model = tf.saved_model.load("{name}")
    generate = model.signatures["serving_default"]
    z = np.random.default_rng(0).standard_normal((16, {nz})).astype("float32")
    out = generate(z=tf.constant(z))
    images = out["images"].numpy()          # uint8, shape (16, {resolution}, {resolution}, {channels})
    # out["images_float"]: float32 in [-1, 1], same shape

Signatures
- serving_default(z): z float32 (N, {nz}) ~ N(0, I) -> images uint8 (N, H, W, {channels}) and
  images_float float32 in [-1, 1]. The noise inputs use the fixed seed (0, 0).
- {seeded}(z, noise_seed): the same with noise_seed int64 (2,), e.g.
  tf.constant([7, 0], tf.int64); `evaluate.py --generate --seed S` draws batch k with
  noise_seed (S, k) and z from numpy.random.default_rng(S).

Generate in batches of 8 or more (16 is what evaluation uses): like the reference FastGAN, the
generator's BatchNorm always normalises with the statistics of the current batch, so an image
depends slightly on the other latents in its batch, and a batch of 1 looks worse.

Also here: {keras_file}, the Keras model, and {config} (its constructor arguments). The Keras
model needs fastgan-tf installed (importing it registers the model classes):
    import keras
    import fastgan_tf.models
    generator = keras.saving.load_model("{name}/{keras_file}")
    big, small = generator(z, training=False)   # float32; small is the 128px side output
{tflite}"""

TFLITE_README = """
TensorFlow Lite: {float32} (float32 weights) and {float16} (float16 weights, half the size,
slightly different pixels). Each is serving_default for exactly {batch} latents: the noise of
seed (0, 0) for {batch} images is stored in the model (TFLite has no such random op), so the
batch size is fixed (`evaluate.py --export DIR --tflite --batch-size N` makes another). Run it
with TensorFlow as below, or with LiteRT's Interpreter (`pip install ai-edge-litert`; `from
ai_edge_litert.interpreter import Interpreter`), which replaces tf.lite.Interpreter:

    import numpy as np
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_path="{name}/{float32}")
    generate = interpreter.get_signature_runner("serving_default")
    z = np.random.default_rng(0).standard_normal(({batch}, {nz})).astype("float32")
    out = generate(z=z)
    images = out["images"]      # uint8, shape ({batch}, {resolution}, {resolution}, {channels})
    # out["images_float"]: float32 in [-1, 1]. The images serving_default(z) makes, up to
    # float32 rounding (a pixel may differ by 1), or float16 weights for {float16}.
"""


class _Serving(tf.Module):
    """The generator behind two concrete functions, inference only (training=False)."""

    def __init__(self, generator):
        super().__init__(name="fastgan_generator")
        self.generator = generator
        z = tf.TensorSpec([None, generator.nz], tf.float32, name="z")
        seed = tf.TensorSpec([2], tf.int64, name="noise_seed")
        self.generate = tf.function(self._generate, input_signature=[z])
        self.generate_with_noise_seed = tf.function(self._generate_seeded,
                                                    input_signature=[z, seed])

    def _generate(self, z):
        return self._generate_seeded(z, tf.constant([0, 0], tf.int64))

    def _generate_seeded(self, z, noise_seed):
        big = self.generator(z, training=False, noise_seed=noise_seed)[0]
        images_float = tf.clip_by_value(big, -1.0, 1.0)
        # round half to even, like visualize.to_uint8 (np.rint)
        images = tf.cast(tf.round((images_float + 1.0) * 127.5), tf.uint8)
        return {"images": images, "images_float": images_float}


def generator_config(generator) -> dict:
    """The generator's class and the constructor arguments that rebuild an identical model."""
    return {"class": type(generator).__name__, **generator.get_config()}


def _save_keras(generator, path: Path) -> None:
    """`model.save` to a temp .keras file renamed over `path`: an old export stays whole."""
    with atomic_path(path) as partial:  # same suffix: Keras insists on .keras
        generator.save(str(partial))


def _check_target(out_dir: Path) -> None:
    if out_dir.is_file():
        raise UserError(f"--export {out_dir} is a file; pass a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / "saved_model.pb").exists():
        raise UserError(f"--export {out_dir} exists and is not an earlier export; pass a new or "
                        "empty folder")


def export_generator(generator, out_dir: Path, provenance: dict | None = None, *,
                     tflite: bool = False, tflite_batch: int = TFLITE_BATCH) -> dict:
    """Write the SavedModel, generator.keras, generator.json and README.txt into `out_dir`, and
    with `tflite` the two TensorFlow Lite models for batches of `tflite_batch` latents (without
    it, TFLite models of an earlier export are removed: they would be of another generator)."""
    out_dir = Path(out_dir)
    _check_target(out_dir)
    module = _Serving(generator)
    # Converted first: a model TFLite cannot take leaves an earlier export as it was.
    tflite_models = _tflite_models(module, tflite_batch) if tflite else {}
    out_dir.mkdir(parents=True, exist_ok=True)
    tf.saved_model.save(module, str(out_dir), signatures={
        "serving_default": module.generate,
        SEEDED_SIGNATURE: module.generate_with_noise_seed,
    })
    _save_keras(generator, out_dir / KERAS_FILE)
    for name in TFLITE_FILES.values():
        if name in tflite_models:
            atomic_write_bytes(out_dir / name, tflite_models[name])
        else:
            (out_dir / name).unlink(missing_ok=True)
    info = _export_info(generator, dict(provenance or {}), tflite_batch if tflite else None)
    atomic_write_text(out_dir / CONFIG_FILE, json.dumps(info, indent=2))
    atomic_write_text(out_dir / "README.txt", _readme(generator, out_dir, info))
    return {"export_dir": str(out_dir), "keras": str(out_dir / KERAS_FILE), **info}


def _export_info(generator, provenance: dict, tflite_batch: int | None) -> dict:
    """generator.json: how to rebuild the generator, where it came from, what the files take."""
    nz, channels = generator.nz, generator.channels
    info = {"generator": generator_config(generator), "provenance": provenance,
            "signatures": {
                "serving_default": {"inputs": {"z": ["float32", [None, nz]]}},
                SEEDED_SIGNATURE: {"inputs": {"z": ["float32", [None, nz]],
                                              "noise_seed": ["int64", [2]]}},
                "outputs": {"images": f"uint8 (N, H, W, {channels})",
                            "images_float": f"float32 (N, H, W, {channels}) in [-1, 1]"}}}
    if tflite_batch is not None:
        shape = f"({tflite_batch}, {generator.resolution}, {generator.resolution}, {channels})"
        info["tflite"] = {"files": dict(TFLITE_FILES), "batch_size": tflite_batch,
                          "signature": "serving_default", "noise_seed": [0, 0],
                          "inputs": {"z": ["float32", [tflite_batch, nz]]},
                          "outputs": {"images": f"uint8 {shape}",
                                      "images_float": f"float32 {shape} in [-1, 1]"}}
    return info


def _readme(generator, out_dir: Path, info: dict) -> str:
    provenance = info["provenance"]
    source = ", ".join(f"{k} {v}" for k, v in provenance.items() if v is not None) or "unknown"
    fields = {"resolution": generator.resolution, "nz": generator.nz, "name": out_dir.name,
              "channels": generator.channels}
    tflite = TFLITE_README.format(**fields, **TFLITE_FILES, batch=info["tflite"]["batch_size"]) \
        if "tflite" in info else ""
    return README.format(**fields, source=source, tflite=tflite,
                         colour="RGB" if generator.channels == 3 else "greyscale",
                         seeded=SEEDED_SIGNATURE, keras_file=KERAS_FILE, config=CONFIG_FILE)


# --------------------------------------------------------------------------- TensorFlow Lite


def _tflite_models(module: _Serving, batch: int) -> dict[str, bytes]:
    """serving_default for `batch` latents: {file name: model}, float32 and float16 weights."""
    float32 = _TFLiteSource(module, batch).convert()
    return {TFLITE_FILES["float32"]: float32,
            TFLITE_FILES["float16"]: _with_float16_weights(float32)}


class _TFLiteSource(tf.Module):
    """serving_default for a fixed batch as a graph of TFLite builtin ops (see `_tflite_graph`)."""

    def __init__(self, module: _Serving, batch: int):
        super().__init__(name="fastgan_generator_tflite")
        spec = tf.TensorSpec([batch, module.generator.nz], tf.float32, name="z")
        self.generate = tf.function(_tflite_graph(module, spec), input_signature=[spec],
                                    autograph=False)

    def convert(self) -> bytes:
        converter = tf.lite.TFLiteConverter.from_concrete_functions(
            [self.generate.get_concrete_function()], self)
        try:
            return converter.convert()
        except Exception as e:  # the converter raises its own ConverterError, and others
            raise UserError(f"the TensorFlow Lite conversion failed: {_conversion_error(e)}; "
                            "the SavedModel export works without --tflite") from e


def _conversion_error(error: Exception) -> str:
    """The converter's verdict without its pages of MLIR locations: the ops it lacks, if that
    is the reason."""
    lacking = [line for line in str(error).splitlines() if line.startswith("TF Select ops:")]
    return f"no builtin TFLite op for {lacking[0][len('TF Select ops:'):].strip()}" if lacking \
        else one_line(error)[:300]


def _tflite_graph(module: _Serving, spec: tf.TensorSpec):
    """module._generate for inputs `spec` as a concrete function of a rewritten frozen graph:
    variables frozen into constants, the noise drawn once into constants, float64 as float32."""
    concrete = tf.function(module._generate, input_signature=[spec],
                           autograph=False).get_concrete_function()
    frozen = convert_variables_to_constants_v2(concrete)  # loses the dict: repack its outputs
    graph_def = frozen.graph.as_graph_def()
    z_name = frozen.inputs[0].name
    named = tf.nest.pack_sequence_as(concrete.structured_outputs, frozen.outputs)
    outputs = {key: tensor.name for key, tensor in named.items()}
    graph_def = _float64_as_float32(_noise_as_constants(graph_def, z_name, spec))
    return _graph_function(graph_def, z_name, spec, outputs)


def _graph_function(graph_def, z_name: str, spec: tf.TensorSpec, outputs: dict):
    """A concrete function z -> {key: tensor `outputs[key]` of graph_def}, z fed at `z_name`."""

    def run(z):
        keys = list(outputs)
        tensors = tf.compat.v1.import_graph_def(graph_def, input_map={z_name: z}, name="",
                                                return_elements=[outputs[k] for k in keys])
        return dict(zip(keys, tensors))

    return tf.compat.v1.wrap_function(run, [spec])


def _noise_as_constants(graph_def, z_name: str, spec: tf.TensorSpec):
    """graph_def with every noise op replaced by the constant it draws: the seed and the batch
    are fixed, so the values do not depend on z (computed here with z = 0)."""
    noise = [node.name for node in graph_def.node if node.op in NOISE_OPS]
    if not noise:
        return graph_def
    draw = _graph_function(graph_def, z_name, spec, {name: f"{name}:0" for name in noise})
    values = {name: value.numpy() for name, value in draw(tf.zeros(spec.shape)).items()}
    out = tf.compat.v1.GraphDef()
    out.CopyFrom(graph_def)
    for node in out.node:
        if node.name in values:
            _make_constant(node, values[node.name])
    return out


def _make_constant(node, value) -> None:
    """Turn `node` (keeping its name, so its consumers are untouched) into a Const of `value`."""
    node.op = "Const"
    del node.input[:]
    node.attr.clear()
    node.attr["dtype"].type = tf.as_dtype(value.dtype).as_datatype_enum
    node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value))


def _float64_as_float32(graph_def):
    """graph_def with its float64 tensors made float32 (TFLite has no float64 arithmetic):
    dtype attributes, float64 constants, and casts that become float32 -> float32 identities."""
    f64, f32 = tf.float64.as_datatype_enum, tf.float32.as_datatype_enum
    out = tf.compat.v1.GraphDef()
    out.CopyFrom(graph_def)
    for node in out.node:
        if node.op == "Const" and node.attr["dtype"].type == f64:
            _make_constant(node, tf.make_ndarray(node.attr["value"].tensor).astype("float32"))
        for attr in node.attr.values():
            if attr.type == f64:
                attr.type = f32
        if node.op == "Cast" and node.attr["SrcT"].type == node.attr["DstT"].type:
            node.op = "Identity"
            node.attr["T"].type = node.attr["SrcT"].type
            for name in ("SrcT", "DstT", "Truncate"):
                node.attr.pop(name, None)
    return out


def _with_float16_weights(model: bytes) -> bytes:
    """The float32 TFLite `model` with each constant of FLOAT16_MIN_VALUES values or more (the
    kernels and the stored noise) kept as float16 and dequantized to float32 when the model is
    loaded: post-training float16 quantization of the weights.

    Not TFLite's own (converter.target_spec.supported_types = [tf.float16]): it converts every
    constant, and BatchNorm's value counts (B*H*W, 262144 at 128 px and batch 16) become inf
    beyond float16's 65504, which ruins every image from 128 px on. The small constants
    (counts, BatchNorm's gamma and beta) cost nothing in size and stay float32 here.
    """
    tflite = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
    dequantize = _opcode_index(tflite, tflite_schema.BuiltinOperator.DEQUANTIZE, version=3)
    for subgraph in tflite.subgraphs:
        users = Counter(tensor.buffer for tensor in subgraph.tensors)
        weights = [i for i, tensor in enumerate(subgraph.tensors)
                   if _is_weight(tflite, tensor) and users[tensor.buffer] == 1]
        subgraph.operators[:0] = [_store_as_float16(tflite, subgraph, i, dequantize)
                                  for i in weights]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(tflite))


def _is_weight(tflite, tensor) -> bool:
    data = tflite.buffers[tensor.buffer].data
    return (tensor.type == tflite_schema.TensorType.FLOAT32 and data is not None
            and len(data) >= 4 * FLOAT16_MIN_VALUES)


def _store_as_float16(tflite, subgraph, index: int, dequantize: int):
    """Move tensor `index`'s float32 values into a new float16 constant; tensor `index` becomes
    the output of the returned DEQUANTIZE operator, so its users are unchanged."""
    tensor = subgraph.tensors[index]
    buffer = tflite.buffers[tensor.buffer]
    buffer.data = np.frombuffer(buffer.data.tobytes(), np.float32).astype(np.float16).view(np.uint8)
    half = copy.copy(tensor)
    half.name, half.type = tensor.name + b"/float16", tflite_schema.TensorType.FLOAT16
    tensor.buffer = 0  # the empty buffer: computed from now on
    subgraph.tensors.append(half)
    operator = tflite_schema.OperatorT()
    operator.opcodeIndex = dequantize
    operator.inputs, operator.outputs = [len(subgraph.tensors) - 1], [index]
    return operator


def _opcode_index(tflite, builtin: int, version: int) -> int:
    """The index of `builtin`'s operator code in the model, added if missing."""
    for index, code in enumerate(tflite.operatorCodes):
        if code.builtinCode == builtin:
            code.version = max(code.version, version)
            return index
    code = tflite_schema.OperatorCodeT()
    code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, builtin, version
    tflite.operatorCodes.append(code)
    return len(tflite.operatorCodes) - 1


def load_keras_export(out_dir: Path):
    """The generator of an export, as the Keras model it was (from generator.keras)."""
    import keras

    import fastgan_tf.models  # noqa: F401  (registers Generator and SSDGenerator with Keras)

    path = Path(out_dir) / KERAS_FILE
    if not path.is_file():
        raise UserError(f"{out_dir} has no {KERAS_FILE}: it is not a fastgan-tf export "
                        "(or an export older than generator.keras: export again)")
    return keras.saving.load_model(str(path))
