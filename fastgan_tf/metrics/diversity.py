"""How varied samples are, and how close they sit to the training images, in a feature space.

Used by the training-health signals (training/health.py): per epoch in pixel space, at each FID
evaluation on Inception features. Distances are Euclidean, in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PIXEL_SIDE = 16  # images are compared averaged down to 16x16 for the per-epoch signals
MAX_REFERENCE = 512  # training images used for the reference distances (a fixed subset)
NEAR_FRACTION = 0.5  # "memorised": closer than this share of the real nearest-neighbour distance


def pairwise_mean(features: np.ndarray) -> float:
    """Mean Euclidean distance over all pairs of distinct rows."""
    x = np.asarray(features, np.float64)
    if len(x) < 2:
        return 0.0
    d = _distances(x, x)
    return float(d[np.triu_indices(len(x), k=1)].mean())


def nearest_real(fake: np.ndarray, real: np.ndarray) -> np.ndarray:
    """Distance from each fake row to its nearest real row."""
    return _distances(np.asarray(fake, np.float64), np.asarray(real, np.float64)).min(axis=1)


def real_neighbour_median(real: np.ndarray) -> float:
    """Median distance from a real row to its nearest other real row (the data's own spacing)."""
    d = _distances(np.asarray(real, np.float64), np.asarray(real, np.float64))
    np.fill_diagonal(d, np.inf)
    return float(np.median(d.min(axis=1)))


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(squared, 0.0))


@dataclass(frozen=True)
class Reference:
    """What samples are compared with: the training images' spread and spacing in one space."""

    features: np.ndarray
    spread: float  # pairwise_mean of the training features
    spacing: float  # real_neighbour_median of the training features

    @classmethod
    def of(cls, features: np.ndarray, seed: int = 0) -> Reference:
        """From training features (a seeded subset of MAX_REFERENCE rows when there are more)."""
        x = np.asarray(features, np.float64)
        if len(x) > MAX_REFERENCE:
            x = x[np.sort(np.random.default_rng(seed).choice(len(x), MAX_REFERENCE, replace=False))]
        return cls(x, pairwise_mean(x), real_neighbour_median(x))

    @classmethod
    def of_images(cls, images, seed: int = 0) -> Reference:
        """In pixel space, from at most MAX_REFERENCE of the uint8 training images."""
        rows = np.arange(len(images))
        if len(rows) > MAX_REFERENCE:
            rows = np.sort(np.random.default_rng(seed).choice(rows, MAX_REFERENCE, replace=False))
        return cls.of(pixel_features(images, rows=rows))

    def compare(self, fake: np.ndarray) -> dict:
        """diversity and memorisation of the samples `fake` (rows in this space; the first
        MAX_REFERENCE of them, which bounds the pairwise distances)."""
        fake = np.asarray(fake, np.float64)[:MAX_REFERENCE]
        diversity = pairwise_mean(fake) / self.spread if self.spread > 0 else 0.0
        near = nearest_real(fake, self.features) < NEAR_FRACTION * self.spacing
        return {"diversity": round(float(diversity), 4),
                "memorisation": round(float(near.mean()), 4)}


def pixel_features(images, side: int = PIXEL_SIDE, rows=None, chunk: int = 8) -> np.ndarray:
    """uint8 or [-1, 1] float NHWC images (those at `rows`, default all) -> rows of their
    side x side averages in [0, 1]; a few images at a time, so 1000 images at 1024 px fit."""
    rows = np.arange(len(images)) if rows is None else np.asarray(rows)
    return np.concatenate([_pooled(np.asarray(images[rows[i:i + chunk]]), side)
                           for i in range(0, len(rows), chunk)]) if len(rows) else np.zeros((0, 0))


def _pooled(x: np.ndarray, side: int) -> np.ndarray:
    x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else (x.astype(np.float32) + 1) / 2
    n, h, w, c = x.shape
    side = min(side, h)
    pooled = x.reshape(n, side, h // side, side, w // side, c).mean(axis=(2, 4))
    return pooled.reshape(n, -1).astype(np.float64)
