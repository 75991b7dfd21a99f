"""Errors the user can fix, and turning any error into the one line the CLIs print."""

from __future__ import annotations

import errno
import os
import re

# errno texts worth showing as they are: they tell the user what to fix.
_OS_REASONS = tuple(os.strerror(getattr(errno, name)) for name in (
    "ENOSPC", "EDQUOT", "EROFS", "EACCES", "EPERM", "EIO", "ENOENT") if hasattr(errno, name))


class UserError(Exception):
    """A problem the user can fix; the CLIs print its message on one line, no traceback."""


def one_line(message: object) -> str:
    """Errors are promised to be one line: fold any newline a message picked up on the way."""
    return " ".join(str(message).split())


def reason_of(error: BaseException) -> str:
    """A one-line reason for an OSError or a TensorFlow error, without TF's op decorations."""
    text = getattr(error, "message", None) or getattr(error, "strerror", None) or str(error)
    for known in _OS_REASONS:
        if known in text:
            return known
    lines = str(text).strip().splitlines()
    if not lines:
        return type(error).__name__
    line = re.sub(r"\{\{[^}]*\}\}\s*", "", lines[0])
    return re.sub(r"\s*\[Op:\w+\]$", "", line).strip() or type(error).__name__
