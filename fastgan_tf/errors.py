"""Errors the user can fix, and turning any error into the one line the CLIs print."""

from __future__ import annotations

import errno
import os
import re

# errno texts worth showing as they are: they tell the user what to fix. Windows has no text for
# some (its EDQUOT is a Winsock code: "Unknown error"), and such a text would match anything.
_OS_REASONS = tuple(text for text in (os.strerror(getattr(errno, name)) for name in (
    "EROFS", "EACCES", "EPERM", "EIO", "ENOENT") if hasattr(errno, name))
    if not text.lower().startswith("unknown error"))

# A full disk or quota, whichever way it is reported: by errno (ENOSPC, EDQUOT: 122 on Linux,
# 69 on macOS), by Windows' ERROR_HANDLE_DISK_FULL (39) and ERROR_DISK_FULL (112) in
# `OSError.winerror`, or only in the message (TensorFlow's errors carry no code).
DISK_FULL = "No space left on device (disk full or quota exceeded)"
_DISK_FULL_ERRNOS = {getattr(errno, name) for name in ("ENOSPC", "EDQUOT") if hasattr(errno, name)}
_DISK_FULL_WINERRORS = {39, 112}
_DISK_FULL_TEXTS = ("no space left on device", "disk quota exceeded",
                    "not enough space on the disk", "the disk is full")


class UserError(Exception):
    """A problem the user can fix; the CLIs print its message on one line, no traceback."""


def one_line(message: object) -> str:
    """Errors are promised to be one line: fold any newline a message picked up on the way."""
    return " ".join(str(message).split())


def reason_of(error: BaseException) -> str:
    """A one-line reason for an OSError or a TensorFlow error, without TF's op decorations."""
    if is_disk_full(error):
        return DISK_FULL
    text = getattr(error, "message", None) or getattr(error, "strerror", None) or str(error)
    for known in _OS_REASONS:
        if known in text:
            return known
    lines = str(text).strip().splitlines()
    if not lines:
        return type(error).__name__
    line = re.sub(r"\{\{[^}]*\}\}\s*", "", lines[0])
    return re.sub(r"\s*\[Op:\w+\]$", "", line).strip() or type(error).__name__


def is_disk_full(error: BaseException) -> bool:
    """Whether `error` means no space is left, judged by its codes before its (platform's) text."""
    if getattr(error, "errno", None) in _DISK_FULL_ERRNOS:
        return True
    if getattr(error, "winerror", None) in _DISK_FULL_WINERRORS:
        return True
    text = str(getattr(error, "message", None) or error).lower()
    return any(full in text for full in _DISK_FULL_TEXTS)
