"""Shared test setup: CPU only, float32, quiet TensorFlow, small thread pools."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# One BLAS thread: FID's 2048x2048 eigh is 2-3x faster on a busy 2-core machine than with the
# default threads competing with TensorFlow's (measured). Only the tests set this.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402, F401 (imported once, after the settings above)
import keras  # noqa: E402


@pytest.fixture(autouse=True)
def _float32_policy():
    """Every test starts in float32; tests that switch to mixed precision are undone here."""
    keras.mixed_precision.set_global_policy("float32")
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.fixture(autouse=True)
def _float32_on_every_cpu(monkeypatch):
    """`--mixed-precision auto` stays float32 on CPUs with AMX or AVX512_BF16 too (where it would
    pick bfloat16), so that the tests compute in float32 on every machine; test_precision.py
    tests that rule itself."""
    from fastgan_tf.training import precision

    monkeypatch.setattr(precision, "cpu_bfloat16_pays", lambda: False)


@pytest.fixture(autouse=True)
def _pristine_logging():
    """Each test starts with the package's logger as an importing program finds it (quiet): a
    CLI called in-process, here or in a module fixture, configures it for good."""
    from fastgan_tf.console import unconfigure_logging

    unconfigure_logging()
    yield
    unconfigure_logging()


@pytest.fixture
def cli_logging():
    """The package's messages and progress bars on stderr, as train.py and evaluate.py set it up."""
    from fastgan_tf.console import configure_logging

    configure_logging()


@pytest.fixture
def server():
    """A local HTTP server (tests/support.py) for download tests: files, ranges, failures."""
    from support import LoopbackServer

    srv = LoopbackServer().start()
    yield srv
    srv.stop()


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def write_images(folder, count=16, size=64, seed=0):
    """Write `count` small RGB PNGs (smooth colour blobs) into `folder`; return the folder."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    gen = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(count):
        cy, cx, r = gen.uniform(0.3, 0.7), gen.uniform(0.3, 0.7), gen.uniform(0.15, 0.3)
        disc = ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r)[..., None]
        colour = gen.uniform(0, 255, 3)
        img = np.where(disc, colour, 240.0).astype(np.uint8)
        Image.fromarray(img).save(folder / f"img_{i:03d}.png")
    return folder


@pytest.fixture
def image_folder(tmp_path):
    return write_images(tmp_path / "images")
