"""Checkpoints that survive kills, and a run-folder lock that a crash cannot leave stuck.

Writing checkpoint N happens in three steps, each safe to interrupt:

1. TensorFlow writes the data and index into ``ckpt-N_temp/`` and moves them into place;
2. the state file ``checkpoint``, which lists the kept checkpoints, is replaced atomically;
3. only then are the checkpoints that fell off the list deleted, index first.

So a kill at any instant leaves every *listed* checkpoint complete. At worst it leaves an unlisted
half-written ``ckpt-N``, a stale ``_temp`` folder or a data file without its index, which `tidy`
removes. (TensorFlow's CheckpointManager lists a checkpoint again before deleting it, so a kill
while it deletes leaves a listed checkpoint half gone: hence our own rotation.)

On resume the listed checkpoints are tried newest first, then any unlisted ones. A checkpoint that
fails to restore (truncated, garbled) is reported and skipped in favour of the previous one, and
the trainer moves it into ``broken/``: nothing is deleted. A checkpoint that reads fine but does not
fit the model (another resolution, width or model) is not broken: that is a `UserError` naming
the differences.

Keras 3 models must be built (called once) before `restore`, or the restore silently corrupts
weights (see the tf-stack notes); `restore_latest` asserts that everything in the checkpoint found
a home and that every variable was restored.
"""

from __future__ import annotations

import errno
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf

from fastgan_tf.errors import UserError
from fastgan_tf.io import atomic_write_text

FORMAT_VERSION = 1
STATE_FILE = "checkpoint"
BROKEN_DIR = "broken"
_VERSION_KEY = "format_version/.ATTRIBUTES/VARIABLE_VALUE"
_INDEX_RE = re.compile(r"^ckpt-(\d+)\.index$")
_DATA_RE = re.compile(r"^ckpt-(\d+)\.data-\d+-of-\d+$")
_TEMP_RE = re.compile(r"^ckpt-\d+_temp")
# Keys a checkpoint may hold that say nothing about the model.
_BOOKKEEPING = ("_CHECKPOINTABLE_OBJECT_GRAPH", "save_counter/")
# errno texts worth showing as they are: they tell the user what to fix.
_OS_REASONS = tuple(os.strerror(getattr(errno, name)) for name in (
    "ENOSPC", "EDQUOT", "EROFS", "EACCES", "EPERM", "EIO", "ENOENT") if hasattr(errno, name))
# errnos that mean "this filesystem cannot lock", not "someone holds the lock"
_NO_LOCKING = {getattr(errno, name) for name in ("ENOLCK", "EOPNOTSUPP", "ENOSYS")
               if hasattr(errno, name)}


@dataclass
class Restored:
    """What `restore_latest` found: the checkpoint used and the ones it had to skip."""

    path: str | None
    skipped: list[tuple[str, str]]


def checkpoint_number(path: str | Path) -> int:
    """The N of ``.../ckpt-N``."""
    return int(Path(path).name.rsplit("-", 1)[1])


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


def verify(path: str) -> str | None:
    """Read every tensor of checkpoint `path`; None if all can be read, else the problem."""
    try:
        reader = tf.train.load_checkpoint(path)
        for key in reader.get_variable_to_shape_map():
            reader.get_tensor(key)
    except Exception as e:  # noqa: BLE001 - the reader raises DataLossError, OpError, ...
        return reason_of(e)
    return None


class Checkpoints:
    """Numbered checkpoints of the given trackables plus a format version, in `directory`."""

    def __init__(self, directory: Path, keep: int = 2, **trackables):
        self.directory = Path(directory)
        self.keep = max(int(keep), 1)
        self.format_version = tf.Variable(FORMAT_VERSION, dtype=tf.int64, trainable=False)
        self.checkpoint = tf.train.Checkpoint(format_version=self.format_version, **trackables)
        _ = self.checkpoint.save_counter  # created by every restore: exist and be saved, too
        self._expected: dict[str, list[int]] | None = None

    def prefix(self, number: int) -> str:
        return str(self.directory / f"ckpt-{int(number)}")

    # ----------------------------------------------------------------------------- state file
    @property
    def listed(self) -> list[str]:
        """The checkpoints the state file lists, oldest first (latest last)."""
        try:
            state = tf.train.get_checkpoint_state(str(self.directory))
        except Exception:  # noqa: BLE001 - a garbled state file: fall back to the folder scan
            state = None
        if state is None:
            return []
        paths = [self.prefix(checkpoint_number(p)) for p in state.all_model_checkpoint_paths
                 if _INDEX_RE.match(Path(p).name + ".index")]
        latest = state.model_checkpoint_path
        if latest and _INDEX_RE.match(Path(latest).name + ".index"):
            latest = self.prefix(checkpoint_number(latest))
            paths = [p for p in paths if p != latest] + [latest]
        return paths

    @property
    def latest(self) -> str | None:
        listed = self.listed
        return listed[-1] if listed else None

    def _write_state(self, paths: list[str]) -> None:
        """Replace the state file atomically; TensorFlow's readers understand this format."""
        names = [Path(p).name for p in paths]
        lines = [f'model_checkpoint_path: "{names[-1]}"'] if names else []
        lines += [f'all_model_checkpoint_paths: "{n}"' for n in names]
        atomic_write_text(self.directory / STATE_FILE, "".join(f"{line}\n" for line in lines))

    def _delete(self, path: str) -> None:
        """Delete one checkpoint, index first (a data file without index is never a candidate)."""
        name = Path(path).name
        try:
            Path(f"{path}.index").unlink(missing_ok=True)
            for data in self.directory.glob(f"{name}.data-*"):
                data.unlink(missing_ok=True)
        except OSError:
            pass  # no longer listed; `tidy` retries on the next run

    # ----------------------------------------------------------------------------- saving
    def save(self, number: int) -> str:
        """Write checkpoint `ckpt-<number>`; on failure the previous ones stay intact.

        A step that is already listed is not written again: it holds this state already, and
        rewriting it would put a good checkpoint at risk for nothing.
        """
        path = self.prefix(number)
        listed = self.listed
        if path in listed:
            return path
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self.checkpoint.write(path)
        except (OSError, tf.errors.OpError) as e:
            self._remove_partial(path)
            previous = Path(listed[-1]).name if listed else "none yet"
            raise UserError(
                f"could not write checkpoint {Path(path).name} to {self.directory}: {reason_of(e)}. "
                f"The previous checkpoint ({previous}) is intact; free disk space or fix "
                "permissions, then re-run the same command to resume from it") from None
        older = [p for p in listed if checkpoint_number(p) < number]
        kept = (older[-(self.keep - 1):] if self.keep > 1 else []) + [path]
        try:
            self._write_state(kept)
        except OSError as e:
            raise UserError(
                f"wrote {path} but could not update {self.directory / STATE_FILE}: "
                f"{reason_of(e)}. The earlier checkpoints are intact; free disk space or fix "
                "permissions, then re-run the same command to resume") from None
        oldest_kept = min(checkpoint_number(p) for p in kept)
        for old in self.candidates():  # listed or left unlisted by an interrupted rotation
            if checkpoint_number(old) < oldest_kept:
                self._delete(old)
        return path

    def _remove_partial(self, path: str) -> None:
        """After a failed write of an unlisted checkpoint: remove what it left, to free space."""
        import shutil

        name = Path(path).name
        shutil.rmtree(self.directory / f"{name}_temp", ignore_errors=True)
        self._delete(path)

    def tidy(self) -> list[str]:
        """Remove what interrupted writes leave behind (temp folders, data without an index).

        None of it can be restored: a checkpoint needs its index, and an index is only moved
        into place after its data. Returns the names removed.
        """
        import shutil

        if not self.directory.is_dir():
            return []
        indexed = {int(m.group(1)) for m in map(_INDEX_RE.match, os.listdir(self.directory)) if m}
        removed = []
        for entry in self.directory.iterdir():
            data = _DATA_RE.match(entry.name)
            try:
                if entry.is_dir() and _TEMP_RE.match(entry.name):
                    shutil.rmtree(entry)
                elif data and int(data.group(1)) not in indexed:
                    entry.unlink()
                else:
                    continue
            except OSError:
                continue
            removed.append(entry.name)
        return sorted(removed)

    # ----------------------------------------------------------------------------- restoring
    def candidates(self) -> list[str]:
        """Checkpoint prefixes to try: listed ones newest first, then unlisted ones newest first."""
        if not self.directory.is_dir():
            return []
        listed = list(reversed(self.listed))
        found = sorted((int(m.group(1)) for m in map(_INDEX_RE.match, os.listdir(self.directory))
                        if m), reverse=True)
        return listed + [p for p in map(self.prefix, found) if p not in listed]

    def restore_latest(self) -> Restored:
        """Restore the newest checkpoint that loads completely; skip (never delete) broken ones.

        Raises UserError for a checkpoint of another format or one that does not fit the model:
        falling back would not help, every checkpoint of a run has the same shape.
        """
        skipped: list[tuple[str, str]] = []
        for path in self.candidates():
            problem = self._restore(path)
            if problem is None:
                return Restored(path, skipped)
            skipped.append((path, problem))
        return Restored(None, skipped)

    def _restore(self, path: str) -> str | None:
        try:
            reader = tf.train.load_checkpoint(path)
            shapes = reader.get_variable_to_shape_map()
        except Exception as e:  # noqa: BLE001 - unreadable index: truncated or garbled
            return reason_of(e)
        self._check_version(reader, path)
        try:
            self.checkpoint.restore(path).assert_consumed()
        except Exception as e:  # noqa: BLE001 - the reader raises IndexError, OpError, ...
            misfits = self.misfits(shapes)
            if misfits:
                raise UserError(_misfit_message(path, misfits)) from None
            return reason_of(e)
        return None

    @staticmethod
    def _check_version(reader, path: str) -> None:
        try:
            version = int(reader.get_tensor(_VERSION_KEY)) if reader.has_tensor(_VERSION_KEY) \
                else None
        except Exception:  # noqa: BLE001 - unreadable data: let the restore report it
            return
        if version != FORMAT_VERSION:
            raise UserError(
                f"{path} has checkpoint format {version}, this version of fastgan-tf reads format "
                f"{FORMAT_VERSION}; start a new run with --fresh (the old run is kept) or use the "
                "fastgan-tf version that wrote it")

    def expected_shapes(self) -> dict[str, list[int]]:
        """Checkpoint key -> shape of every variable the trackables would save."""
        if self._expected is None:
            from tensorflow.python.checkpoint import graph_view, util

            _, paths, *_ = util.objects_ids_and_slot_variables_and_paths(
                graph_view.ObjectGraphView(self.checkpoint))
            self._expected = {
                "/".join(ref.name for ref in path) + "/.ATTRIBUTES/VARIABLE_VALUE":
                    list(obj.shape)
                for obj, path in paths.items() if _is_variable(obj)}
        return self._expected

    def misfits(self, shapes: dict[str, list[int]]) -> list[str]:
        """How a checkpoint's variables (key -> shape) differ from ours, model weights first."""
        try:
            expected = self.expected_shapes()
        except Exception:  # noqa: BLE001 - TF internals moved: no diagnosis, plain fallback
            return []
        found = {k: list(v) for k, v in shapes.items() if not k.startswith(_BOOKKEEPING)}
        problems = []
        for key, shape in expected.items():
            if key.startswith(_BOOKKEEPING):
                continue
            if key not in found:
                problems.append((key, f"{_short(key)} is missing from the checkpoint"))
            elif found[key] != shape:
                problems.append((key, f"{_short(key)} has shape {tuple(found[key])} in the "
                                      f"checkpoint but {tuple(shape)} here"))
        for key in found:
            if key not in expected:
                problems.append((key, f"the checkpoint has {_short(key)}, which this model lacks"))
        problems.sort(key=lambda p: (p[0].startswith(("g_opt", "d_opt")), p[0]))
        return [text for _, text in problems]

    # ----------------------------------------------------------------------------- broken ones
    def set_aside(self, paths: list[str]) -> Path:
        """Move broken checkpoints into `broken/` (kept for inspection) and unlist them."""
        target = self.directory / BROKEN_DIR
        target.mkdir(exist_ok=True)
        for path in paths:
            name = Path(path).name
            # Data before index: a kill in between leaves an index without data (tried, found
            # broken and set aside again), never data without an index, which `tidy` deletes.
            for f in [*self.directory.glob(f"{name}.data-*"), Path(f"{path}.index")]:
                if f.exists():
                    destination = target / f.name
                    n = 1
                    while destination.exists():
                        destination = target / f"{f.name}.{n}"
                        n += 1
                    f.rename(destination)
        listed = self.listed
        remaining = [p for p in listed if p not in paths]
        if remaining and remaining != listed:
            self._write_state(remaining)
        elif not remaining:
            (self.directory / STATE_FILE).unlink(missing_ok=True)
        return target


def _is_variable(obj) -> bool:
    """tf.Variable or Keras 3 Variable (which is not a tf.Variable subclass)."""
    return all(hasattr(obj, name) for name in ("shape", "dtype", "assign"))


def _short(key: str) -> str:
    return key.replace("/.ATTRIBUTES/VARIABLE_VALUE", "")


def _misfit_message(path: str, misfits: list[str]) -> str:
    shown = "; ".join(misfits[:2])
    more = f" (and {len(misfits) - 2} more)" if len(misfits) > 2 else ""
    return (f"{path} does not fit the model these settings build: {shown}{more}. It was written "
            "with another resolution, width (ngf/ndf), latent size or model; resume with the "
            "settings the run was trained with (see its config.yaml), or start a fresh run with "
            "--fresh (the old run is kept) or --run-name NEW")


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
                import sys

                print(f"warning: cannot lock {self.path} on this filesystem ({reason_of(e)}); "
                      "make sure no other training uses this run folder", file=sys.stderr)
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
