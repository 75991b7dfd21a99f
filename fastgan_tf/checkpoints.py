"""Checkpoints that survive kills, and a run-folder lock that a crash cannot leave stuck.

TensorFlow writes a checkpoint's data and index into a temporary folder and renames them into
place, and `CheckpointManager` records the new checkpoint in its state file (written atomically)
before it deletes the oldest one. So a kill at any instant leaves at least one complete
checkpoint. On resume we do not trust the state file alone: every `ckpt-N.index` in the folder
is a candidate, newest first, and one that fails to restore (truncated, garbled, half-written) is
reported and skipped in favour of the previous one. Nothing is deleted.

Keras 3 models must be built (called once) before `restore`, or the restore silently corrupts
weights (see the tf-stack notes); `Checkpoints.restore_latest` asserts that everything in the
checkpoint found a home and that every variable was restored.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf

from fastgan_tf.errors import UserError

FORMAT_VERSION = 1
_CKPT_RE = re.compile(r"^ckpt-(\d+)\.index$")


@dataclass
class Restored:
    """What `restore_latest` found: the checkpoint used and the ones it had to skip."""

    path: str | None
    skipped: list[tuple[str, str]]


class Checkpoints:
    """A `tf.train.CheckpointManager` over the given trackables plus a format version."""

    def __init__(self, directory: Path, keep: int = 2, **trackables):
        self.directory = Path(directory)
        self.format_version = tf.Variable(FORMAT_VERSION, dtype=tf.int64, trainable=False)
        self.checkpoint = tf.train.Checkpoint(format_version=self.format_version, **trackables)
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, str(self.directory), max_to_keep=keep, checkpoint_name="ckpt")

    def save(self, number: int) -> str:
        """Write checkpoint `ckpt-<number>`; on failure the previous one stays intact."""
        try:
            return self.manager.save(checkpoint_number=int(number))
        except (OSError, tf.errors.OpError) as e:
            previous = self.manager.latest_checkpoint or "none yet"
            reason = getattr(e, "message", None) or getattr(e, "strerror", None) or str(e)
            reason = reason.strip().splitlines()[0] if reason else type(e).__name__
            raise UserError(
                f"could not write a checkpoint to {self.directory}: {reason}. The previous "
                f"checkpoint ({previous}) is intact; free disk space or fix permissions and re-run "
                "the same command to resume") from None

    def candidates(self) -> list[str]:
        """Checkpoint prefixes in the folder, the state file's latest first, then newest first."""
        if not self.directory.is_dir():
            return []
        found = sorted(
            (int(m.group(1)), str(self.directory / f"ckpt-{m.group(1)}"))
            for m in (_CKPT_RE.match(p.name) for p in self.directory.iterdir()) if m)
        paths = [p for _, p in reversed(found)]
        latest = self.manager.latest_checkpoint
        if latest and latest in paths:
            paths.remove(latest)
            paths.insert(0, latest)
        return paths

    def restore_latest(self) -> Restored:
        """Restore the newest checkpoint that loads completely; skip (never delete) broken ones."""
        skipped: list[tuple[str, str]] = []
        for path in self.candidates():
            try:
                self._check_version(path)
                status = self.checkpoint.restore(path)
                status.assert_consumed()
            except UserError:
                raise
            except Exception as e:  # noqa: BLE001 - the reader raises IndexError, OpError, ...
                reason = (getattr(e, "message", None) or str(e)).strip().splitlines()
                skipped.append((path, reason[0] if reason else type(e).__name__))
                continue
            return Restored(path, skipped)
        return Restored(None, skipped)

    @staticmethod
    def _check_version(path: str) -> None:
        reader = tf.train.load_checkpoint(path)
        key = "format_version/.ATTRIBUTES/VARIABLE_VALUE"
        version = int(reader.get_tensor(key)) if reader.has_tensor(key) else None
        if version != FORMAT_VERSION:
            raise UserError(
                f"{path} has checkpoint format {version}, this version of fastgan-tf reads format "
                f"{FORMAT_VERSION}; start a new run with --fresh (the old run is kept) or use the "
                "fastgan-tf version that wrote it")


class RunLock:
    """An exclusive OS lock on the file `path`, released by the OS when the process dies.

    Uses `fcntl.flock` on POSIX and `msvcrt.locking` on Windows, so a crashed trainer never
    leaves a stale lock behind, unlike a plain "lock file exists" check.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._file = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+b")
        try:
            _lock_file(f)
        except OSError:
            holder = _read_holder(f)
            f.close()
            raise UserError(
                f"{self.path} is held by {holder}: another training uses this run folder; wait "
                "for it to finish, or pass --run-name to train in another folder") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}".encode())
        f.flush()
        self._file = f
        return self

    def __exit__(self, *exc) -> None:
        if self._file is not None:
            _unlock_file(self._file)
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
