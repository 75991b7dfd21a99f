"""Where a FastGAN training step spends its time: timed parts, FLOPs per layer, op types (JSON).

    python benchmarks/profile_step.py --resolution 64 --ngf 16 --ndf 16 --threads 2
    python benchmarks/profile_step.py --resolution 256 --threads 2 --trace   # + TF profiler

`parts`: each piece of the step compiled on its own (tf.function) and timed (median), so the
pieces add up to roughly the whole step. `flops`: multiply-adds x 2 of the convolutions and
matrix products of each top-level layer's forward pass, from the traced graphs (the backward
pass costs about twice the forward); with `--recon-loss lpips`, VGG16's share too, and the
GFLOP/s each part achieves: whether LPIPS costs what its FLOPs cost. With lpips it also times
VGG16 alone (no distance) and a float32 matrix product, and gives the lpips step's time over the
l1 step's: measured, with a free distance, and the floor of VGG16's FLOPs at the best float32
rate measured (`lpips_step_over_l1_step`). `--trace` runs the
TensorFlow profiler over a few steps and sums the host time of the ops by type (it reads the
profiler's XSpace protobuf, an internal TF module; skipped if it is missing).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import configure_threads  # noqa: E402 (benchmarks/ on the path)


def loss_and_gradients(loss_fn, sources):
    """A compiled fn() -> (loss, d loss / d sources). The loss is returned so that nothing it
    alone needs (VGG16 on the targets) is pruned from the timed graph; tensor sources are
    watched (only variables are, unasked), or their gradients would be None and pruned too."""
    import tensorflow as tf

    def fn():
        with tf.GradientTape() as tape:
            tape.watch([s for s in sources if isinstance(s, tf.Tensor)])
            loss = loss_fn()
        return loss, tape.gradient(loss, sources)
    return tf.function(fn, autograph=False)


def median_seconds(fn, repeats: int) -> float:
    import numpy as np
    import tensorflow as tf

    def run():
        for t in tf.nest.flatten(fn()):
            if t is not None:
                t.numpy()

    run()
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def layer_flops(fn, *specs) -> dict[str, float]:
    """GFLOPs (2 x multiply-adds) of convolutions (plain and transposed) and matrix products per
    top-level layer of a traced call."""
    import re

    import tensorflow as tf

    graph = tf.function(fn, autograph=False).get_concrete_function(*specs).graph
    flops: dict[str, float] = collections.defaultdict(float)
    for op in graph.get_operations():
        if op.type not in ("Conv2D", "Conv2DBackpropInput", "MatMul", "BatchMatMulV2"):
            continue
        out = op.outputs[0].shape
        if op.type == "Conv2D":
            kh, kw, cin, _ = op.inputs[1].shape
            macs = out.num_elements() * kh * kw * cin
        elif op.type == "Conv2DBackpropInput":  # a transposed conv's forward (SNUpConv2D)
            kh, kw, cout, _ = op.inputs[1].shape
            macs = op.inputs[2].shape.num_elements() * kh * kw * cout
        else:
            a = op.inputs[0].shape
            k = a[-2] if op.get_attr("transpose_a") else a[-1]
            macs = out.num_elements() * k
        parts = op.name.split("/")
        layer = "/".join(re.sub(r"_\d+$", "", p) for p in parts[:2]) if len(parts) > 2 else parts[0]
        flops[layer] += 2 * macs / 1e9
    return dict(flops)


LPIPS_PART = "LPIPS: VGG16 on the reconstructions (fwd+bwd) and on their targets (fwd)"
VGG_PART = "VGG16 alone: the LPIPS part's convolutions without the distance"


def matmul_gflops_per_second(repeats: int, n: int = 2048) -> float:
    """This machine's practical float32 peak: an n x n matrix product's GFLOP/s (median)."""
    import tensorflow as tf

    a = tf.random.uniform([n, n])
    seconds = median_seconds(tf.function(lambda: tf.matmul(a, a)), repeats)
    return 2 * n ** 3 / 1e9 / seconds


def vgg_alone(lpips, recs, targets):
    """The LPIPS part's VGG16 work with the distance replaced by a plain sum of the taps."""
    import tensorflow as tf

    def loss():
        taps = lpips.taps(tf.concat(recs, axis=0))
        constant = lpips.taps(tf.stop_gradient(tf.concat(targets, axis=0)))
        return tf.add_n([tf.reduce_sum(f) for f in taps] + [tf.reduce_sum(f) for f in constant])
    return loss


def lpips_gflops(lpips, recs, batch: int) -> float:
    """GFLOPs of FastGAN's LPIPS per step: VGG16 forward and input gradient (its weights are
    frozen) on the three reconstructions, forward only on the two distinct targets."""
    import tensorflow as tf

    size = recs[0].shape[1]
    per_image = sum(layer_flops(lpips.taps, tf.TensorSpec([1, size, size, 3])).values())
    return per_image * (2 * 3 * batch + 2 * batch)


def op_type_times(gan, real, steps: int) -> dict[str, float] | None:
    """Host milliseconds per step of each op type, from the TF profiler (None if unavailable)."""
    import tensorflow as tf

    try:
        from tensorflow.tsl.profiler.protobuf import xplane_pb2
    except ImportError:
        return None
    logdir = tempfile.mkdtemp(prefix="fastgan-profile-")
    tf.profiler.experimental.start(logdir)
    for _ in range(steps):
        gan.train_on_batch(real)["g_loss"].numpy()
    tf.profiler.experimental.stop()
    space = xplane_pb2.XSpace()
    space.ParseFromString(next(Path(logdir).rglob("*.xplane.pb")).read_bytes())
    per_type: dict[str, float] = collections.defaultdict(float)
    for plane in space.planes:
        for line in plane.lines:
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name  # "op_name:OpType"
                if ":" in name and "__inference" not in name:
                    op_type = name.rsplit(":", 1)[1]
                    if op_type not in ("Run", "Process"):  # executor wrappers, not ops
                        per_type[op_type] += event.duration_ps / 1e9 / steps
    top = sorted(per_type.items(), key=lambda kv: -kv[1])[:20]
    return {k: round(v, 1) for k, v in top}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--ndf", type=int, default=64)
    p.add_argument("--recon-loss", default="l1", choices=("lpips", "l1", "mse"))
    p.add_argument("--threads", type=int, default=0, help="intra-op threads; 0 = TF default")
    p.add_argument("--mixed-precision", default="off", choices=("off", "bf16"),
                   help="compute precision, as train.py's option (float16 needs loss scaling: "
                        "not profiled here)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--trace", action="store_true", help="also aggregate the TF profiler's op times")
    args = p.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    from fastgan_tf import losses
    from fastgan_tf.config import TrainConfig
    from fastgan_tf.training.fastgan import FastGAN, reconstruction_targets
    from fastgan_tf.training.precision import set_policy

    configure_threads(args.threads)
    set_policy(args.mixed_precision)  # before the models are built
    cfg = TrainConfig(dataset="x", resolution=args.resolution, batch_size=args.batch_size,
                      ngf=args.ngf, ndf=args.ndf, recon_loss=args.recon_loss)
    gan = FastGAN(cfg, losses.reconstruction_loss(cfg.recon_loss, vgg_weights=None))
    g, d, r, b = gan.generator, gan.discriminator, cfg.resolution, cfg.batch_size
    real = tf.constant(np.random.default_rng(0).uniform(-1, 1, (b, r, r, 3)), tf.float32)
    z = tf.random.normal([b, cfg.nz])
    seed = tf.constant([0, 0], tf.int64)
    fakes = [tf.identity(t) for t in g(z, training=False, noise_seed=seed)]
    part = tf.constant(1)

    def d_real_loss():
        logits, recs = d(real, part=part, training=True)
        return tf.reduce_mean(logits) + gan.reconstruction_loss(real, recs, part)

    d_vars, g_vars = d.trainable_variables, g.trainable_variables
    zeros_d = [tf.zeros_like(v) for v in d_vars]
    zeros_g = [tf.zeros_like(v) for v in g_vars]

    @tf.function(autograph=False)
    def adam_both():
        gan.d_opt.apply(zeros_d, d_vars)
        gan.g_opt.apply(zeros_g, g_vars)
        return gan.step

    def g_step_pass():
        with tf.GradientTape() as tape:
            fake = g(z, training=True, noise_seed=seed)
            loss = -tf.reduce_mean(d(fake, training=True))
        return tape.gradient(loss, g_vars)

    parts = {
        "G forward": tf.function(lambda: g(z, training=True, noise_seed=seed), autograph=False),
        "D real pass + decoders + recon, fwd+bwd": loss_and_gradients(d_real_loss, d_vars),
        "D fake pass, fwd+bwd": loss_and_gradients(
            lambda: tf.reduce_mean(d(fakes, training=True)), d_vars),
        "G step: G fwd + D fwd, bwd through both": tf.function(g_step_pass, autograph=False),
        "Adam on G and D": adam_both,
        "EMA update": tf.function(lambda: (gan.update_ema(), gan.step)[1], autograph=False),
    }
    lpips = gan.recon_fn.lpips if gan.recon_fn is not None else None  # set for --recon-loss lpips
    if lpips is not None:
        recs = [tf.identity(t) for t in d(real, part=part, training=False)[1]]
        parts[LPIPS_PART] = loss_and_gradients(
            lambda: gan.reconstruction_loss(real, recs, part), recs)
        targets = reconstruction_targets(real, part, recs[0].shape[1])
        parts[VGG_PART] = loss_and_gradients(vgg_alone(lpips, recs, targets), recs)
    timings = {name: round(median_seconds(fn, args.repeats), 4) for name, fn in parts.items()}
    timings["whole step"] = round(median_seconds(lambda: gan.train_on_batch(real)["g_loss"],
                                                 args.repeats), 4)
    # The step runs G forward once, inside the G step part: do not count it twice.
    # ... nor LPIPS, which is inside the D real part.
    timings["sum of parts"] = round(sum(v for k, v in timings.items()
                                        if k not in ("whole step", "G forward", LPIPS_PART,
                                                     VGG_PART)), 4)
    g_flops = layer_flops(lambda x: g(x, training=True, noise_seed=seed),
                          tf.TensorSpec([b, cfg.nz]))
    d_flops = layer_flops(lambda x: d(x, part=part, training=True),
                          tf.TensorSpec([b, r, r, 3]))
    d_fake_flops = layer_flops(lambda x, y: d([x, y], training=True),
                               tf.TensorSpec(fakes[0].shape), tf.TensorSpec(fakes[1].shape))
    flops = {"G forward": g_flops, "D real forward": d_flops, "D fake forward": d_fake_flops}
    totals = {k: round(sum(v.values()), 2) for k, v in flops.items()}
    decoders = sum(v for k, v in d_flops.items() if "decoder" in k)
    # A step runs: G fwd, D real fwd+bwd, D fake fwd+bwd, D fake fwd + bwd to G, G bwd.
    step = 3 * totals["G forward"] + 3 * totals["D real forward"] + 6 * totals["D fake forward"]
    vgg = lpips_gflops(lpips, recs, b) if lpips is not None else 0.0
    result = {
        "setting": {"resolution": r, "batch_size": b, "ngf": cfg.ngf, "ndf": cfg.ndf,
                    "recon_loss": cfg.recon_loss, "mixed_precision": args.mixed_precision,
                    "intra_op_threads": args.threads or None,
                    "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "tensorflow's default")},
        "seconds": timings,
        "forward_gflops": totals,
        "step_gflops_estimate": round(step + vgg, 1),
        "achieved_gflops_per_second": {"whole step": round((step + vgg) / timings["whole step"], 1)},
        "decoders_share_of_step_flops": round(3 * decoders / (step + vgg), 3),
        "largest_forward_gflops": dict(sorted(
            ((f"{part_name}: {k}", round(v, 2)) for part_name, per in flops.items()
             for k, v in per.items()), key=lambda kv: -kv[1])[:10]),
    }
    if lpips is not None:
        # With both parts at the same GFLOP/s, the lpips step takes this many times the l1 step.
        result["lpips_gflops_estimate"] = round(vgg, 1)
        result["flops_ratio_lpips_step_over_l1_step"] = round((step + vgg) / step, 3)
        # The l1 step is about the whole step without the LPIPS part. However cheap the distance,
        # the lpips step can't beat VGG16's FLOPs at the best float32 rate this machine reaches.
        l1_step = timings["whole step"] - timings[LPIPS_PART]
        vgg_rate = vgg / timings[VGG_PART]
        result["achieved_gflops_per_second"].update({
            "LPIPS": round(vgg / timings[LPIPS_PART], 1),
            "VGG16 alone": round(vgg_rate, 1),
            "rest of the step": round(step / l1_step, 1)})
        matmul = matmul_gflops_per_second(args.repeats)
        best = max(matmul, vgg_rate)
        result["float32_matmul_gflops_per_second"] = round(matmul, 1)
        result["lpips_step_over_l1_step"] = {
            "measured": round(timings["whole step"] / l1_step, 3),
            "with a free distance": round((l1_step + timings[VGG_PART]) / l1_step, 3),
            "floor: VGG16 at the best rate measured": round((l1_step + vgg / best) / l1_step, 3)}
    if args.trace:
        result["profiler_ms_per_step_by_op_type"] = op_type_times(gan, real, 2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
