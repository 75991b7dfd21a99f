"""What Windows does differently with files, in one place: busy files, long paths, error codes.

Nothing here has run on Windows: this machine and CI are Linux. Each Windows path is written
from the documented behaviour and tested on Linux by simulation, which is why the platform is
asked through `on_windows()` (tests replace it) instead of `os.name` at each call site: patching
`os.name` itself would make `pathlib.Path()` build WindowsPath objects, which fail on Linux.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from fastgan_tf.errors import UserError

log = logging.getLogger(__name__)

T = TypeVar("T")

# Windows system error codes (winerror.h), as `OSError.winerror` carries them (the disk-full
# ones are in errors.py, below this module: it raises UserError).
ERROR_ACCESS_DENIED = 5
ERROR_SHARING_VIOLATION = 32
ERROR_LOCK_VIOLATION = 33
# The Microsoft C runtime's EDEADLOCK (errno.EDEADLK on Windows), which `msvcrt.locking` raises
# when a blocking lock gives up; on Linux 36 is ENAMETOOLONG, so it only counts on Windows.
MSVC_EDEADLOCK = 36

# Back-off between attempts when a file is held for a moment (seconds; tests shorten it).
RETRY_DELAYS = (0.1, 0.2, 0.4, 0.8, 1.6)
# How Windows words "held by another program" in messages that carry no code (TensorFlow's).
_BUSY_TEXTS = ("access is denied", "being used by another process")

# MAX_PATH is 260 characters including the terminating NUL; long paths lift it when enabled.
WINDOWS_MAX_PATH = 259
LONG_PATHS_KEY = r"SYSTEM\CurrentControlSet\Control\FileSystem"
LONG_PATHS_VALUE = "LongPathsEnabled"
# Checkpoint numbers are training steps; 8 digits is 100 million steps.
MAX_STEP_DIGITS = 8


def on_windows() -> bool:
    """True on Windows; the one place the package asks (tests simulate Windows by replacing it)."""
    return os.name == "nt"


# ---------------------------------------------------------------------------------------------
# Files held for a moment by antivirus, the search indexer or OneDrive
# ---------------------------------------------------------------------------------------------
def is_busy_error(error: BaseException) -> bool:
    """Whether `error` is Windows' "access denied" / "used by another process".

    Python's OSError carries the code (`winerror` 5 or 32); TensorFlow's errors only the
    message, in the language of the Windows installation (only English texts are recognised).
    """
    if getattr(error, "winerror", None) in (ERROR_ACCESS_DENIED, ERROR_SHARING_VIOLATION):
        return True
    text = str(getattr(error, "message", None) or error).lower()
    return any(busy in text for busy in _BUSY_TEXTS)


def retry_while_busy(action: Callable[..., T], *args, **kwargs) -> T:
    """`action(*args, **kwargs)`, retried with back-off while Windows says the file is busy.

    Scanners and sync clients open new files for a moment, so a rename or a checkpoint write
    fails once with "access denied" and works a second later. On other systems, and for other
    errors, the first error is raised at once; after the last attempt the last error is.
    """
    if not on_windows():
        return action(*args, **kwargs)
    for attempt, delay in enumerate(RETRY_DELAYS, 1):
        try:
            return action(*args, **kwargs)
        except Exception as e:  # OSError or TensorFlow's OpError: re-raised unless busy
            if not is_busy_error(e):
                raise
            log.debug(f"{e}; retrying in {delay} s (attempt {attempt} of "
                      f"{len(RETRY_DELAYS) + 1}): another program holds the file")
        time.sleep(delay)
    return action(*args, **kwargs)


# ---------------------------------------------------------------------------------------------
# Long paths
# ---------------------------------------------------------------------------------------------
def long_paths_enabled() -> bool:
    """Whether Windows accepts paths past MAX_PATH (the registry value; unknown counts as no)."""
    try:
        import winreg

        with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, LONG_PATHS_KEY) as key:
            value, _ = winreg.QueryValueEx(key, LONG_PATHS_VALUE)
        return int(value) == 1
    except (ImportError, OSError, TypeError, ValueError):
        return False


def deepest_run_file() -> str:
    """The longest path, relative to a run folder, that training writes.

    TensorFlow writes a checkpoint's data first as
    ``ckpt/ckpt-<step>_temp/part-00000-of-00001.data-00000-of-00001.tempstate<random uint64>``
    (BundleWriter; `best/best-<step>_temp/...` is as long); the TensorBoard event file is
    ``tensorboard/events.out.tfevents.<time>.<host>.<pid>.<n>.v2``, longer on hosts with long
    names.
    """
    step, uint64 = "9" * MAX_STEP_DIGITS, str(2**64 - 1)
    checkpoint = f"ckpt/ckpt-{step}_temp/part-00000-of-00001.data-00000-of-00001.tempstate{uint64}"
    events = f"tensorboard/events.out.tfevents.{'9' * 10}.{socket.gethostname()}.9999999.999.v2"
    return max(checkpoint, events, key=len)


def path_length_limit() -> int:
    """The longest run folder path (characters) that Windows without long paths can train in."""
    return WINDOWS_MAX_PATH - len(os.sep) - len(deepest_run_file())


def check_path_length(run_dir: Path | str) -> None:
    """Refuse, before training starts, a run folder too deep for Windows without long paths.

    Otherwise the first checkpoint fails inside TensorFlow with a confusing "not found" error.
    """
    if not on_windows():
        return
    full = os.path.abspath(run_dir)
    limit = path_length_limit()
    if len(full) <= limit or long_paths_enabled():
        return
    raise UserError(
        f"the run folder {full} is {len(full)} characters long, but checkpoints need it to be at "
        f"most {limit} on Windows without long paths; pass a shorter --out (e.g. C:\\runs) or "
        f"--run-name, or enable long paths (set HKLM\\{LONG_PATHS_KEY}\\{LONG_PATHS_VALUE} to 1, "
        "or the group policy Computer Configuration > Administrative Templates > System > "
        "Filesystem > Enable Win32 long paths), then start training again")
