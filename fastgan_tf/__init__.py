"""FastGAN in TensorFlow/Keras: few-shot image synthesis on one consumer GPU.

Library code reports through the `logging` module (logger "fastgan_tf") and shows progress bars
only when that logger is enabled for INFO: quiet when imported in a notebook or a program, unless
it configures logging; `train.py` and `evaluate.py` configure it to print to stderr.
"""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
