"""Train FastGAN: `python train.py --dataset PATH_OR_NAME --epochs N` (see --help)."""

import sys

from fastgan_tf.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
