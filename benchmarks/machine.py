"""The machine a benchmark ran on, for its JSON: numbers from different machines (or a loaded
one) are not comparable, so every benchmark says where and under what load it measured.

Imports nothing heavy at module level: `reference_step.py` runs it in a PyTorch environment."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

# fastgan_tf from this checkout, also when the package is not installed (or installed elsewhere)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16",
             "amx_int8")


def median_ms(steps: dict, repeats: int) -> dict:
    """Median milliseconds per call of each step (a function returning tensors), the steps
    called in turn, after two warm-up calls each (tracing)."""
    import time

    import numpy as np

    times = {name: [] for name in steps}
    for _ in range(2):  # warm-up
        for step in steps.values():
            [t.numpy() for t in step()]
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            [t.numpy() for t in step()]
            times[name].append(time.perf_counter() - start)
    return {name: round(1000 * float(np.median(t)), 2) for name, t in times.items()}


def configure_threads(threads: int) -> None:
    """The trainer's CPU threading (one inter-op thread), then `threads` intra-op threads when
    given (0: TensorFlow's default). Call it before TensorFlow's first op."""
    import tensorflow as tf

    from fastgan_tf.training.distribute import configure_cpu_threads

    configure_cpu_threads()
    if threads and tf.config.threading.get_intra_op_parallelism_threads() != threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)  # once per process


def machine() -> dict:
    """CPU model, core counts, the flags that matter for speed, TensorFlow's version, the load."""
    import tensorflow as tf

    from fastgan_tf.cpu import cpu_info

    info = {"cpu": platform.processor() or platform.machine(), "logical_cpus": os.cpu_count()}
    cpu = cpu_info()  # None off Linux
    if cpu is not None:
        info.update(cpu=cpu["model"] or info["cpu"], physical_cores=cpu["physical_cores"],
                    flags={flag: flag in cpu["flags"] for flag in CPU_FLAGS})
    load = os.getloadavg() if hasattr(os, "getloadavg") else None  # not on Windows
    info.update(tensorflow=tf.__version__, load_average=load)
    return info


def peak_rss_mib() -> float | None:
    """This process's peak resident memory; None on Windows (no resource module)."""
    try:
        import resource
    except ImportError:
        return None
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024.0 if sys.platform != "darwin" else kib / 2**20
