"""Is the run healthy? Signals that say while training runs whether D overfits, the samples
collapse or copy the training images, and whether FID still improves; and one warning per
condition, saying what it means and what to try.

Signals (recorded in metrics.jsonl and TensorBoard, shown on the progress line):

* ``r_t`` = E[sign(D(real))] over an epoch's real logits, StyleGAN2-ADA's overfitting heuristic:
  0 when D cannot tell, 1 when it calls every real image real with confidence. With
  ``d_acc_real`` (share of real logits > 0) and ``d_acc_fake`` (share of fake logits < 0).
* ``diversity``: mean pairwise distance between samples, relative to the same measure on the
  training images (1: as varied as the data; near 0: mode collapse). Each epoch on the EMA
  generator's fixed-noise samples in pixel space (images averaged down to 16x16); at each FID
  evaluation on the Inception features of its samples.
* ``memorisation``: share of samples whose nearest training image is closer than half the median
  distance between a training image and its nearest other training image (a copy sits at 0).
* ``fid_evals_since_best``: FID evaluations since the best one (``--early-stop K`` ends training
  after K of them).

Thresholds are documented in the README ("Is my run healthy?") and in `CONDITIONS`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fastgan_tf.io import atomic_write_text

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- the warnings
@dataclass(frozen=True)
class Condition:
    name: str
    applies: Callable[[dict], bool]
    message: str  # formatted with the record's values


CONDITIONS = (
    Condition(
        "d_overfits", lambda r: r.get("r_t", 0.0) > 0.9 and r.get("d_acc_fake", 0.0) > 0.9,
        "the discriminator is overfitting (r_t {r_t:.2f}: it calls {d_acc_real:.0%} of real images "
        "real and {d_acc_fake:.0%} of fakes fake): add augmentation (--augment "
        "color,translation,cutout), train on more images, or stop and keep best/"),
    Condition(
        "collapse", lambda r: r.get("diversity", 1.0) < 0.2,
        "samples are collapsing (diversity {diversity:.2f} of the training images'): lower --lr "
        "(e.g. half), or stop and keep best/ from before it started"),
    Condition(
        "memorisation", lambda r: r.get("memorisation", 0.0) > 0.5,
        "the generator copies training images ({memorisation:.0%} of samples sit next to one): "
        "stop and keep best/, or add images or augmentation"),
    Condition(
        "fid_stalls", lambda r: r.get("fid_evals_since_best", 0) >= 3,
        "FID has not improved for {fid_evals_since_best} evaluations (best {best_fid:.2f}): "
        "best/ keeps the best generator; consider stopping (--early-stop K ends training "
        "after K such evaluations)"),
)


class HealthMonitor:
    """Warns once per condition and run; what was warned is kept in `<run>/health.json`."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / "health.json"
        try:
            self.warned = set(json.loads(self.path.read_text(encoding="utf-8"))["warned"])
        except (OSError, ValueError, KeyError, TypeError):
            self.warned = set()

    def check(self, record: dict) -> list[str]:
        """Warn about the conditions `record` shows that were not warned about before."""
        new = [c for c in CONDITIONS if c.name not in self.warned and c.applies(record)]
        for condition in new:
            self.warned.add(condition.name)
            log.warning(condition.message.format_map(_Defaults(record)))
        if new:
            atomic_write_text(self.path, json.dumps({"warned": sorted(self.warned)}) + "\n")
        return [c.name for c in new]


class _Defaults(dict):
    """A record for str.format_map in which missing numbers read as NaN, not KeyError."""

    def __missing__(self, key):
        return float("nan")
