"""How much device memory a training step needs, estimated from the model (printed by --dry-run).

GPU memory cannot be measured on the CPU-only machines this project is built on, so it is
counted instead:

* state: G, D and EMA G weights (float32), Adam's two moments for G and D, one float32 gradient
  per weight;
* activations: the bytes of every output of every operation of a forward pass, traced (not run)
  at micro-batch 1 and 2 to separate what grows with the batch from what does not (normalised
  kernels, their float16 copies). A step holds G's pass (taped until the G step) plus the larger
  of D's passes (the real one, with decoders). Not every output is kept for the backward pass:
  the count is scaled by `KEPT_SHARE`, measured on CPU. Since the step runs G after D's real
  passes (fastgan.py), the two are no longer alive together: the sum is now an upper bound,
  and the share was measured before that change;
* a fixed allowance for what TensorFlow's allocator does not see (CUDA context, cuDNN
  workspaces, fragmentation), `DEVICE_OVERHEAD_GIB`: an assumption, not a measurement.

Mixed precision is counted with the dtypes the layers really use (float16 convolutions, float32
statistics). benchmarks/README.md compares the estimate with measured peaks.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

import keras
import tensorflow as tf

from fastgan_tf.training.precision import POLICIES

GIB = 2**30
DEVICE_OVERHEAD_GIB = 0.5
# Share of the counted forward outputs alive at the step's peak, measured with TensorFlow's
# allocator on CPU at 64x64/ngf16 and 256x256/ngf64, batches 4 and 8 (0.47-0.62 in float32,
# 0.38-0.39 under mixed_float16, whose float32 casts are counted but short-lived), rounded up.
KEPT_SHARE = {"float32": 0.65, "mixed_float16": 0.45,
              "mixed_bfloat16": 0.45}  # bfloat16: as float16 (same sizes), not measured
# LPIPS runs VGG16 on the three reconstructions (kept for the backward pass) and, untaped, on
# the targets. Measured when it ran on both as one batch: 0.2 of the outputs of 6 x batch images
# at 64x64 and 256x256, i.e. 0.4 of the reconstructions' outputs, which is what is counted now
# (an assumption carried over, not re-measured). Counted in float32 whatever --lpips-precision:
# with VGG16's blocks 3-5 in bfloat16 the allocator's peak at 256 px, batch 8 rose by 85-170 MiB
# (2.72 against 2.55-2.63 GiB, two runs; presumably casts kept for the backward pass), so
# counting its activations at two bytes would understate it.
LPIPS_KEPT_SHARE = 0.4
# Outputs that alias their input or are bookkeeping: they allocate nothing worth counting.
_FREE_OPS = {"Const", "Identity", "IdentityN", "Reshape", "Shape", "ShapeN", "Size", "Rank",
             "ReadVariableOp", "VarHandleOp", "Placeholder", "NoOp", "AssignVariableOp",
             "AssignAddVariableOp", "StopGradient", "Squeeze", "ExpandDims", "StridedSlice",
             "Pack", "Range", "Fill", "ZerosLike", "OnesLike", "BroadcastGradientArgs"}


def _pass_bytes(fn, spec) -> dict[str, int]:
    """Bytes of the outputs of each top-level layer's operations in one traced call of `fn`."""
    graph = tf.function(fn, autograph=False).get_concrete_function(spec).graph
    per_layer: dict[str, int] = defaultdict(int)
    for op in graph.get_operations():
        if op.type in _FREE_OPS:
            continue
        for out in op.outputs:
            if out.dtype == tf.resource or not out.shape.is_fully_defined():
                continue
            parts = op.name.split("/")
            layer = re.sub(r"_\d+$", "", parts[1]) if len(parts) > 2 else "(other)"
            per_layer[layer] += out.shape.num_elements() * out.dtype.size
    return per_layer


def _per_sample(fn_of_batch, spec_of_batch) -> tuple[dict[str, int], dict[str, int]]:
    """(bytes per sample, fixed bytes) of each layer, from traces at batch 1 and 2."""
    one = _pass_bytes(fn_of_batch, spec_of_batch(1))
    two = _pass_bytes(fn_of_batch, spec_of_batch(2))
    layers = set(one) | set(two)
    per_sample = {k: max(two.get(k, 0) - one.get(k, 0), 0) for k in layers}
    fixed = {k: max(one.get(k, 0) - per_sample[k], 0) for k in layers}
    return per_sample, fixed


def _params(model) -> int:
    return sum(int(v.shape.num_elements()) for v in model.trainable_variables)


@contextmanager
def precision(mode: str) -> Iterator[None]:
    """Build models under the dtype policy of `--mixed-precision` mode 'off', 'on' or 'bf16'."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(POLICIES[mode])
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def estimate(generator, discriminator, passes: dict, micro_batch: int, mode: str,
             lpips_input: tuple[int, int] | None = None) -> dict:
    """Estimated device memory (GiB) of one training step at `micro_batch` per device.

    `passes` maps a name ("G", "D") to (fn of a batch, batch size -> its TensorSpec): the passes
    whose activations a step keeps, with models built under `precision(mode)`. `lpips_input`
    (side, channels) adds LPIPS's VGG16 on three reconstructions of that size, in float32
    whatever `--lpips-precision` (see LPIPS_KEPT_SHARE).
    """
    acts, vgg_params = {}, 0
    for name, (fn, spec_of_batch) in passes.items():
        per_sample, fixed = _per_sample(fn, spec_of_batch)
        acts.update({f"{name}/{k}": micro_batch * v + fixed[k] for k, v in per_sample.items()})
    precision_name = POLICIES[mode]
    activations = KEPT_SHARE[precision_name] * sum(acts.values())
    if lpips_input is not None:  # VGG16 on the three reconstructions
        from fastgan_tf.lpips import LPIPS

        lpips = LPIPS(vgg_weights=None)
        size, channels = lpips_input
        spec = lambda b: tf.TensorSpec([3 * b, size, size, channels])  # noqa: E731
        lpips_ps, _ = _per_sample(lpips.taps, spec)
        vgg_params = sum(int(v.shape.num_elements()) for v in lpips.weights)
        acts["LPIPS/vgg16"] = micro_batch * sum(lpips_ps.values())
        activations += LPIPS_KEPT_SHARE * acts["LPIPS/vgg16"]
    g_params, d_params = _params(generator), _params(discriminator)
    # G, EMA G, D weights + Adam m, v (G and D) + gradients (G and D), all float32; frozen VGG.
    state = 4 * (2 * g_params + d_params + 2 * (g_params + d_params) + (g_params + d_params)
                 + vgg_params)
    counted = sum(acts.values())
    tensors = state + activations
    largest = sorted(acts.items(), key=lambda kv: -kv[1])[:6]
    return {
        "micro_batch_per_device": micro_batch,
        "precision": precision_name,
        "weights_optimizer_gradients_gib": round(state / GIB, 2),
        "forward_outputs_gib": round(counted / GIB, 2),
        "activations_gib": round(activations / GIB, 2),
        "assumed_overhead_gib": DEVICE_OVERHEAD_GIB,
        "device_total_gib": round(tensors / GIB + DEVICE_OVERHEAD_GIB, 2),
        "largest_forward_outputs_gib": {k: round(v / GIB, 3) for k, v in largest},
    }


def estimate_for_config(cfg) -> dict | None:
    """The model's estimate for the micro-batch and precision `cfg` will train with here.

    None for models that register no estimate (the SSD baseline is small enough for any GPU).
    """
    from fastgan_tf.training import registry
    from fastgan_tf.training.distribute import expected_replicas
    from fastgan_tf.training.precision import resolve_mixed_precision
    from fastgan_tf.training.sharding import check_batch_split

    spec = registry.get(cfg.model)
    if spec.memory_estimate is None:
        return None
    replicas = expected_replicas(cfg.strategy)
    micro = check_batch_split(cfg.batch_size, replicas, cfg.accumulate)
    mode = resolve_mixed_precision(cfg.mixed_precision, cfg.deterministic)
    report = spec.memory_estimate(cfg, micro, mode)
    return {"replicas": replicas, **report}
