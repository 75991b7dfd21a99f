"""Images per second of the training input pipeline alone, and how that compares with a step.

    python benchmarks/input_pipeline.py --resolution 1024 --batch-size 8 --images 64
    python benchmarks/input_pipeline.py --resolution 1024 --step-seconds 40   # ratio to a step

The pipeline is the trainer's: `make_epoch_dataset` over uint8 images held in a CPU variable
(gather, flip, cast to [-1, 1], prefetch), iterated as the training loop iterates it. Images are
random; decoding happens once, before training, and is not part of the loop. With
`--step-seconds` (a median from train_step.py at the same resolution and batch) the output says
how many times faster than a training step consumes them batches are delivered.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import configure_threads  # noqa: E402 (benchmarks/ on the path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--resolution", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--images", type=int, default=64, help="dataset size (uint8 in memory)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="intra-op threads; 0 = TF default")
    p.add_argument("--step-seconds", type=float, default=None,
                   help="a training step's median time at this setting, for the ratio")
    args = p.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    from fastgan_tf.data import make_epoch_dataset, steps_per_epoch

    configure_threads(args.threads)
    r = args.resolution
    images = np.random.default_rng(0).integers(0, 256, (args.images, r, r, 3), dtype=np.uint8)
    for batch in make_epoch_dataset(images, args.batch_size, seed=0, epoch=0).take(1):
        batch.numpy()  # warm-up: creates the image variable, traces the map function
    seconds, batches = [], 0
    for epoch in range(args.epochs):
        start = time.perf_counter()
        for batch in make_epoch_dataset(images, args.batch_size, seed=0, epoch=epoch + 1):
            batch.numpy()  # the loop hands each batch to the step; .numpy() waits for it
            batches += 1
        seconds.append(time.perf_counter() - start)
    per_epoch = steps_per_epoch(args.images, args.batch_size)
    batch_s = float(np.median(seconds)) / per_epoch
    result = {"resolution": r, "batch_size": args.batch_size, "images": args.images,
              "intra_op_threads": args.threads or None,
              "seconds_per_batch": round(batch_s, 4),
              "images_per_s": round(args.batch_size / batch_s, 1)}
    if args.step_seconds:
        result["step_seconds"] = args.step_seconds
        result["times_faster_than_a_step"] = round(args.step_seconds / batch_s, 1)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
