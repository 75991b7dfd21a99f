"""Image grids for progress snapshots and sample sheets."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from PIL import Image

from fastgan_tf.io import atomic_write_bytes


def to_uint8(images) -> np.ndarray:
    """float images in [-1, 1] (numpy or TF) or uint8 -> uint8, values rounded and clipped."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images
    return np.clip(np.rint((images.astype(np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def make_grid(images, nrow: int | None = None, padding: int = 2, pad_value: int = 0) -> np.ndarray:
    """(N, H, W, C) -> one (rows*(H+p)+p, nrow*(W+p)+p, 3) uint8 image, `nrow` images per row.

    Like torchvision's make_grid: `padding` pixels between images and around the border.
    """
    images = to_uint8(images)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or len(images) == 0:
        raise ValueError(f"expected (N, H, W, 1 or 3) images with N >= 1, got {images.shape}")
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    n, h, w, _ = images.shape
    ncol = min(nrow or math.ceil(math.sqrt(n)), n)
    nrows = math.ceil(n / ncol)
    height, width = nrows * (h + padding) + padding, ncol * (w + padding) + padding
    grid = np.full((height, width, 3), pad_value, np.uint8)
    for i, image in enumerate(images):
        top = padding + (i // ncol) * (h + padding)
        left = padding + (i % ncol) * (w + padding)
        grid[top : top + h, left : left + w] = image
    return grid


def save_image_grid(images, path: Path | str, nrow: int | None = None) -> Path:
    """Write a PNG grid atomically (a reader never sees a half-written file)."""
    path = Path(path)
    buffer = io.BytesIO()
    Image.fromarray(make_grid(images, nrow)).save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
    return path
