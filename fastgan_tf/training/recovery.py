"""Rolling back after a NaN or Inf: what was tried, kept on disk so a restart keeps the count.

``<run>/recovery.json`` records::

    {"checkpoint": 1200,        step of the checkpoint the last rollback went back to
     "failed_at": 1207,         step that failed last
     "attempts": 2,             failures since training last got past a failure (bounded by
                                max_nan_retries: a run cannot loop forever, even by skipping
                                batch after batch into new checkpoints)
     "skip": [[12, 3]],         (epoch, batch) pairs that produced a NaN: never trained again
     "events": [...]}           one record per rollback, for the user

Each rollback restores the newest good checkpoint, then makes the next try differ:

- the batch that produced the NaN is skipped (listed in the file, so a restart skips it too);
- the step RNG (latents, augmentation, hinge margins) is reseeded from (seed, checkpoint, attempt);
- under mixed precision both loss scales are divided by 2**attempt.

These changes depend only on the checkpoint and the attempt number, so a run that is killed after
a rollback and resumed from that checkpoint re-applies exactly the same changes: resume stays
bit-exact through recoveries, and the bound on attempts survives restarts (unlike a counter in
memory, which would let a run loop forever across crashes).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fastgan_tf.io import atomic_write_text

FILE_NAME = "recovery.json"


@dataclass
class Recovery:
    path: Path
    checkpoint: int | None = None
    failed_at: int | None = None
    attempts: int = 0
    skip: set[tuple[int, int]] = field(default_factory=set)
    events: list[dict] = field(default_factory=list)

    @classmethod
    def load(cls, run_dir: Path) -> Recovery:
        """Read `<run>/recovery.json`; a missing or unreadable file means no recovery so far."""
        path = Path(run_dir) / FILE_NAME
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(path, data.get("checkpoint"), data.get("failed_at"),
                       int(data.get("attempts", 0)),
                       {(int(e), int(b)) for e, b in data.get("skip", [])},
                       list(data.get("events", [])))
        except (OSError, ValueError, TypeError, AttributeError):
            return cls(path)

    def save(self) -> None:
        data = {"checkpoint": self.checkpoint, "failed_at": self.failed_at,
                "attempts": self.attempts, "skip": sorted([e, b] for e, b in self.skip),
                "events": self.events}
        atomic_write_text(self.path, json.dumps(data, indent=2))

    def record(self, checkpoint_step: int, event: dict) -> int:
        """Count a failure at `event["step"]`, rolled back to `checkpoint_step`; returns its attempt.

        The count starts again at 1 only when the checkpoint is past the previous failure, that
        is, when training got beyond the step that failed before.
        """
        progressed = self.failed_at is None or checkpoint_step >= self.failed_at
        self.attempts = 1 if progressed else self.attempts + 1
        self.checkpoint, self.failed_at = checkpoint_step, int(event["step"])
        self.events.append(dict(event, checkpoint=checkpoint_step, attempt=self.attempts,
                                time=time.strftime("%Y-%m-%dT%H:%M:%S")))
        return self.attempts

    def pending_for(self, checkpoint_step: int) -> int:
        """The attempt whose changes apply on top of `checkpoint_step` (0: none)."""
        return self.attempts if self.checkpoint == checkpoint_step else 0


def retry_seed(seed: int, checkpoint_step: int, attempt: int) -> int:
    """A new RNG seed for attempt `attempt` after `checkpoint_step`; the same on every machine."""
    return int(np.random.SeedSequence([seed, checkpoint_step, attempt]).generate_state(1)[0])


def vary(gan, seed: int, checkpoint_step: int, attempt: int) -> list[str]:
    """Change the restored state for retry `attempt`; returns what was changed, for the message."""
    gan.rng.reset_from_seed(retry_seed(seed, checkpoint_step, attempt))
    changes = ["reseeded the noise"]
    scales = [getattr(opt, "dynamic_scale", None) for opt in (gan.g_opt, gan.d_opt)]
    if any(s is not None for s in scales):
        for scale in scales:
            if scale is not None:
                scale.assign(float(np.asarray(scale.numpy())) / 2.0 ** attempt)
        changes.append(f"divided the loss scale by {2 ** attempt}")
    return changes
