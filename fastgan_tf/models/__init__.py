"""FastGAN generator and discriminator (Keras 3, channels-last).

``Generator(resolution, ...)`` and ``Discriminator(resolution, ...)`` follow the authors' PyTorch
code layer by layer (see generator.py / discriminator.py); ``layers.py`` holds the building blocks.
Build both models before restoring a checkpoint: ``build_models(g, d)`` (or each model's
``build_for_restore()``) calls them once on a dummy batch of 2 without changing any state.
"""

from fastgan_tf.models.discriminator import Discriminator
from fastgan_tf.models.generator import Generator
from fastgan_tf.models.ssd import SSDDiscriminator, SSDGenerator  # registers SSDGenerator for .keras

__all__ = ["Discriminator", "Generator", "SSDDiscriminator", "SSDGenerator", "build_models",
           "count_params"]


def count_params(model):
    """Number of trainable parameters (scalars) of a built model."""
    variables = model.trainable_variables
    if not model.built or not variables:
        raise ValueError(f"{model.name} has no trainable variables yet: call it on a batch first")
    total = 0
    for v in variables:
        n = 1
        for d in v.shape:
            n *= int(d)
        total += n
    return total


def build_models(*models, batch_size=2):
    """Build each model (Generator or Discriminator) by one state-free call; returns them."""
    for m in models:
        m.build_for_restore(batch_size)
    return models
