"""Keeping the host memory of CPU training close to what its tensors need (glibc only).

TensorFlow's CPU allocator is malloc. On other C libraries (Windows, macOS, musl) both functions
here do nothing.
"""

from __future__ import annotations

import ctypes
import sys

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)

# Blocks at least this large (a 256 px step's activations: 8 x 64 x 64 x 32 float32 is 4 MiB)
# are mapped from the OS on allocation and unmapped on free.
MMAP_THRESHOLD_BYTES = 4 * 1024 * 1024


def _load_libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None
    except OSError:  # musl and other C libraries: nothing to tune
        return None


_LIBC = _load_libc()


def map_large_blocks() -> bool:
    """Have glibc map activation-sized blocks directly, so their memory returns to the OS on free.

    glibc's default threshold starts at 128 KiB and rises after each large free, up to 32 MiB, so
    a step's activations end up in the heap, where the holes they leave fragment it: peak RSS of
    a 256 px LPIPS step was 5.7 GiB against 4.3 GiB with a fixed 4 MiB threshold, at the same
    step time (benchmarks/README.md). Setting it also turns glibc's dynamic raising off. Returns
    whether the threshold was set.
    """
    return _LIBC is not None and _LIBC.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1


def release_freed_host_memory() -> None:
    """Give the activations freed by the last step back to the OS.

    glibc keeps freed blocks in per-thread arenas, and the next step, allocating from other
    threads and arenas, grows the process instead of reusing them: peak RSS crept up by ~0.6 GiB
    over the first steps at 256x256. Trimming after each step keeps it at one step's worth, for a
    few milliseconds.
    """
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
