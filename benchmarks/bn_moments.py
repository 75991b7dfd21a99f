"""What BatchNorm's stable moments cost: FastGAN steps with them and with tf.nn.moments (JSON).

    python benchmarks/bn_moments.py --resolution 256 --widths 64 16 --threads 2
    python benchmarks/bn_moments.py --resolution 64 --widths 16 --rounds 1 --iterations 2  # check

`fastgan_tf.models.layers.batch_moments` (two passes, float64 sums of float32 row sums) against
the single float32 reduction of `tf.nn.moments` that BatchNorm used before. Everything runs in
this one process, interleaved, because the machines are shared and noisy:

* `moments`: the moments alone on one BatchNorm input of `--moments-shape` (default 8 x 256 x
  256 x 64, the 256 px generator's largest), forward and forward + backward, alternating calls.
* `steps`: for each width (ngf = ndf), `--rounds` rounds of benchmarks/train_step.py's
  `measure` (a new model, warm-up, timed iterations) with each variant, their order alternating
  from round to round. `plain_vs_stable` < 1 means the stable moments are slower.

The machine (CPU model, cores, the SIMD flags that decide TensorFlow's kernels) and the load
average before and after are part of the output: numbers from a loaded machine are not
comparable.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import machine  # noqa: E402 (benchmarks/ on the path)
from train_step import GRID, measure, parser as step_parser  # noqa: E402


def plain_moments(x, synchronized=False):
    """What BatchNorm computed before: tf.nn.moments (one float32 reduction per statistic)."""
    import tensorflow as tf

    if synchronized:
        raise NotImplementedError("the benchmark runs on one device")
    mean, variance = tf.nn.moments(x, axes=list(range(x.shape.rank - 1)))
    return mean, variance, tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), tf.float64)


@contextlib.contextmanager
def moments(variant: str):
    """BatchNorm computes its statistics with `variant` ("stable" or "plain") inside."""
    from fastgan_tf.models import layers

    stable = layers.batch_moments
    layers.batch_moments = stable if variant == "stable" else plain_moments
    try:
        yield
    finally:
        layers.batch_moments = stable


def interleaved_medians(functions: dict, repeats: int) -> dict:
    """Median seconds of each function, called in turn `repeats` times after one warm-up call."""
    import numpy as np
    import tensorflow as tf

    times = {name: [] for name in functions}
    for round_ in range(repeats + 1):
        for name, fn in functions.items():
            start = time.perf_counter()
            for t in tf.nest.flatten(fn()):
                t.numpy()
            if round_:
                times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def time_moments(shape: list[int], repeats: int) -> dict:
    """Milliseconds of the stable and plain moments on one input, forward and with gradient."""
    import numpy as np
    import tensorflow as tf

    from fastgan_tf.models.layers import batch_moments

    x = tf.constant(np.random.default_rng(0).normal(3.0, 2.0, shape).astype(np.float32))

    def with_gradient(fn):
        with tf.GradientTape() as tape:
            tape.watch(x)
            mean, variance, _ = fn(x)
            loss = tf.reduce_sum(mean) + tf.reduce_sum(tf.math.rsqrt(variance + 1e-5))
        return tape.gradient(loss, x)

    functions = {}
    for variant, fn in (("stable", batch_moments), ("plain", plain_moments)):
        functions[f"{variant}_forward"] = tf.function(lambda fn=fn: fn(x)[:2], autograph=False)
        functions[f"{variant}_with_gradient"] = tf.function(lambda fn=fn: with_gradient(fn),
                                                            autograph=False)
    ms = {k: round(1000 * v, 1) for k, v in interleaved_medians(functions, repeats).items()}
    for part in ("forward", "with_gradient"):
        ms[f"{part}_plain_vs_stable"] = round(ms[f"plain_{part}"] / ms[f"stable_{part}"], 3)
    return {"shape": shape, "repeats": repeats, "median_ms": ms}


def time_steps(args: argparse.Namespace) -> list[dict]:
    """Per width, `rounds` interleaved rounds of train_step.measure with each variant."""
    import numpy as np

    results = []
    for width in args.widths:
        step_args = step_parser().parse_args([
            "--resolution", str(args.resolution), "--batch-size", str(args.batch_size),
            "--ngf", str(width), "--ndf", str(width), "--threads", str(args.threads),
            "--warmup", str(args.warmup), "--iterations", str(args.iterations)])
        for name in GRID:  # one setting, as train_step.py's --single
            setattr(step_args, name, getattr(step_args, name)[0])
        medians = {"stable": [], "plain": []}
        for round_ in range(args.rounds):
            for variant in (("stable", "plain") if round_ % 2 == 0 else ("plain", "stable")):
                with moments(variant):
                    medians[variant].append(measure(step_args)["median_s_per_iter"])
                gc.collect()
                print(json.dumps({"width": width, "round": round_, variant: medians[variant][-1]}),
                      file=sys.stderr, flush=True)  # progress
        stable, plain = (float(np.median(medians[k])) for k in ("stable", "plain"))
        results.append({"resolution": args.resolution, "batch_size": args.batch_size,
                        "ngf": width, "ndf": width, "rounds": args.rounds,
                        "iterations_per_round": args.iterations,
                        "median_s_per_iter": {"stable": round(stable, 3), "plain": round(plain, 3)},
                        "per_round_s": medians,
                        "plain_vs_stable": round(plain / stable, 3)})
    return results


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--widths", type=int, nargs="+", default=[64, 16], help="ngf = ndf values")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per width")
    p.add_argument("--warmup", type=int, default=2, help="untimed iterations per round (>= 1)")
    p.add_argument("--iterations", type=int, default=5, help="timed iterations per round")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads; 0 = TF default")
    p.add_argument("--moments-shape", type=int, nargs=4, default=[8, 256, 256, 64])
    p.add_argument("--moments-repeats", type=int, default=20)
    return p


def main() -> None:
    args = parser().parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.threads:  # before TensorFlow's first op, for the moments and the steps alike
        import tensorflow as tf

        from fastgan_tf.training.distribute import configure_cpu_threads
        configure_cpu_threads()
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    result = {"machine": machine(), "intra_op_threads": args.threads or None}
    result["moments"] = time_moments(args.moments_shape, args.moments_repeats)
    result["steps"] = time_steps(args)
    result["load_average_after"] = os.getloadavg()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
