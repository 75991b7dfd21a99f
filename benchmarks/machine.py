"""The machine a benchmark ran on, for its JSON: numbers from different machines (or a loaded
one) are not comparable, so every benchmark says where and under what load it measured."""

from __future__ import annotations

import os
import platform
from pathlib import Path

CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16",
             "amx_int8")


def machine() -> dict:
    """CPU model, core counts, the relevant flags (/proc/cpuinfo on Linux) and the load."""
    info = {"cpu": platform.processor() or platform.machine(), "logical_cpus": os.cpu_count()}
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        fields = dict(line.split(":", 1) for line in cpuinfo.read_text().splitlines()
                      if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        flags = set(fields.get("flags", "").split())
        info.update(cpu=fields.get("model name", info["cpu"]),
                    physical_cores=int(fields.get("cpu cores", 0)) or None,
                    flags={flag: flag in flags for flag in CPU_FLAGS})
    import tensorflow as tf

    load = os.getloadavg() if hasattr(os, "getloadavg") else None  # not on Windows
    info.update(tensorflow=tf.__version__, load_average=load)
    return info
