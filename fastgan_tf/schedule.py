"""How long a run trains and when it pauses for samples, FID and checkpoints.

Budgets: `--epochs N` (total epochs) or `--steps N` (total optimisation steps, the reference's
`--iter`: training ends at exactly that step, mid-epoch if need be), and `--time-limit 4h` for one
invocation (the run saves and exits cleanly; the next invocation goes on).

Cadences (`--sample-every`, `--checkpoint-every`, `--fid-every`) count epochs (`10`) or steps
(`500steps`); a run's config.yaml records them as "10 epochs" or "500 steps".
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

UNITS = ("epochs", "steps")
_EVERY = re.compile(r"^\s*(\d+)\s*(epochs?|steps?)?\s*$")
_DURATION = re.compile(r"^\s*(?:(\d+)\s*h)?\s*(?:(\d+)\s*m(?:in)?)?\s*(?:(\d+)\s*s)?\s*$")


@dataclass(frozen=True)
class Every:
    """A cadence: every `count` epochs or steps."""

    count: int
    unit: str

    def due(self, step: int, epochs_done: int, epoch_ended: bool) -> bool:
        """Whether the cadence falls on this moment (after a step; after an epoch's last)."""
        if self.unit == "steps":
            return step % self.count == 0
        return epoch_ended and epochs_done % self.count == 0

    def __str__(self) -> str:
        return f"{self.count} {self.unit}"


def parse_every(value) -> Every | None:
    """10, "10", "10epochs", "500 steps" -> Every; 0 -> None (off); ValueError otherwise."""
    match = _EVERY.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a cadence: use a number of epochs (10) or of steps "
                         "(500steps)")
    count, unit = int(match.group(1)), match.group(2) or "epochs"
    return Every(count, unit if unit.endswith("s") else unit + "s") if count else None


def canonical_every(value):
    """How config.yaml records a cadence: "10 epochs", "500 steps", or 0 (off)."""
    every = parse_every(value)
    return str(every) if every else 0


def parse_duration(text: str) -> float:
    """"4h", "90m", "2h30m", "45s" -> seconds; ValueError for anything else."""
    match = _DURATION.match(str(text))
    if not match or not any(match.groups()):
        raise ValueError(f"{text!r} is not a duration: use hours and minutes such as 4h, 90m or "
                         "2h30m")
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return float(hours * 3600 + minutes * 60 + seconds)


def format_duration(seconds: float) -> str:
    """3725 -> "1h02m"; 95 -> "1m35s"."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


@dataclass
class Budget:
    """What this invocation trains to: a total of epochs or of steps, within a time limit."""

    epochs: int | None = None
    steps: int | None = None
    time_limit: float | None = None  # seconds for this invocation
    started: float = 0.0

    @classmethod
    def of(cls, cfg) -> Budget:
        limit = parse_duration(cfg.time_limit) if cfg.time_limit else None
        return cls(cfg.epochs, cfg.steps, limit, time.monotonic())

    def reached(self, step: int, epochs_done: int) -> bool:
        """The run has trained all it was asked to."""
        return step >= self.steps if self.steps is not None else epochs_done >= self.epochs

    def out_of_time(self) -> bool:
        return self.time_limit is not None and self.elapsed() >= self.time_limit

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def describe(self, step: int, epoch: int) -> str:
        """'epochs 3->20' or 'steps 120->5000', and the time limit if any."""
        span = (f"steps {step}->{self.steps}" if self.steps is not None
                else f"epochs {epoch}->{self.epochs}")
        return span + (f", time limit {format_duration(self.time_limit)}" if self.time_limit
                       else "")
