"""A run's options: TrainConfig's defaults, then what the model and the dataset bring, then the
YAML file, then the flags; and the model's own checks (training/registry.py knows the models)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastgan_tf import config
from fastgan_tf.data.demo import DATASET_PRESETS
from fastgan_tf.training import registry


def presets(model: str, dataset: str) -> dict:
    """Settings the model (SSD's paper values) and the dataset (the demo's) bring."""
    return {**registry.get(model).presets, **DATASET_PRESETS.get(dataset, {})}


def resolve_config(overrides: dict[str, Any], config_file: Path | None = None) -> config.TrainConfig:
    """defaults < model and dataset presets < `config_file` < `overrides`, checked."""
    cfg = config.resolve(overrides, config_file, presets=presets)
    registry.get(cfg.model).check(cfg)
    return cfg


def choices(name: str) -> tuple | None:
    """The values config key `name` accepts, when they are a fixed list."""
    if name == "model":
        return tuple(registry.MODELS)
    return config.FIELDS[name].metadata.get("choices")
