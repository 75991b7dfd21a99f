"""What this machine's CPU offers: its model, its cores, and the flags that decide which kernels
are fast (bfloat16: AMX, AVX512_BF16; oneDNN's filter gradients: AVX-512).

Read from /proc/cpuinfo (Linux, WSL2). Elsewhere (native Windows, macOS) nothing is read and
callers treat the CPU as one without bfloat16 arithmetic: float32, the safe choice.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

from fastgan_tf import oscompat

CPUINFO = Path("/proc/cpuinfo")
BF16_FLAGS = ("amx_bf16", "amx_tile", "avx512_bf16")  # what bfloat16 kernels can use


def cpu_info() -> dict | None:
    """Model, physical cores and flags of /proc/cpuinfo (Linux, WSL); None where it is not read."""
    if oscompat.on_windows() or not sys.platform.startswith("linux"):
        return None
    info = _parse_cpuinfo(str(CPUINFO))
    return None if info is None else dict(info, flags=list(info["flags"]))  # callers' own copy


@functools.lru_cache(maxsize=4)
def _parse_cpuinfo(path: str) -> dict | None:
    """Read once per process and path: the layers ask at every trace, and on a many-core server
    the file has a block per logical CPU."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    fields: dict[str, str] = {}
    for line in text.splitlines():  # the first processor's block is enough
        key, colon, value = line.partition(":")
        if colon:
            fields.setdefault(key.strip(), value.strip())
    cores = fields.get("cpu cores", "")
    return {"model": fields.get("model name"),
            "physical_cores": int(cores) if cores.isdigit() else None,
            "flags": fields.get("flags", "").split()}


def bfloat16_flags() -> list[str] | None:
    """The flags of BF16_FLAGS this CPU has; None where /proc/cpuinfo is not read."""
    info = cpu_info()
    return None if info is None else [f for f in BF16_FLAGS if f in info["flags"]]


def has_avx512() -> bool:
    """Whether the CPU has AVX-512 (oneDNN's avx512_core kernels); False where it is not read."""
    info = cpu_info()
    return info is not None and "avx512f" in info["flags"]

