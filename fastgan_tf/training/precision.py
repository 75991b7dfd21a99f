"""Choosing the compute precision for this machine (a run may resume with another: compat.py).

`--mixed-precision`:

* `off`: float32 everywhere.
* `on`: float16 compute, float32 master weights, dynamic loss scaling (float16's range is small).
* `bf16`: bfloat16 compute, float32 master weights, no loss scaling (bfloat16 has float32's
  range).
* `auto`: bfloat16 on CUDA GPUs of compute capability 8.0 or newer (Ampere: fast bfloat16, no loss
  scale to manage), float16 on 7.x (tensor cores without bfloat16), float32 on older GPUs. On a
  CPU, bfloat16 where the CPU computes it natively (AMX or AVX512_BF16) through TensorFlow's
  oneDNN kernels and `--deterministic` is off, float32 otherwise. Measured, each against float32
  in one invocation (benchmarks/README.md): on an Intel Xeon with AMX 0.53x float32's step time
  at 256 px (l1), 0.69x with LPIPS, 0.64x at ngf 16 and 0.62x at 64 px (with BatchNorm's fused
  op, layers.py); 0.79x at 64 px and 0.76x at 256 px on an AMD EPYC with AVX512_BF16 (before
  it); it trained as well in a short check on both. Without native bfloat16 (AVX2 only)
  it was 5.8x *slower*, and with op determinism about 10x slower: float32 there. float16 is
  several times slower than float32 on CPUs, so `auto` never picks it on one.

In every mode, spectral norm's power iteration, BatchNorm's statistics, the losses, the EMA and
the FID features are computed in float32 (the layers cast them; in bfloat16 on a CPU, BatchNorm's
fused op accumulates its statistics in float32). LPIPS's VGG16 too, unless
`--lpips-precision bf16` (opt-in, any mode) runs its blocks 3-5 in bfloat16 (fastgan_tf/lpips.py).
"""

from __future__ import annotations

import importlib
import os

import keras
import tensorflow as tf

from fastgan_tf import cpu

POLICIES = {"off": "float32", "on": "mixed_float16", "bf16": "mixed_bfloat16"}


def gpu_capabilities() -> list[tuple[int, int] | None]:
    """The CUDA compute capability of each visible GPU (None where TensorFlow does not say)."""
    found = []
    for gpu in tf.config.list_physical_devices("GPU"):
        capability = tf.config.experimental.get_device_details(gpu).get("compute_capability")
        found.append(tuple(capability) if capability else None)
    return found


def onednn_on() -> bool:
    """Whether TensorFlow runs its oneDNN CPU kernels (what bfloat16 on a CPU is fast through)."""
    try:  # TensorFlow's own answer (private: hence the fallback)
        port = importlib.import_module("tensorflow.python.util._pywrap_util_port")
        return bool(port.IsMklEnabled())
    except (ImportError, AttributeError):
        return os.environ.get("TF_ENABLE_ONEDNN_OPTS", "").strip().lower() in ("1", "true")


def cpu_bfloat16_pays() -> bool:
    """Whether this CPU computes bfloat16 natively through oneDNN: where it measured faster."""
    flags = cpu.bfloat16_flags() or []
    return ("amx_bf16" in flags or "avx512_bf16" in flags) and onednn_on()


def auto_precision(capabilities: list, cpu_bfloat16: bool = False) -> str:
    """What `auto` means for GPUs of these compute capabilities (none: a CPU, in bfloat16 if
    `cpu_bfloat16`)."""
    if not capabilities:
        return "bf16" if cpu_bfloat16 else "off"
    if None in capabilities:
        return "off"
    if min(capabilities) >= (8, 0):
        return "bf16"
    return "on" if min(capabilities) >= (7, 0) else "off"


def resolve_mixed_precision(mode: str, deterministic: bool = False) -> str:
    """Turn 'auto' into 'bf16', 'on' or 'off' for this machine; other modes are kept."""
    if mode != "auto":
        return mode
    gpus = gpu_capabilities()
    return auto_precision(gpus, cpu_bfloat16=not gpus and not deterministic and cpu_bfloat16_pays())


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


def slow_lpips_precision(lpips_precision: str, deterministic: bool, on_gpu: bool,
                         capabilities: list | None = None) -> str | None:
    """A warning when `--lpips-precision bf16` would be slower than float32 here (or, on GPUs
    before Ampere, may not run), else None: bfloat16 is fast only where it is native."""
    if lpips_precision != "bf16":
        return None
    if on_gpu:
        if capabilities and (None in capabilities or min(capabilities) < (8, 0)):
            return ("--lpips-precision bf16 on a GPU older than compute capability 8.0 (Ampere), "
                    "which has no native bfloat16 (never tried): use --lpips-precision float32")
        return None
    if deterministic:
        return ("--deterministic with --lpips-precision bf16 is slower on a CPU (TensorFlow's "
                "deterministic bfloat16 kernels): use --lpips-precision float32")
    if not cpu_bfloat16_pays():
        return ("--lpips-precision bf16 on a CPU without AMX or AVX512_BF16 (or with oneDNN off) "
                "is slower than float32, which such CPUs compute natively: use "
                "--lpips-precision float32")
    return None
