"""Where fastgan-tf keeps caches (decoded images, FID statistics, downloaded weights)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """`$FASTGAN_CACHE`, else the platform's user cache folder + fastgan_tf."""
    if os.environ.get("FASTGAN_CACHE"):
        return Path(os.environ["FASTGAN_CACHE"]).expanduser()
    if os.name == "nt" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "fastgan_tf"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "fastgan_tf"
