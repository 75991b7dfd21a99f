"""Run logs: `metrics.jsonl` (one JSON object per line) and TensorBoard scalars and images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tensorflow as tf

from fastgan_tf.io import atomic_write_text


class RunLog:
    """Appends metric records to `<run>/metrics.jsonl` and mirrors them to TensorBoard."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / "metrics.jsonl"
        self._writer = tf.summary.create_file_writer(str(Path(run_dir) / "tensorboard"))

    def forget_after(self, step: int) -> None:
        """Drop records beyond `step`: after a resume those steps are trained again."""
        if not self.path.exists():
            return
        kept = [r for r in read_records(self.path) if r.get("step", 0) <= step]
        atomic_write_text(self.path, "".join(f"{json.dumps(r)}\n" for r in kept))

    def write(self, record: dict, prefix: str = "train") -> None:
        """Log one record; its numeric fields also become TensorBoard scalars at its step."""
        record = {k: _plain(v) for k, v in record.items()}
        with open(self.path, "a", encoding="utf-8", newline="\n") as f:  # LF on every OS
            f.write(json.dumps(record) + "\n")
        with self._writer.as_default(step=int(record.get("step", 0))):
            for key, value in record.items():
                if key not in ("step", "epoch", "kind") and isinstance(value, float):
                    tf.summary.scalar(f"{prefix}/{key}", value)
        self._writer.flush()

    def image(self, tag: str, grid: np.ndarray, step: int) -> None:
        """A uint8 (H, W, 3) grid as a TensorBoard image."""
        with self._writer.as_default(step=int(step)):
            tf.summary.image(tag, grid[None], max_outputs=1)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def read_records(path: Path) -> list[dict]:
    """The records of a metrics.jsonl; a missing file has none, a line cut short by a kill is
    skipped."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def _plain(value):
    """Tensors and numpy scalars to JSON-friendly Python numbers."""
    if hasattr(value, "numpy"):
        value = value.numpy()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return float(value)
    return value
