"""Fault injection for tests/test_reliability.py and benchmarks/fault_injection.py (test support,
not shipped with the package).

Production code has no fault hooks: this module monkeypatches the real code, in-process
(``install(specs, patch=monkeypatch.setattr)``) or around the real command line::

    python tests/faults.py FAULT [FAULT ...] -- [train.py arguments]

Faults (N counts calls in this process, from 1):

``kill:WHERE:N[:MS]``
    SIGKILL this process at the N-th WHERE (after MS more milliseconds, for ``save-write``):
    ``step`` inside a training step (weights updated, losses not yet returned); ``save-write``
    while TensorFlow writes checkpoint files (its ``ckpt-N_temp`` folder exists); ``save-state``
    checkpoint files written, state file not updated; ``save-sweep`` state file updated, the old
    checkpoint not yet deleted; ``samples`` half-way through a sample PNG; ``metrics`` half-way
    through a metrics.jsonl line; ``fid`` best-FID checkpoint written, best.json not.
``fail:WHAT:N[+]:ERRNO``
    Raise ENOSPC or EACCES at the N-th write of WHAT (``N+``: that one and all later ones):
    ``checkpoint`` (after leaving a partial temp folder, as a full disk does), ``samples``,
    ``metrics``, ``config`` (config.yaml), ``state`` (the checkpoint state file).
``nan:batch:E:B``
    Training on batch B of epoch E (both from 0) yields NaN losses and NaN weights, every time.
``nan:from:K``
    Every step from global step K on yields NaN losses and NaN weights.
``nan:weights:K``
    Once per process, step K leaves an Inf in the weights but finite losses (caught before the
    next write rather than by the loss check).
``fake-fid``
    FID with a fixed random projection of pooled pixels instead of Inception (no download).
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import threading
import time
from pathlib import Path


def logged_steps(run_dir: Path) -> list[int]:
    """The steps a run has logged so far in its metrics.jsonl (how a test watches a run)."""
    from fastgan_tf.training.logs import read_records

    return [r["step"] for r in read_records(Path(run_dir) / "metrics.jsonl") if "step" in r]


def kill_self() -> None:
    """Die like a power cut would: no cleanup, no flushing, no exception handlers."""
    if hasattr(signal, "SIGKILL"):
        os.kill(os.getpid(), signal.SIGKILL)
    os._exit(137)  # Windows


class _Counter:
    """Which calls a fault fires on: exactly N, or N and every later one (`N+`)."""

    def __init__(self, spec: str):
        self.first = int(spec.rstrip("+"))
        self.onwards = spec.endswith("+")
        self.calls = 0

    def hit(self) -> bool:
        self.calls += 1
        return self.calls == self.first or (self.onwards and self.calls > self.first)


def _os_error(code_name: str, filename) -> OSError:
    code = getattr(errno, code_name)
    return OSError(code, os.strerror(code), str(filename))


# ----------------------------------------------------------------------------- kills
def _kill_in_step(patch, n):
    from fastgan_tf.training.loop import Trainer

    counter, original = _Counter(n), Trainer._step_losses

    def step(self, real):
        stats = original(self, real)
        if counter.hit():
            kill_self()
        return stats

    patch(Trainer, "_step_losses", step)


def _kill_in_save_write(patch, n, delay_ms="0"):
    from fastgan_tf.checkpoints import Checkpoints

    counter, original = _Counter(n), Checkpoints.save

    def save(self, number):
        if counter.hit():
            _watch_for_temp(self.directory, float(delay_ms) / 1000)
        return original(self, number)

    patch(Checkpoints, "save", save)


def _watch_for_temp(directory: Path, delay: float) -> None:
    """A thread that kills the process once TensorFlow's temp folder for a checkpoint appears.

    TensorFlow releases the GIL while it writes, so the thread runs during the write.
    """
    def watch():
        while True:
            try:
                names = os.listdir(directory)
            except OSError:
                names = []
            if any(name.endswith("_temp") for name in names):
                if delay:
                    time.sleep(delay)
                kill_self()
            time.sleep(0.0005)

    threading.Thread(target=watch, daemon=True).start()


def _kill_before(target, name, n, patch):
    counter, original = _Counter(n), getattr(target, name)

    def wrapper(*args, **kwargs):
        if counter.hit():
            kill_self()
        return original(*args, **kwargs)

    patch(target, name, wrapper)


def _kill_in_samples(patch, n):
    import fastgan_tf.visualize as visualize

    counter, original = _Counter(n), visualize.atomic_write_bytes

    def write(path, data):
        if counter.hit():  # what atomic_write_bytes leaves when killed mid-way: a partial temp file
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path.parent / f".{path.name}.killed.tmp", "wb") as f:
                f.write(data[: len(data) // 2])
            kill_self()
        return original(path, data)

    patch(visualize, "atomic_write_bytes", write)


def _kill_in_metrics(patch, n):
    import json

    from fastgan_tf.training.logs import RunLog

    counter, original = _Counter(n), RunLog.write

    def write(self, record, prefix="train"):
        if counter.hit():
            line = json.dumps({k: v for k, v in record.items() if not hasattr(v, "numpy")})
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line[: len(line) // 2])
            kill_self()
        return original(self, record, prefix)

    patch(RunLog, "write", write)


def _kill_in_fid(patch, n):
    import fastgan_tf.training.fid as fid

    _kill_before(fid, "atomic_write_text", n, patch)  # only best.json is written that way


# ----------------------------------------------------------------------------- failed writes
def _fail_checkpoint(patch, n, code):
    import tensorflow as tf

    counter, original = _Counter(n), tf.train.Checkpoint.write

    def write(self, file_prefix, options=None):
        if counter.hit():
            temp = Path(f"{file_prefix}_temp")
            temp.mkdir(parents=True, exist_ok=True)
            (temp / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"\0" * 4096)
            error = (tf.errors.ResourceExhaustedError if code == "ENOSPC"
                     else tf.errors.PermissionDeniedError)
            raise error(None, None, f"{temp}/part-00000-of-00001.data-00000-of-00001.tempstate1; "
                                    f"{os.strerror(getattr(errno, code))} [Op:SaveV2]")
        return original(self, file_prefix, options=options)

    patch(tf.train.Checkpoint, "write", write)


def _fail_samples(patch, n, code):
    import fastgan_tf.visualize as visualize

    counter, original = _Counter(n), visualize.atomic_write_bytes

    def write(path, data):
        if counter.hit():
            raise _os_error(code, path)
        return original(path, data)

    patch(visualize, "atomic_write_bytes", write)


def _fail_metrics(patch, n, code):
    import builtins

    import fastgan_tf.training.logs as logs

    counter = _Counter(n)

    def failing_open(file, mode="r", *args, **kwargs):
        if "a" in mode and Path(file).name == "metrics.jsonl" and counter.hit():
            raise _os_error(code, file)
        return builtins.open(file, mode, *args, **kwargs)

    patch(logs, "open", failing_open)


def _fail_named_file(patch, n, code, name):
    import fastgan_tf.io as io

    counter, original = _Counter(n), io.atomic_write_bytes

    def write(path, data):
        if Path(path).name == name and counter.hit():
            raise _os_error(code, path)
        return original(path, data)

    patch(io, "atomic_write_bytes", write)


# ----------------------------------------------------------------------------- NaN
def _nan(patch, kind, *where):
    import tensorflow as tf

    from fastgan_tf.training.loop import Trainer

    original = Trainer._step_losses

    fired = []

    def poisoned(gan) -> bool:
        if kind == "batch":
            epoch, batch = map(int, where)
            return int(gan.epoch.numpy()) == epoch and int(gan.batch_in_epoch.numpy()) == batch
        if kind == "weights":
            return int(gan.step.numpy()) + 1 == int(where[0]) and not fired
        return int(gan.step.numpy()) + 1 >= int(where[0])

    def step(self, real):
        bad = poisoned(self.gan)
        stats = original(self, real)
        if bad:  # what an exploding step leaves: NaN losses and NaN (or Inf) weights
            fired.append(True)
            weight = self.gan.generator.trainable_variables[0]
            weight.assign(tf.fill(weight.shape, float("inf" if kind == "weights" else "nan")))
            if kind != "weights":
                stats = {k: float("nan") for k in stats}
        return stats

    patch(Trainer, "_step_losses", step)


# ----------------------------------------------------------------------------- FID
def _fake_fid(patch):
    import fastgan_tf.metrics as metrics
    from support import PixelBackbone

    patch(metrics, "load_backbone", lambda name, weights="imagenet", **kw: PixelBackbone())


# ----------------------------------------------------------------------------- entry points
_KILLS = {
    "step": _kill_in_step,
    "save-write": _kill_in_save_write,
    "samples": _kill_in_samples,
    "metrics": _kill_in_metrics,
    "fid": _kill_in_fid,
}
_FAILS = {
    "checkpoint": _fail_checkpoint,
    "samples": _fail_samples,
    "metrics": _fail_metrics,
    "config": lambda patch, n, code: _fail_named_file(patch, n, code, "config.yaml"),
    "state": lambda patch, n, code: _fail_named_file(patch, n, code, "checkpoint"),
}


def install(specs: list[str], patch=setattr) -> None:
    """Install the faults `specs` (see the module docstring) with `patch(obj, name, value)`."""
    from fastgan_tf.checkpoints import Checkpoints

    for spec in specs:
        kind, *args = spec.split(":")
        if kind == "kill" and args[0] == "save-state":
            _kill_before(Checkpoints, "_write_state", args[1], patch)
        elif kind == "kill" and args[0] == "save-sweep":
            _kill_before(Checkpoints, "_delete", args[1], patch)
        elif kind == "kill" and args[0] in _KILLS:
            _KILLS[args[0]](patch, *args[1:])
        elif kind == "fail" and args[0] in _FAILS and args[2] in ("ENOSPC", "EACCES"):
            _FAILS[args[0]](patch, args[1], args[2])
        elif kind == "nan" and args[0] in ("batch", "from", "weights"):
            _nan(patch, *args)
        elif kind == "fake-fid":
            _fake_fid(patch)
        else:
            raise ValueError(f"unknown fault {spec!r}; see {__name__}'s docstring")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        print("usage: python tests/faults.py FAULT [FAULT ...] -- TRAIN ARGS",
              file=sys.stderr)
        return 2
    split = argv.index("--")
    if "--deterministic" in argv[split + 1:]:  # as train.py does, before TensorFlow is imported
        from fastgan_tf.cli.common import deterministic_tensorflow

        deterministic_tensorflow()
    from fastgan_tf.cli.common import import_tensorflow

    import_tensorflow()  # quietly, as train.py does, before the faults import the trainer
    install(argv[:split])
    from fastgan_tf.cli.train import main as train_main

    sys.argv = [sys.argv[0], *argv[split + 1:]]
    return train_main()  # from sys.argv, as train.py does: the same behaviour on the way out


if __name__ == "__main__":
    sys.exit(main())
