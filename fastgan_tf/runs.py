"""Finding runs and loading their EMA generator, for evaluation, export and the best-model copy.

A run's generator can be loaded from:
- ``latest``: the newest restorable training checkpoint in ``<run>/ckpt/`` (full training state;
  only the EMA generator is read from it);
- ``best``: ``<run>/best/``, the EMA generator with the lowest FID so far (see training/fid.py);
- a path: a checkpoint prefix such as ``<run>/ckpt/ckpt-1200`` or a ``best`` folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf

from fastgan_tf import config as config_lib
from fastgan_tf.checkpoints import Checkpoints
from fastgan_tf.config import TrainConfig
from fastgan_tf.errors import UserError
from fastgan_tf.training.state import EMA_KEY



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
    if which == "best" and not path.is_dir():
        raise UserError(f"{run_dir} has no best model yet: it is written when FID is tracked "
                        "during training (--fid-every); use --checkpoint latest")
    if path.is_dir():
        prefix = tf.train.latest_checkpoint(str(path))
        if prefix is None and which == "best":
            raise UserError(f"{run_dir} has no best model yet: it is written when FID is tracked "
                            "during training (--fid-every); use --checkpoint latest")
        if prefix is None:
            raise UserError(f"{path} holds no checkpoint")
        return prefix
    if not Path(f"{path}.index").is_file():
        raise UserError(f"{path} is not a checkpoint: expected latest, best, a folder or a prefix "
                        "such as checkpoints/RUN/ckpt/ckpt-1200")
    return str(path)


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
