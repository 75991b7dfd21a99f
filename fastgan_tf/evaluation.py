"""Scoring a trained run as `evaluate.py --fid --kid` does, with a record in its folder.

Each score is appended to `<run>/evaluations.jsonl`, so a run keeps the history of its
evaluations next to its checkpoints.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from fastgan_tf import metrics
from fastgan_tf.metrics.scoring import real_feature_stats, score_generator
from fastgan_tf.paths import cache_dir
from fastgan_tf.progress import progress
from fastgan_tf.training.dataset import load_training_images

log = logging.getLogger(__name__)


def score_run(run_dir: Path, loaded, names: tuple[str, ...], provenance: dict, *,
              backbone: str | None = None, weights: str | None = None, num_samples: int = 5000,
              seed: int = 0, batch_size: int = 16, kid_subsets: int = 100) -> dict:
    """The metrics `names` of a loaded run's EMA generator against its whole training set.

    `backbone` defaults to the one the run trained with, and so do its weights (a run trained
    offline with --inception-weights is scored offline too). Returns the record it appended,
    which starts with `provenance` (which checkpoint was scored).
    """
    cfg = loaded.config
    name = backbone or cfg.fid_backbone
    if weights is None and name == cfg.fid_backbone:
        weights = cfg.inception_weights
    model = metrics.load_backbone(name, weights=weights or "imagenet", batch_size=batch_size)
    data = load_training_images(cfg)
    cached = metrics.real_stats_path(cache_dir() / "fid", data.fingerprint, cfg.resolution,
                                     model).exists()
    if not cached:
        log.info(f"Computing {name} statistics of {len(data.images)} training images (cached for "
                 "next time)")
    real = real_feature_stats(data.images, data.fingerprint, model, batch_size)
    start = time.monotonic()
    with progress(total=num_samples, desc="scoring", unit="img") as bar:
        result = score_generator(loaded.generator, model, real, num_samples, names, seed=seed,
                                 batch_size=batch_size, kid_subsets=kid_subsets,
                                 progress=bar.update)
    record = {**provenance, **result, "seed": seed, "dataset": cfg.dataset, "real_stats_cached": cached,
              "seconds": round(time.monotonic() - start, 1),
              "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    with open(Path(run_dir) / "evaluations.jsonl", "a", encoding="utf-8", newline="\n") as f:
        f.write(json.dumps(record) + "\n")
    return record
