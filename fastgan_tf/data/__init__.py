"""Training data: image folders, the tf.data epoch pipeline and the procedural demo set.

The TensorFlow-dependent pipeline is imported lazily, so folder tools (discovery, decoding,
downloads) stay quick to import.
"""

from fastgan_tf.data.demo import DEMO_DEFAULTS, make_demo_images
from fastgan_tf.data.images import (
    IMAGE_EXTENSIONS,
    BadImageError,
    ImageSet,
    discover_images,
    fingerprint,
    load_image,
    load_images,
)

_PIPELINE = ("make_epoch_dataset", "steps_per_epoch", "epoch_plan", "images_variable")

__all__ = [
    "DEMO_DEFAULTS",
    "IMAGE_EXTENSIONS",
    "BadImageError",
    "ImageSet",
    "discover_images",
    "fingerprint",
    "load_image",
    "load_images",
    "make_demo_images",
    *_PIPELINE,
]


def __getattr__(name):
    if name in _PIPELINE:
        from fastgan_tf.data import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
