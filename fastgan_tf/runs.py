"""Finding runs and loading their EMA generator, for evaluation, export and the best-model copy.

A run's generator can be loaded from:
- ``latest``: the newest restorable training checkpoint in ``<run>/ckpt/`` (full training state;
  only the EMA generator is read from it);
- ``best``: ``<run>/best/``, the EMA generator with the lowest FID so far (see training/fid.py);
- a path: a checkpoint prefix such as ``<run>/ckpt/ckpt-1200`` or a ``best`` folder.

A run may have moved since it was trained (a CUDA desktop's WSL2 and a Windows laptop):
`usable_config` gives its config with paths that work on this machine.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf

from fastgan_tf import config as config_lib
from fastgan_tf.checkpoints import Checkpoints
from fastgan_tf.config import TrainConfig
from fastgan_tf.data import registry as datasets
from fastgan_tf.data.resolve import moved_path, path_candidates
from fastgan_tf.errors import UserError
from fastgan_tf.training.dataset import DEMO
from fastgan_tf.training.state import EMA_KEY

# The paths a run's config.yaml records, and the evaluate.py option that replaces each (if any).
PATH_KEYS = {"dataset": "--dataset", "data_dir": None, "inception_weights": "--inception-weights",
             "vgg_weights": None}
NO_BEST = ("{run} has no best model yet: it is written when FID is tracked during training "
           "(--fid-every); use --checkpoint latest")


@dataclass
class LoadedGenerator:
    generator: object  # fastgan_tf.models.Generator with the EMA weights
    config: TrainConfig
    checkpoint: str  # the prefix the weights came from
    epoch: int | None
    step: int | None


def find_runs(out: Path) -> list[Path]:
    """Run folders (those with a config.yaml) under `out`, most recently active first."""
    out = Path(out)
    runs = [p for p in out.iterdir() if (p / "config.yaml").is_file()] if out.is_dir() else []
    return sorted(runs, key=_last_activity, reverse=True)


def _last_activity(run: Path) -> float:
    candidates = [run / "config.yaml", run / "ckpt" / "checkpoint", run / "metrics.jsonl"]
    return max(p.stat().st_mtime for p in candidates if p.exists())


def latest_run(out: Path) -> Path:
    runs = find_runs(out)
    if not runs:
        raise UserError(f"no training runs found in {out}; train one with "
                        "`python train.py --dataset ...` or pass --run DIR")
    return runs[0]


def load_config(run_dir: Path) -> TrainConfig:
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise UserError(f"{run_dir} is not a training run (no config.yaml); pass --run with a "
                        "folder under checkpoints/")
    return config_lib.load_saved(path)


def usable_config(cfg: TrainConfig, *, dataset: str | None = None,
                  needed: Iterable[str] = ()) -> TrainConfig:
    """The run's config with paths that work on this machine.

    A run trained in WSL2 and evaluated on Windows (or back) records paths of the other side:
    each recorded path that does not exist here is replaced by its other-side form when that
    exists (`data.resolve.moved_path`). `dataset` replaces the recorded dataset (a named dataset
    or 'demo' is not a path). The keys in `needed` (of PATH_KEYS) must exist afterwards: a
    one-line UserError says what was tried and which option to pass.
    """
    values = {"dataset": dataset} if dataset else {}
    for key in PATH_KEYS:
        value = values.get(key, getattr(cfg, key))
        if not value or (key == "dataset" and _is_dataset_name(value)):
            continue
        found = moved_path(value)
        if found is None and key in needed:
            raise _not_here(key, value, given=key in values)
        values[key] = found or value
    return dataclasses.replace(cfg, **values)


def _is_dataset_name(value: str) -> bool:
    return value == DEMO or datasets.get(value) is not None


def _not_here(key: str, value: str, given: bool) -> UserError:
    option = PATH_KEYS[key]
    what = f"{option} {value}" if given else f"the run's {key} {value}"
    fix = "" if option is None else "; check the path" if given else f"; pass {option} PATH"
    return UserError(f"{what} is not on this machine: tried "
                     f"{' and '.join(path_candidates(value))}{fix}")


def checkpoint_prefix(run_dir: Path, which: str = "latest") -> str:
    """Resolve 'latest', 'best' or a path to a checkpoint prefix that exists."""
    run_dir = Path(run_dir)
    if which == "latest":
        candidates = Checkpoints(run_dir / "ckpt").candidates()
        if not candidates:
            raise UserError(f"{run_dir} has no checkpoint yet; train longer (checkpoints are "
                            "written every --checkpoint-every epochs and on Ctrl-C)")
        return candidates[0]
    path = run_dir / "best" if which == "best" else Path(which)
    if path.is_dir():
        prefix = _prefix_in_folder(path)
        if prefix is None:
            raise UserError(NO_BEST.format(run=run_dir) if which == "best"
                            else f"{path} holds no checkpoint")
        return prefix
    if which == "best":
        raise UserError(NO_BEST.format(run=run_dir))
    if not Path(f"{path}.index").is_file():
        raise UserError(f"{path} is not a checkpoint: expected latest, best, a folder or a prefix "
                        "such as checkpoints/RUN/ckpt/ckpt-1200")
    return str(path)


def _prefix_in_folder(folder: Path) -> str | None:
    """The checkpoint of a folder: the one `best.json` records (in a best/ folder), else the one
    TensorFlow's state file names.

    best/'s state file is rewritten at every new best by TensorFlow's rename, which on Windows
    deletes the old file before moving the new one in: a kill in between leaves no state file.
    best.json, written atomically once the checkpoint is complete, still names one that exists.
    """
    for find in (_recorded_best, lambda f: tf.train.latest_checkpoint(str(f))):
        prefix = find(folder)
        if prefix and Path(f"{prefix}.index").is_file():
            return prefix
    return None


def _recorded_best(folder: Path) -> str | None:
    """The prefix `folder/best.json` names (a file name inside `folder`), or None."""
    try:
        record = json.loads((folder / "best.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):  # none, or unreadable: the state file may still tell
        return None
    name = record.get("checkpoint") if isinstance(record, dict) else None
    if not isinstance(name, str) or Path(name).name != name:  # a bare name, never a path
        return None
    return str(folder / name)


def load_generator(run_dir: Path, which: str = "latest") -> LoadedGenerator:
    """Build the run's generator and restore its EMA weights from the chosen checkpoint."""
    from fastgan_tf.training import registry

    cfg = load_config(run_dir)
    prefix = checkpoint_prefix(run_dir, which)
    # built before restoring (the Keras 3 rule)
    generator = registry.get(cfg.model).build_generator(cfg, name=EMA_KEY)
    status = tf.train.Checkpoint(**{EMA_KEY: generator}).restore(prefix).expect_partial()
    try:
        status.assert_existing_objects_matched()
    except AssertionError as e:
        raise UserError(f"{prefix} does not match the run's generator ({e}); was the run folder's "
                        "config.yaml edited?") from None
    reader = tf.train.load_checkpoint(prefix)
    return LoadedGenerator(generator, cfg, prefix, _read_int(reader, "epoch"),
                           _read_int(reader, "step"))


def _read_int(reader, name: str) -> int | None:
    key = f"{name}/.ATTRIBUTES/VARIABLE_VALUE"
    return int(reader.get_tensor(key)) if reader.has_tensor(key) else None
