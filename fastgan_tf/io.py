"""Crash-safe file writes: write a temporary file beside the target, then rename over it.

`os.replace` is atomic on POSIX and on Windows (same volume), so a reader - or a run resumed after
a kill - sees either the old file or the new one, never half of one. On Windows the rename is
retried for a few seconds while a scanner or sync client holds the new file (`oscompat`).

Text is written as UTF-8 bytes with LF line ends on every OS, so files written on Windows and
Linux are identical, and appending to one never mixes line ends.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from fastgan_tf import oscompat


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` (same suffix) for a writer that wants a file name;
    it replaces `path` only if the block completes, and is removed otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}",
                               dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        oscompat.retry_while_busy(os.replace, tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """Yield a binary file to write; it replaces `path` only if the block completes."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_file(path) as f:
        f.write(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
