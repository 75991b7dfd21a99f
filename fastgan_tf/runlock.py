"""A run-folder lock that a crash cannot leave stuck: the OS releases it when the holder dies.

The lock file holds a note at its start: who holds the lock (pid, host, system), since when, and
a heartbeat the holder refreshes every `HEARTBEAT_EVERY` seconds. The OS lock is what counts
between trainers of one system; the heartbeat covers what it cannot see: a trainer in WSL2 and
one on Windows share `/mnt/c` without seeing each other's locks, and a network share may not
pass locks between computers. So a fresh heartbeat from another system refuses the run even when
the OS lock was granted; a stale one (a crashed holder) does not, nor does one from this system
once the OS lock is ours (its writer died: the OS released its lock).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import sys
import threading
import time
from pathlib import Path

from fastgan_tf import oscompat
from fastgan_tf.errors import UserError, reason_of

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
try:
    import msvcrt
except ImportError:  # POSIX
    msvcrt = None

log = logging.getLogger(__name__)

# Windows locks byte ranges and refuses reads of a locked one: lock a byte far past the note so
# that the note stays readable (msvcrt.locking locks from the current file position).
LOCK_OFFSET = 1 << 20
NOTE_SIZE = 512  # the note is padded to this size and rewritten in place
HEARTBEAT_EVERY = 30.0  # seconds between refreshes of the holder's heartbeat
HEARTBEAT_FRESH = 120.0  # a heartbeat younger than this means its trainer still runs
# Windows releases a dead process's locks asynchronously: keep trying this long (seconds).
WINDOWS_WAIT = 5.0
POLL = 0.25

# errnos of a lock someone else holds; any other failure means this filesystem cannot lock
# (EINVAL from `\\wsl$\...`, ENOLCK, EOPNOTSUPP on some network mounts).
_CONFLICT_ERRNOS = {getattr(errno, name) for name in ("EACCES", "EAGAIN", "EWOULDBLOCK",
                                                      "EDEADLK") if hasattr(errno, name)}


class RunLock:
    """An exclusive lock on the file `path`, released by the OS when the process dies.

    Uses `fcntl.flock` on POSIX and `msvcrt.locking` on Windows, so a crashed trainer never
    leaves a stale lock behind, unlike a plain "lock file exists" check. On a filesystem that
    cannot lock at all training goes on with a warning, guarded by the heartbeat only.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._file = None
        self._locked = False
        self._since = 0.0
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def __enter__(self) -> RunLock:
        f = self._open()
        try:
            self._locked = self._acquire(f)
            self._refuse_a_live_holder(_read_note(f))
            self._since = time.time()
            _write_note(f, self._note(heartbeat=self._since))
        except BaseException:
            self._release_os_lock(f)
            f.close()
            raise
        self._file = f
        self._stop.clear()
        self._beat = threading.Thread(target=self._keep_beating, name="run-lock-heartbeat",
                                      daemon=True)
        self._beat.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._file is None:
            return
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        try:
            _write_note(self._file, self._note(heartbeat=None))  # released: no one waits for it
            self._release_os_lock(self._file)
        finally:
            self._file.close()
            self._file = None

    # ------------------------------------------------------------------------------ acquiring
    def _open(self):
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o666)
            return open(fd, "r+b", buffering=0)
        except OSError as e:
            raise UserError(f"cannot create the run lock {self.path}: {reason_of(e)}; choose a "
                            "writable --out folder or fix its permissions") from None

    def _acquire(self, f) -> bool:
        """Take the OS lock: True if taken, False if this filesystem cannot lock (warned)."""
        deadline = time.monotonic() + (WINDOWS_WAIT if oscompat.on_windows() else 0.0)
        while True:
            try:
                _lock_file(f)
                return True
            except OSError as e:
                if not _is_conflict(e):
                    log.warning(f"cannot lock {self.path} on this filesystem ({reason_of(e)}); "
                                "make sure no other training uses this run folder")
                    return False
                if time.monotonic() >= deadline:
                    raise UserError(self._held_message(_read_note(f))) from None
            time.sleep(POLL)

    def _refuse_a_live_holder(self, note) -> None:
        """Refuse while another trainer's heartbeat is fresh, unless the OS lock proves it gone."""
        if not isinstance(note, dict) or _is_ours(note) or not _is_fresh(note):
            return
        if self._locked and note.get("system") == _system():
            return  # its OS released the lock: that trainer died less than a heartbeat ago
        raise UserError(self._held_message(note, alive=True))

    def _held_message(self, note, alive: bool = False) -> str:
        why = (" (its heartbeat is fresh, and a trainer on another system or computer is not "
               f"seen by the OS lock; a stopped one's expires after {HEARTBEAT_FRESH:.0f} s)"
               if alive else "")
        return (f"{self.path} is held by {_describe(note)}{why}: another training uses this run "
                "folder; wait for it to finish, or pass --run-name to train in another folder")

    # ------------------------------------------------------------------------------ holding
    def _note(self, heartbeat: float | None) -> dict:
        return {"pid": os.getpid(), "host": socket.gethostname()[:200], "system": _system(),
                "since": self._since, "heartbeat": heartbeat}

    def _keep_beating(self) -> None:
        while not self._stop.wait(HEARTBEAT_EVERY):
            _write_note(self._file, self._note(heartbeat=time.time()))

    def _release_os_lock(self, f) -> None:
        if self._locked:
            self._locked = False
            try:
                _unlock_file(f)
            except OSError:
                pass  # closing the file releases it too


# ---------------------------------------------------------------------------------- the note
def _system() -> str:
    """This OS instance as others see it: WSL2 and its Windows host share the host name."""
    return f"{socket.gethostname()[:200]} ({'windows' if oscompat.on_windows() else sys.platform})"


def _write_note(f, note: dict) -> None:
    """Rewrite the note in place, padded to a fixed size so a reader never sees a shorter tail."""
    data = json.dumps(note).encode("utf-8")[:NOTE_SIZE - 1].ljust(NOTE_SIZE - 1) + b"\n"
    try:
        f.seek(0)
        f.write(data)
    except OSError as e:  # the OS lock holds even if the note cannot be written
        log.debug(f"could not write the lock note: {e}")


def _read_note(f) -> dict | str | None:
    """The holder's note: a dict, the text an older version wrote ("pid N on HOST"), or None."""
    try:
        f.seek(0)
        text = f.read(NOTE_SIZE).decode("utf-8", "replace").strip()
    except OSError:  # Windows refuses to read a range an older version locked
        return None
    try:
        note = json.loads(text)
    except ValueError:
        return text or None
    return note if isinstance(note, dict) else text


def _is_ours(note: dict) -> bool:
    return note.get("pid") == os.getpid() and note.get("system") == _system()


def _is_fresh(note: dict) -> bool:
    beat = note.get("heartbeat")
    return isinstance(beat, (int, float)) and abs(time.time() - beat) < HEARTBEAT_FRESH


def _describe(note) -> str:
    """Who holds the lock, e.g. 'pid 4242 on HOST (linux) since 2026-11-23 10:00:00, last
    heartbeat 12 s ago'."""
    if not isinstance(note, dict):
        return note or "another process"
    text = f"pid {note.get('pid', '?')} on {note.get('system') or note.get('host', '?')}"
    since, beat = note.get("since"), note.get("heartbeat")
    try:
        if isinstance(since, (int, float)) and since > 0:
            text += f" since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(since))}"
        if isinstance(beat, (int, float)):
            text += f", last heartbeat {max(0, round(time.time() - beat))} s ago"
    except (OverflowError, OSError, ValueError):  # a note edited by hand
        pass
    return text


# ---------------------------------------------------------------------------------- OS locks
def _is_conflict(error: OSError) -> bool:
    """Whether the lock failed because someone holds it (not because locks do not work here)."""
    if error.errno in _CONFLICT_ERRNOS:
        return True
    if getattr(error, "winerror", None) == oscompat.ERROR_LOCK_VIOLATION:
        return True
    return oscompat.on_windows() and error.errno == oscompat.MSVC_EDEADLOCK


def _lock_file(f) -> None:
    if oscompat.on_windows():
        f.seek(LOCK_OFFSET)
        msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
    elif fcntl is not None:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    else:
        raise OSError(errno.ENOSYS, "this system has no file locks")


def _unlock_file(f) -> None:
    if oscompat.on_windows():
        f.seek(LOCK_OFFSET)
        msvcrt.locking(f.fileno(), msvcrt.LK_UNLCK, 1)
    elif fcntl is not None:
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
