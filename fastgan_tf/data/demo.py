"""A procedural demo dataset: smiley faces, generated in memory (no files, no download).

Each image is a coloured disc (random hue, size and position) on a plain light background, with two
dark eyes and a smiling mouth arc. The structure is simple and smooth, so a small GAN learns it in a
few CPU epochs, and it is easy to judge by eye whether samples look right (round face, two eyes,
one mouth). Shapes are drawn at 4x the resolution and box-averaged down, which antialiases edges.
"""

from __future__ import annotations

import colorsys

import numpy as np

# What `--dataset demo` sets unless the user overrides it: small and fast on a CPU. A demo run is
# only ~640 steps (20 epochs of 32 batches); with the reference EMA decay of 0.999 the sampled
# (EMA) generator would still be half its random initialisation (0.999^640 = 0.53) and shows noise,
# with 0.99 it shows coloured faces with dark features after 20 epochs (checked on a CPU).
DEMO_DEFAULTS = {
    "resolution": 64,
    "recon_loss": "l1",
    "ngf": 16,
    "ndf": 16,
    "batch_size": 8,
    "ema_decay": 0.99,
}
# Settings a dataset brings with it, by --dataset name; YAML and flags still win (config.resolve).
DATASET_PRESETS = {"demo": DEMO_DEFAULTS}

_DARK = np.array([0.13, 0.10, 0.10])


def _draw_face(rng: np.random.Generator, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """One face on the unit square; `y`, `x` are the (S, S) pixel-centre coordinates."""
    background = rng.uniform(0.86, 0.97) + rng.uniform(-0.03, 0.03, size=3)
    hue, saturation, value = rng.uniform(), rng.uniform(0.5, 0.85), rng.uniform(0.75, 0.95)
    face = np.array(colorsys.hsv_to_rgb(hue, saturation, value))
    r = rng.uniform(0.27, 0.40)
    margin = 0.04
    cx, cy = rng.uniform(r + margin, 1 - r - margin, size=2)

    img = np.empty(y.shape + (3,))
    img[:] = background
    img[(x - cx) ** 2 + (y - cy) ** 2 <= r**2] = face

    eye_dx, eye_dy, eye_r = r * rng.uniform([0.30, 0.20, 0.09], [0.40, 0.30, 0.13])
    for side in (-1, 1):
        img[(x - cx - side * eye_dx) ** 2 + (y - cy + eye_dy) ** 2 <= eye_r**2] = _DARK

    # Mouth: the lower part of a ring centred a little above the face centre.
    mouth_r, thickness = r * rng.uniform(0.45, 0.60), r * 0.07
    my = cy - r * 0.05
    dist = np.sqrt((x - cx) ** 2 + (y - my) ** 2)
    img[(np.abs(dist - mouth_r) <= thickness) & (y - my >= 0.45 * mouth_r)] = _DARK
    return img


def make_demo_images(num_images: int = 256, resolution: int = 64, seed: int = 0) -> np.ndarray:
    """uint8 (N, R, R, 3) smiley faces; the same seed always gives the same images."""
    if num_images < 1 or resolution < 4:
        raise ValueError(f"need num_images >= 1 and resolution >= 4, got {num_images} {resolution}")
    supersample = 4
    size = resolution * supersample
    coords = (np.arange(size) + 0.5) / size
    y, x = np.meshgrid(coords, coords, indexing="ij")
    rng = np.random.default_rng(seed)
    out = np.empty((num_images, resolution, resolution, 3), dtype=np.uint8)
    for i in range(num_images):
        big = _draw_face(rng, y, x)
        small = big.reshape(resolution, supersample, resolution, supersample, 3).mean(axis=(1, 3))
        out[i] = np.clip(np.rint(small * 255.0), 0, 255).astype(np.uint8)
    return out
