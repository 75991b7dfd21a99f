"""FastGAN in TensorFlow/Keras: few-shot image synthesis on one consumer GPU."""

__version__ = "0.1.0"
