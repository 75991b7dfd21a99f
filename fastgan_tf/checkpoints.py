"""Checkpoints that survive kills: written, rotated, restored and set aside safely.

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

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf

from fastgan_tf import oscompat
from fastgan_tf.checkpoint_keys import misfits
from fastgan_tf.errors import UserError, reason_of
from fastgan_tf.io import atomic_write_text

FORMAT_VERSION = 1
STATE_FILE = "checkpoint"
BROKEN_DIR = "broken"
_VERSION_KEY = "format_version/.ATTRIBUTES/VARIABLE_VALUE"
_INDEX_RE = re.compile(r"^ckpt-(\d+)\.index$")
_DATA_RE = re.compile(r"^ckpt-(\d+)\.data-\d+-of-\d+$")
_TEMP_RE = re.compile(r"^ckpt-\d+_temp")


@dataclass
class Restored:
    """What `restore_latest` found: the checkpoint used and the ones it had to skip."""

    path: str | None
    skipped: list[tuple[str, str]]


def checkpoint_number(path: str | Path) -> int:
    """The N of ``.../ckpt-N``."""
    return int(Path(path).name.rsplit("-", 1)[1])


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

    def __init__(self, directory: Path, keep: int = 2, adapt=None, **trackables):
        """`adapt(trackables, reader)` gives the objects to restore a checkpoint into, when a
        checkpoint may have been saved with another layout (see training/precision.py)."""
        self.directory = Path(directory)
        self.keep = max(int(keep), 1)
        self.format_version = tf.Variable(FORMAT_VERSION, dtype=tf.int64, trainable=False)
        self.trackables, self.adapt = trackables, adapt
        self.checkpoint = tf.train.Checkpoint(format_version=self.format_version, **trackables)
        _ = self.checkpoint.save_counter  # created by every restore: exist and be saved, too

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
            oscompat.retry_while_busy(self._write, path)
        except (OSError, tf.errors.OpError) as e:
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

    def _write(self, path: str) -> None:
        """One attempt at writing `path`; a failed one removes what it left, so that a retry (a
        file held for a moment on Windows) starts clean."""
        try:
            self.checkpoint.write(path)
        except (OSError, tf.errors.OpError):
            self._remove_partial(path)
            raise

    def _remove_partial(self, path: str) -> None:
        """After a failed write of an unlisted checkpoint: remove what it left, to free space."""
        name = Path(path).name
        shutil.rmtree(self.directory / f"{name}_temp", ignore_errors=True)
        self._delete(path)

    def tidy(self) -> list[str]:
        """Remove what interrupted writes leave behind (temp folders, data without an index).

        None of it can be restored: a checkpoint needs its index, and an index is only moved
        into place after its data. Returns the names removed.
        """
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
        checkpoint = self._checkpoint_for(reader)
        try:
            checkpoint.restore(path).assert_consumed()
        except Exception as e:  # noqa: BLE001 - the reader raises IndexError, OpError, ...
            problems = misfits(checkpoint, shapes)
            if problems:
                raise UserError(_misfit_message(path, problems)) from None
            return reason_of(e)
        return None

    def _checkpoint_for(self, reader) -> tf.train.Checkpoint:
        """The checkpoint object that fits the layout of the checkpoint `reader` reads."""
        objects = self.adapt(self.trackables, reader) if self.adapt else self.trackables
        if all(objects.get(k) is v for k, v in self.trackables.items()):
            return self.checkpoint
        return tf.train.Checkpoint(format_version=self.format_version, **objects)

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
                    oscompat.retry_while_busy(f.rename, destination)
        listed = self.listed
        remaining = [p for p in listed if p not in paths]
        if remaining and remaining != listed:
            self._write_state(remaining)
        elif not remaining:
            (self.directory / STATE_FILE).unlink(missing_ok=True)
        return target


def _misfit_message(path: str, problems: list[str]) -> str:
    shown = "; ".join(problems[:2])
    more = f" (and {len(problems) - 2} more)" if len(problems) > 2 else ""
    return (f"{path} does not fit the model these settings build: {shown}{more}. It was written "
            "with another resolution, width (ngf/ndf), latent size or model; resume with the "
            "settings the run was trained with (see its config.yaml), or start a fresh run with "
            "--fresh (the old run is kept) or --run-name NEW")
