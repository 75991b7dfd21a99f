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
    """(N, H, W, C) -> one (rows*(H+p)+p, nrow*(W+p)+p, C) uint8 image, `nrow` images per row.

    Like torchvision's make_grid: `padding` pixels between images and around the border. C is 1
    (greyscale, kept so that the PNG is greyscale too) or 3.
    """
    images = to_uint8(images)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or len(images) == 0:
        raise ValueError(f"expected (N, H, W, 1 or 3) images with N >= 1, got {images.shape}")
    n, h, w, c = images.shape
    ncol = min(nrow or math.ceil(math.sqrt(n)), n)
    nrows = math.ceil(n / ncol)
    height, width = nrows * (h + padding) + padding, ncol * (w + padding) + padding
    grid = np.full((height, width, c), pad_value, np.uint8)
    for i, image in enumerate(images):
        top = padding + (i // ncol) * (h + padding)
        left = padding + (i % ncol) * (w + padding)
        grid[top : top + h, left : left + w] = image
    return grid


def to_pil(image: np.ndarray) -> Image.Image:
    """uint8 (H, W, 3) -> an RGB image, (H, W, 1) or (H, W) -> a greyscale ("L") one."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    return Image.fromarray(np.ascontiguousarray(image, np.uint8))  # 2-D: "L", (H, W, 3): "RGB"


def save_png(image: np.ndarray, path: Path | str) -> Path:
    """Write one uint8 (H, W, 3) or greyscale (H, W, 1) image as a PNG, atomically (a reader
    never sees a half-written file)."""
    path = Path(path)
    buffer = io.BytesIO()
    to_pil(image).save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
    return path


def save_image_grid(images, path: Path | str, nrow: int | None = None) -> Path:
    """Write a PNG grid of `images` atomically."""
    return save_png(make_grid(images, nrow), path)
