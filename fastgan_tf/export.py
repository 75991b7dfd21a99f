"""Export the EMA generator for use without fastgan-tf: a SavedModel plus a `.keras` archive.

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
"""

from __future__ import annotations

import json
from pathlib import Path

import tensorflow as tf

from fastgan_tf.errors import UserError
from fastgan_tf.io import atomic_path, atomic_write_text

SEEDED_SIGNATURE = "generate_with_noise_seed"
KERAS_FILE = "generator.keras"
CONFIG_FILE = "generator.json"

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


def export_generator(generator, out_dir: Path, provenance: dict | None = None) -> dict:
    """Write the SavedModel, generator.keras, generator.json and README.txt into `out_dir`."""
    out_dir = Path(out_dir)
    _check_target(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    module = _Serving(generator)
    tf.saved_model.save(module, str(out_dir), signatures={
        "serving_default": module.generate,
        SEEDED_SIGNATURE: module.generate_with_noise_seed,
    })
    _save_keras(generator, out_dir / KERAS_FILE)
    provenance = dict(provenance or {})
    channels = generator.channels
    info = {"generator": generator_config(generator), "provenance": provenance,
            "signatures": {
                "serving_default": {"inputs": {"z": ["float32", [None, generator.nz]]}},
                SEEDED_SIGNATURE: {"inputs": {"z": ["float32", [None, generator.nz]],
                                              "noise_seed": ["int64", [2]]}},
                "outputs": {"images": f"uint8 (N, H, W, {channels})",
                            "images_float": f"float32 (N, H, W, {channels}) in [-1, 1]"}}}
    atomic_write_text(out_dir / CONFIG_FILE, json.dumps(info, indent=2))
    source = ", ".join(f"{k} {v}" for k, v in provenance.items() if v is not None) or "unknown"
    atomic_write_text(out_dir / "README.txt", README.format(
        resolution=generator.resolution, nz=generator.nz, name=out_dir.name, source=source,
        channels=channels, colour="RGB" if channels == 3 else "greyscale",
        seeded=SEEDED_SIGNATURE, keras_file=KERAS_FILE, config=CONFIG_FILE))
    return {"export_dir": str(out_dir), "keras": str(out_dir / KERAS_FILE), **info}


def load_keras_export(out_dir: Path):
    """The generator of an export, as the Keras model it was (from generator.keras)."""
    import keras

    import fastgan_tf.models  # noqa: F401  (registers Generator and SSDGenerator with Keras)

    path = Path(out_dir) / KERAS_FILE
    if not path.is_file():
        raise UserError(f"{out_dir} has no {KERAS_FILE}: it is not a fastgan-tf export "
                        "(or an export older than generator.keras: export again)")
    return keras.saving.load_model(str(path))
