"""A run-folder lock that a crash cannot leave stuck: the OS releases it when the holder dies."""

from __future__ import annotations

import errno
import logging
import os
import socket
from pathlib import Path

from fastgan_tf.errors import UserError, reason_of

log = logging.getLogger(__name__)

# errnos that mean "this filesystem cannot lock", not "someone holds the lock"
_NO_LOCKING = {getattr(errno, name) for name in ("ENOLCK", "EOPNOTSUPP", "ENOSYS")
               if hasattr(errno, name)}


class RunLock:
    """An exclusive OS lock on the file `path`, released by the OS when the process dies.

    Uses `fcntl.flock` on POSIX and `msvcrt.locking` on Windows, so a crashed trainer never
    leaves a stale lock behind, unlike a plain "lock file exists" check. On a filesystem that
    cannot lock at all (some network mounts) training goes on with a warning.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._file = None

    def __enter__(self) -> RunLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            f = open(self.path, "a+b")
        except OSError as e:
            raise UserError(f"cannot create the run lock {self.path}: {reason_of(e)}; choose a "
                            "writable --out folder or fix its permissions") from None
        try:
            _lock_file(f)
        except OSError as e:
            if e.errno in _NO_LOCKING:
                log.warning(f"cannot lock {self.path} on this filesystem ({reason_of(e)}); make "
                            "sure no other training uses this run folder")
                f.close()
                return self
            holder = _read_holder(f)
            f.close()
            raise UserError(
                f"{self.path} is held by {holder}: another training uses this run folder; wait "
                "for it to finish, or pass --run-name to train in another folder") from None
        try:
            f.seek(0)
            f.truncate()
            f.write(f"pid {os.getpid()} on {socket.gethostname()}".encode())
            f.flush()
        except OSError:
            pass  # the lock holds even if the note about its holder cannot be written
        self._file = f
        return self

    def __exit__(self, *exc) -> None:
        if self._file is not None:
            try:
                _unlock_file(self._file)
            finally:
                self._file.close()
                self._file = None


def _read_holder(f) -> str:
    try:
        f.seek(0)
        return f.read().decode("utf-8", "replace").strip() or "another process"
    except OSError:  # Windows refuses to read a locked byte range
        return "another process"


if os.name == "nt":
    import msvcrt

    def _lock_file(f):
        f.seek(0)
        msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)

    def _unlock_file(f):
        f.seek(0)
        msvcrt.locking(f.fileno(), msvcrt.LK_UNLCK, 1)
else:
    import fcntl

    def _lock_file(f):
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _unlock_file(f):
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
