"""Training: the FastGAN step (fastgan.py), the epoch loop (loop.py), logs and data sources."""

from fastgan_tf.training.loop import train

__all__ = ["train"]
