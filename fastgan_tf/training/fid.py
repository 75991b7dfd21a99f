"""FID tracking during training, and the best generator so far in `<run>/best/`.

Every `fid_every` epochs the EMA generator is scored (FID and KID, `fid_samples` samples against
the whole training set). Scoring reads the generator without changing any training state, so it
does not disturb bit-exact resume. When the backbone's weights cannot be had (offline), training
warns once and goes on without FID: a metric never kills a run.

`best/` holds a checkpoint with only the EMA generator (key `generator_ema`, like the training
checkpoints) and `best.json` with its epoch, step and scores; it is written checkpoint first,
record second, both crash-safe, and read back on resume so best-so-far survives restarts.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import tensorflow as tf

from fastgan_tf import metrics
from fastgan_tf.errors import UserError
from fastgan_tf.io import atomic_write_text
from fastgan_tf.metrics.scoring import real_feature_stats, score_generator
from fastgan_tf.training.logs import read_records
from fastgan_tf.training.state import EMA_KEY

log = logging.getLogger(__name__)

KID_SUBSETS = 20  # KID subsets during training; evaluate.py uses 100
TRACKED = ("fid", "kid", "diversity")  # diversity: the health signals on Inception features


BEST_KEYS = {"fid": "fid", "kid": "kid_mean"}  # --best-by -> the record's key


class FidTracker:
    """Scores the EMA generator at chosen moments and keeps the best one by `best_by`."""

    def __init__(self, run_dir: Path, gan, images, fingerprint: str, num_samples: int,
                 backbone_name: str = "keras", weights: str | None = None,
                 load_backbone=None, best_by: str = "fid"):
        self.run_dir = Path(run_dir)
        self.gan = gan
        self.images = images
        self.fingerprint = fingerprint
        self.num_samples = num_samples
        self.backbone_name = backbone_name
        self.weights = weights or "imagenet"
        self._load_backbone = load_backbone or metrics.load_backbone
        self._backbone = None
        self._real = None
        self.disabled = False
        self.best = read_best(self.run_dir)
        self.key = BEST_KEYS[best_by]
        self.history = [r[self.key] for r in read_records(self.run_dir / "metrics.jsonl")
                        if r.get("kind") == "fid" and self.key in r]

    def _prepare(self) -> bool:
        """Load the backbone and real statistics once; on failure warn once and disable FID."""
        if self._backbone is None and not self.disabled:
            try:
                self._backbone = self._load_backbone(self.backbone_name, weights=self.weights)
                self._real = real_feature_stats(self.images, self.fingerprint, self._backbone)
            except UserError as e:
                self.disabled = True
                log.warning(f"FID disabled for this run: {e}")
        return not self.disabled

    def evaluate(self, epoch: int, step: int) -> dict | None:
        """Score the EMA generator; returns the record logged (or None when FID is off)."""
        if not self._prepare():
            return None
        result = score_generator(self.gan.generator_ema, self._backbone, self._real,
                                 self.num_samples, TRACKED, kid_subsets=KID_SUBSETS)
        record = dict(kind="fid", epoch=epoch, step=step, **result)
        self.history.append(record[self.key])
        if self.best is None or record[self.key] < self.best.get(self.key, float("inf")):
            self._save_best(dict(record, best_by=self.key))
            record["best"] = True
        record.update(fid_evals_since_best=self.evals_since_best(),
                      best_fid=self.best.get("fid", float("nan")))
        return record

    def evals_since_best(self) -> int:
        """FID evaluations of this run since its best one (0: the last one is the best)."""
        return len(self.history) - 1 - self.history.index(min(self.history)) if self.history else 0

    def _save_best(self, record: dict) -> None:
        best_dir = self.run_dir / "best"
        checkpoint = tf.train.Checkpoint(**{EMA_KEY: self.gan.generator_ema},
                                         epoch=self.gan.epoch, step=self.gan.step)
        manager = tf.train.CheckpointManager(checkpoint, str(best_dir), max_to_keep=1,
                                             checkpoint_name="best")
        prefix = manager.save(checkpoint_number=int(record["step"]))
        self.best = dict(record, checkpoint=Path(prefix).name)
        atomic_write_text(best_dir / "best.json", json.dumps(self.best, indent=2))


def read_best(run_dir: Path) -> dict | None:
    """The best-model record ({epoch, step, fid, backbone, ...}) or None."""
    path = Path(run_dir) / "best" / "best.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
