"""Evaluate a trained run: `python evaluate.py --fid` (see --help)."""

import sys

from fastgan_tf.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
