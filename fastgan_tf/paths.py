"""Where fastgan-tf keeps caches (decoded images, FID statistics, downloaded weights)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def cache_dir() -> Path:
    """`$FASTGAN_CACHE`, else the platform's user cache folder + fastgan_tf."""
    if os.environ.get("FASTGAN_CACHE"):
        return Path(os.environ["FASTGAN_CACHE"]).expanduser()
    if os.name == "nt" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "fastgan_tf"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "fastgan_tf"


def keras_cache_dir() -> Path:
    """Where Keras keeps downloaded weights, by Keras's own rule (read at call time).

    `$KERAS_HOME/models`, else `~/.keras/models`; Keras falls back to `/tmp/.keras` (the temp
    folder where there is no /tmp) when the home folder is not writable. Weights other Keras
    programs downloaded there are found and reused.
    """
    home = os.environ.get("KERAS_HOME")
    if home:
        return Path(home).expanduser() / "models"
    if os.access(Path.home(), os.W_OK):
        return Path.home() / ".keras" / "models"
    temp = "/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()
    return Path(temp) / ".keras" / "models"
