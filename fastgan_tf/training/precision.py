"""Choosing the compute precision for this machine (a run may resume with another: compat.py).

`--mixed-precision`:

* `off`: float32 everywhere.
* `on`: float16 compute, float32 master weights, dynamic loss scaling (float16's range is small).
* `bf16`: bfloat16 compute, float32 master weights, no loss scaling (bfloat16 has float32's
  range).
* `auto`: bfloat16 on CUDA GPUs of compute capability 8.0 or newer (Ampere: fast bfloat16, no loss
  scale to manage), float16 on 7.x (tensor cores without bfloat16), float32 otherwise, CPUs
  included. float16 is several times slower than float32 on CPUs. bfloat16 measured faster on an
  AVX512_BF16 CPU this project was built on (0.79x float32's step time at 64 px, ngf 16; 0.76x
  at 256 px, ngf 64: benchmarks/README.md), and it trains as well there in a short check; `auto`
  keeps float32 on CPUs all the same, because the gain depends on the CPU and TensorFlow build
  (bfloat16 was slower than float32 on a CPU without native bfloat16, tf-stack.md), because the
  tests, the bit-exact resume and the comparisons with the reference are float32, and because a
  CPU run's numerics should not change with a flag of /proc/cpuinfo. `python -m fastgan_tf
  doctor --speed` times both on a CPU with AVX512_BF16 or AMX and advises `--mixed-precision
  bf16` where it wins.

In every mode, spectral norm's power iteration, BatchNorm's statistics, the losses, the EMA and
the FID features are computed in float32 (the layers cast them).
"""

from __future__ import annotations

import keras
import tensorflow as tf

POLICIES = {"off": "float32", "on": "mixed_float16", "bf16": "mixed_bfloat16"}


def gpu_capabilities() -> list[tuple[int, int] | None]:
    """The CUDA compute capability of each visible GPU (None where TensorFlow does not say)."""
    found = []
    for gpu in tf.config.list_physical_devices("GPU"):
        capability = tf.config.experimental.get_device_details(gpu).get("compute_capability")
        found.append(tuple(capability) if capability else None)
    return found


def auto_precision(capabilities: list) -> str:
    """What `auto` means for GPUs of these compute capabilities (none: a CPU)."""
    if not capabilities or None in capabilities:
        return "off"
    if min(capabilities) >= (8, 0):
        return "bf16"
    return "on" if min(capabilities) >= (7, 0) else "off"


def resolve_mixed_precision(mode: str) -> str:
    """Turn 'auto' into 'bf16', 'on' or 'off' for this machine; other modes are kept."""
    return auto_precision(gpu_capabilities()) if mode == "auto" else mode


def set_policy(mode: str) -> None:
    """Set the global Keras dtype policy of mode 'off', 'on' or 'bf16' before models are built."""
    keras.mixed_precision.set_global_policy(POLICIES[mode])


def loss_scaling(mode: str) -> bool:
    """Whether the optimizers need float16's dynamic loss scaling."""
    return mode == "on"


def slow_combination(mode: str, deterministic: bool, on_gpu: bool) -> str | None:
    """A warning when the settings would run TensorFlow's slow kernels, else None.

    With op determinism on, bfloat16 on a CPU ran about 10x slower than without it on this
    project's build machine (64 px, ngf 16: 317 s for the first 32 steps, with another benchmark
    beside it, against 12-27 s per 32 steps without determinism).
    """
    if mode == "bf16" and deterministic and not on_gpu:
        return ("--deterministic with --mixed-precision bf16 is about 10x slower on a CPU "
                "(TensorFlow's deterministic bfloat16 kernels): drop one of the two; "
                "--mixed-precision off keeps CPU runs reproducible at full speed")
    return None
