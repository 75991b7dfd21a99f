"""LPIPS's VGG16 in float32 and with its blocks k..5 in bfloat16: gradient error and time (JSON).

    python benchmarks/lpips_precision.py --vgg-weights PATH --images ../shared/datasets/twemoji-faces
    python benchmarks/lpips_precision.py --from-blocks 1 2 3 4 5 --threads 2

Why blocks 1-2 stay float32 under `--lpips-precision bf16` (`fastgan_tf/lpips.py`). For each
variant ("from block k": VGG16's blocks k..5 compute in bfloat16, the distance in float32), the
input gradient of LPIPS (what the decoders learn from) is compared with float32's on pairs of the
shape FastGAN trains on: `--batch` images of `--images` (default: the procedural demo faces) at
`--side` px as targets, and as predictions these images blurred, with noise, shifted, another
image, and an 8x8 version. `gradient_error` is the median over the batch of
|g - g_float32| / |g_float32| per case. The row "float32, input as a bfloat16 decoder gives it"
is the scale to read them against: the float32 gradient at the same predictions after the
rounding a bfloat16 decoder applies to its output (its pre-tanh value rounded to bfloat16),
which training in bfloat16 does anyway.

`seconds` times LPIPS as a 256 px FastGAN step runs it (`LPIPS.pairs`: 3 x `--batch`
predictions with gradients, 2 x `--batch` targets untaped, `--side` px), the variants called in
turn. Trained ImageNet weights matter for the errors (random weights understate them);
`--vgg-weights` takes Keras's VGG16 file (its cache is used when it is there), otherwise the
weights are random and the output says so. The machine is part of the output.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import configure_threads, machine, median_ms  # noqa: E402 (benchmarks/ on the path)

DECODED = "float32, input as a bfloat16 decoder gives it"


def load_targets(images: Path | None, count: int, side: int):
    """`count` images in [-1, 1] at `side` px: a folder's first ones, or the demo faces."""
    import numpy as np

    from fastgan_tf.data.demo import make_demo_images
    from fastgan_tf.data.images import discover_images, load_image

    if images is None:
        pixels = make_demo_images(count, side)
    else:
        pixels = np.stack([load_image(f, side) for f in discover_images(images)[:count]])
    return pixels.astype(np.float32) / 127.5 - 1.0


def predictions(targets) -> dict:
    """Imperfect reconstructions of `targets`, each kept inside tanh's range."""
    import numpy as np
    import tensorflow as tf

    side = targets.shape[1]
    noise = np.random.default_rng(0).standard_normal(targets.shape).astype(np.float32)
    cases = {
        "blurred": tf.nn.avg_pool2d(targets, 3, 1, "SAME").numpy(),
        "noise 0.02": targets + 0.02 * noise,
        "noise 0.1": targets + 0.1 * noise,
        "shifted 2 px": np.roll(targets, 2, axis=2),
        "another image": targets[::-1],
        "8x8": tf.image.resize(tf.image.resize(targets, [8, 8], "area"), [side, side]).numpy(),
    }
    return {name: np.clip(p, -0.999, 0.999).astype(np.float32) for name, p in cases.items()}


def as_decoded_in_bfloat16(images):
    """What a bfloat16 decoder outputs near `images`: tanh of a pre-tanh value rounded to
    bfloat16 (`SimpleDecoder` casts its last convolution to float32 before tanh)."""
    import numpy as np
    import tensorflow as tf

    pre = tf.cast(tf.cast(np.arctanh(images), tf.bfloat16), tf.float32)
    return tf.tanh(pre).numpy()


def build(lpips, weights, from_block: int | None, like=None):
    """LPIPS in float32 (from_block None) or with blocks from_block..5 in bfloat16; with the
    VGG16 weights of `like` (random weights must be the same random weights)."""
    if from_block is None:
        metric = lpips.LPIPS(vgg_weights=weights)
    else:
        metric = lpips.LPIPS(vgg_weights=weights, precision="bf16", bf16_from_block=from_block)
    if like is not None:
        metric.features.set_weights(like.features.get_weights())
    return metric


def input_gradient(metric, pred, target):
    import tensorflow as tf

    pred = tf.constant(pred)
    with tf.GradientTape() as tape:
        tape.watch(pred)
        total = tf.reduce_sum(metric.pairs([pred], [tf.constant(target)])[0])
    return tape.gradient(total, pred).numpy()


def reference_gradients(reference, cases: dict, targets) -> dict:
    """Per case, the float32 metric's input gradient, one row per image."""
    return {name: input_gradient(reference, pred, targets).reshape(len(pred), -1)
            for name, pred in cases.items()}


def gradient_errors(metric, wanted: dict, cases: dict, targets, decode=False) -> dict:
    """Per case, the median relative distance of `metric`'s gradient to the `wanted` one."""
    import numpy as np

    errors = {}
    for name, pred in cases.items():
        want = wanted[name]
        got = input_gradient(metric, as_decoded_in_bfloat16(pred) if decode else pred,
                             targets).reshape(len(pred), -1)
        relative = np.linalg.norm(got - want, axis=1) / np.linalg.norm(want, axis=1)
        errors[name] = round(float(np.median(relative)), 3)
    return errors


def seconds_per_call(metrics: dict, batch: int, side: int, repeats: int) -> dict:
    """Median seconds of one FastGAN-shaped LPIPS call (forward and backward) per metric."""
    import tensorflow as tf

    preds = [tf.random.uniform([batch, side, side, 3], -1, 1, seed=i) for i in range(3)]
    whole, part = (tf.random.uniform([batch, side, side, 3], -1, 1, seed=i) for i in (7, 8))

    def step(metric):
        @tf.function
        def call():
            with tf.GradientTape() as tape:
                tape.watch(preds)
                total = tf.add_n([tf.reduce_sum(d)
                                  for d in metric.pairs(preds, [whole, whole, part])])
            return tape.gradient(total, preds)
        return call

    ms = median_ms({name: step(m) for name, m in metrics.items()}, repeats)
    return {name: round(value / 1000, 3) for name, value in ms.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vgg-weights", type=Path, default=None,
                   help="Keras's VGG16 no-top file (default: its cache, else random weights)")
    p.add_argument("--images", type=Path, default=None, help="a folder (default: demo faces)")
    p.add_argument("--from-blocks", type=int, nargs="+", default=[1, 2, 3, 4, 5],
                   choices=range(1, 6))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--side", type=int, default=128, help="the decoders' side at 256 px")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="intra-op threads; 0 = TF default")
    args = p.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from fastgan_tf import lpips

    configure_threads(args.threads)
    weights = args.vgg_weights or ("imagenet" if lpips.vgg16_weights_available() else None)
    targets = load_targets(args.images, args.batch, args.side)
    cases = predictions(targets)
    reference = build(lpips, weights, None)
    variants = {f"from block {k}": build(lpips, weights, k, like=reference)
                for k in args.from_blocks}
    wanted = reference_gradients(reference, cases, targets)
    errors = {DECODED: gradient_errors(reference, wanted, cases, targets, decode=True)}
    for name, metric in variants.items():
        errors[name] = gradient_errors(metric, wanted, cases, targets)
        print(json.dumps({name: errors[name]}), file=sys.stderr, flush=True)
    seconds = seconds_per_call({"float32": reference, **variants}, args.batch, args.side,
                               args.repeats)
    print(json.dumps({
        "machine": machine(), "intra_op_threads": args.threads or None,
        "vgg_weights": str(weights) if weights else "random (errors not representative)",
        "images": str(args.images or "demo faces"), "batch": args.batch, "side": args.side,
        "package_bf16_from_block": lpips.BF16_FROM_BLOCK,
        "gradient_error": errors, "seconds": seconds,
        "seconds_vs_float32": {k: round(v / seconds["float32"], 3) for k, v in seconds.items()},
    }, indent=2))


if __name__ == "__main__":
    main()
