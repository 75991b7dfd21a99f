"""Pictures from a trained generator: sample files, grids, latent walks, style mixing, neighbours.

Images are made `batch_size` at a time, so memory stays bounded on a 4 GB GPU. One thing shapes
every function here: the generator's BatchNorm always uses the statistics of the current batch
(as in the reference, which never switches to eval mode), so an image depends slightly on the
other latents in its batch. Samples therefore come from the same seeded stream as FID
(`metrics.scoring.latent_sampler`): `--generate N --seed S` writes exactly the images that
`--fid --seed S` scores first, when the batch size is the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tensorflow as tf

from fastgan_tf.errors import UserError
from fastgan_tf.metrics.scoring import EVAL_BATCH_SIZE, latent_sampler, truncated_normal
from fastgan_tf.models.generator import SLE_SOURCES
from fastgan_tf.visualize import make_grid, save_image_grid, to_pil, to_uint8

INTERPOLATIONS = ("slerp", "linear")
MIX_RESOLUTION = 256  # style mixing swaps the gates after feat_64: se_128 and up
# The features that gate se_128, se_256 and se_512. feat_4 (se_64's source) is not passed, so
# se_64 stays off in style mixing, as in the reference script.
MIXED_GATE_SOURCES = (SLE_SOURCES[128], SLE_SOURCES[256], SLE_SOURCES[512])
NEAREST_SIZE = 64  # side at which nearest neighbours are compared


def file_stem(seed: int, truncation: float | None = None) -> str:
    """`seed7` or `seed7_psi0.7`: output names say how they were made, so runs do not overwrite."""
    return f"seed{seed}" + (f"_psi{truncation:g}" if truncation is not None else "")


# --------------------------------------------------------------------------- samples and grids


def iter_samples(generator, num: int, seed: int = 0, truncation: float | None = None,
                 batch_size: int = EVAL_BATCH_SIZE) -> Iterator[np.ndarray]:
    """uint8 (B, R, R, C) batches, `num` images in all, a pure function of (seed, batch_size)."""
    sample = latent_sampler(generator, seed, truncation)
    done = 0
    while done < num:
        n = min(batch_size, num - done)
        yield to_uint8(sample(n).numpy())
        done += n


def generate(generator, num: int, seed: int = 0, truncation: float | None = None,
             batch_size: int = EVAL_BATCH_SIZE) -> np.ndarray:
    """All `num` samples as one uint8 array (for small counts: grids, neighbours)."""
    return np.concatenate(list(iter_samples(generator, num, seed, truncation, batch_size)))


def save_samples(generator, num: int, out_dir: Path, seed: int = 0,
                 truncation: float | None = None, batch_size: int = EVAL_BATCH_SIZE,
                 progress=None) -> list[Path]:
    """Write `num` PNGs named `seed<S>[_psi<P>]_<index>.png`, streaming batch by batch.

    progress: optional callable(images_written_since_last_call), e.g. a progress bar's `update`.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem, paths = file_stem(seed, truncation), []
    for batch in iter_samples(generator, num, seed, truncation, batch_size):
        for image in batch:
            path = out_dir / f"{stem}_{len(paths):05d}.png"
            to_pil(image).save(path)
            paths.append(path)
        if progress is not None:
            progress(len(batch))
    return paths


def save_grid(generator, num: int, path: Path, seed: int = 0, truncation: float | None = None,
              batch_size: int = EVAL_BATCH_SIZE, nrow: int | None = None) -> Path:
    """One PNG grid of the same `num` samples that `save_samples` would write."""
    return save_image_grid(generate(generator, num, seed, truncation, batch_size), path, nrow)


# --------------------------------------------------------------------------- latent walks


def slerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """Spherical interpolation: the angle between a and b moves linearly, the norm too.

    Gaussian latents live near a sphere of radius sqrt(nz); a straight line between two of them
    cuts through the low-density middle, slerp stays on the shell.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    cos = np.clip(a @ b / max(na * nb, 1e-12), -1.0, 1.0)
    omega = np.arccos(cos)
    if np.sin(omega) < 1e-6:  # (anti)parallel: the great circle is not unique; fall back
        return ((1 - t) * a + t * b).astype(np.float32)
    direction = (np.sin((1 - t) * omega) * a / na + np.sin(t * omega) * b / nb) / np.sin(omega)
    return (direction * ((1 - t) * na + t * nb)).astype(np.float32)


def lerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    return ((1 - t) * np.asarray(a, np.float32) + t * np.asarray(b, np.float32)).astype(np.float32)


def walk_latents(keyframes: np.ndarray, frames: int, mode: str = "slerp") -> np.ndarray:
    """A closed walk through K keyframe latents: K segments of `frames` steps, K * frames latents.

    The walk returns to the first keyframe, so the GIF loops without a jump.
    """
    if mode not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {mode!r}")
    step = slerp if mode == "slerp" else lerp
    k = len(keyframes)
    return np.stack([step(keyframes[i], keyframes[(i + 1) % k], j / frames)
                     for i in range(k) for j in range(frames)])


def render_frames(generator, latents: np.ndarray, seed: int = 0,
                  batch_size: int = EVAL_BATCH_SIZE) -> np.ndarray:
    """uint8 frames, one per latent, each a continuous function of its latent.

    Batching frames together would make each frame depend on its batch-mates (BatchNorm uses
    batch statistics) and give it another noise map, so the video would flicker. Instead every
    frame is generated as row 0 of a batch completed by the same `batch_size - 1` fixed anchor
    latents and the same noise seed. It costs `batch_size` images per frame; lower --batch-size
    for speed (at the price of less typical BatchNorm statistics).
    """
    rng = np.random.default_rng([seed, 1])
    anchors = rng.standard_normal((batch_size - 1, generator.nz)).astype(np.float32)
    noise_seed = tf.constant([seed, 0], tf.int64)
    frames = []
    for z in latents:
        batch = tf.constant(np.concatenate([z[None].astype(np.float32), anchors]))
        big = generator(batch, training=False, noise_seed=noise_seed)[0]
        frames.append(to_uint8(big[:1].numpy())[0])
    return np.stack(frames)


def save_gif(frames: np.ndarray, path: Path, fps: float = 12.0) -> Path:
    """An endlessly looping GIF (PIL), one frame per image."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [to_pil(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], loop=0,
                   duration=max(int(round(1000 / fps)), 20), optimize=False)
    return path


def save_interpolation(generator, out_dir: Path, keyframes: int = 4, frames: int = 16,
                       mode: str = "slerp", seed: int = 0, truncation: float | None = None,
                       batch_size: int = EVAL_BATCH_SIZE, fps: float = 12.0):
    """Frames `<stem>_walk/frame_<i>.png` and the GIF `<stem>_walk.gif`; returns (frames, gif)."""
    if keyframes < 2 or frames < 1:
        raise UserError(f"--interpolate needs at least 2 keyframes and --frames >= 1, got "
                        f"{keyframes} and {frames}")
    rng = np.random.default_rng(seed)
    keys = truncated_normal(rng, (keyframes, generator.nz), truncation)
    images = render_frames(generator, walk_latents(keys, frames, mode), seed, batch_size)
    stem = f"{file_stem(seed, truncation)}_walk"
    frame_dir = Path(out_dir) / stem
    frame_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        paths.append(frame_dir / f"frame_{i:05d}.png")
        to_pil(image).save(paths[-1])
    return paths, save_gif(images, Path(out_dir) / f"{stem}.gif", fps)


# --------------------------------------------------------------------------- style mixing


def check_style_mix(generator) -> None:
    """Style mixing needs FastGAN's SLE gates after feat_64 (other models have none)."""
    resolution = getattr(generator, "resolution", 0)
    if resolution < MIX_RESOLUTION or not getattr(generator, "use_sle", False):
        raise UserError(f"--style-mix needs a FastGAN generator of {MIX_RESOLUTION}px or more "
                        f"with SLE gates (this one: {type(generator).__name__}, {resolution}px): "
                        "it swaps the gates se_128 and up, which other models do not have")


def style_mix(generator, z_content: np.ndarray, z_style: np.ndarray,
              noise_seed=(0, 0)) -> np.ndarray:
    """(n_content, n_style, R, R, 3) float images: structure from z_content, gates from z_style.

    Cell [i, j] continues content latent i's features through the synthesis stages with the SLE
    gates se_128 and up computed from style latent j's feat_8/16/32, and without se_64 (as the
    reference script). Column j is one batch (the n content rows). As everywhere, BatchNorm
    couples a batch: A's and B's features are each one batch, and so is every column.
    """
    check_style_mix(generator)
    seed = tf.constant(noise_seed, tf.int64)
    content = generator.features(tf.constant(z_content, tf.float32), training=False,
                                 noise_seed=seed)
    style = generator.features(tf.constant(z_style, tf.float32), training=False, noise_seed=seed)
    n = len(z_content)
    columns = []
    for j in range(len(z_style)):
        gates = {source: tf.repeat(style[source][j:j + 1], n, axis=0)
                 for source in MIXED_GATE_SOURCES}
        big = generator.synthesize(content, gates, training=False, noise_seed=seed)[0]
        columns.append(big.numpy())
    return np.stack(columns, axis=1)


def style_mix_grid(generator, n: int = 4, seed: int = 0, truncation: float | None = None):
    """The (n+1) x (n+1) figure of StyleGAN's style mixing: uint8 grid image.

    Top row: the n style sources B (plain forward); left column: the n content sources A; cell
    (i, j): A_i's structure with B_j's SLE gates. The corner is left white.
    """
    check_style_mix(generator)
    rng = np.random.default_rng(seed)
    z_a = truncated_normal(rng, (n, generator.nz), truncation)
    z_b = truncated_normal(rng, (n, generator.nz), truncation)
    noise_seed = tf.constant([seed, 0], tf.int64)
    heads_a = to_uint8(generator(tf.constant(z_a), training=False, noise_seed=noise_seed)[0])
    heads_b = to_uint8(generator(tf.constant(z_b), training=False, noise_seed=noise_seed)[0])
    mixed = to_uint8(style_mix(generator, z_a, z_b, (seed, 0)))
    corner = np.full_like(heads_a[:1], 255)
    rows = [np.concatenate([corner, heads_b])]
    rows += [np.concatenate([heads_a[i:i + 1], mixed[i]]) for i in range(n)]
    return make_grid(np.concatenate(rows), nrow=n + 1)


# --------------------------------------------------------------------------- nearest neighbours


def downsample(images: np.ndarray, size: int = NEAREST_SIZE) -> np.ndarray:
    """uint8 (N, R, R, C) -> float32 (N, size*size*C) in [0, 1], by averaging size x size blocks.

    Comparing at 64x64 keeps 1000 training images at 1024px in ~50 MB and ignores pixel-level
    noise, while a memorised copy still sits at a distance near 0.
    """
    images = np.asarray(images)
    n, h, w, c = images.shape
    size = min(size, h)
    if h % size or w % size:
        raise ValueError(f"image size {h}x{w} is not a multiple of {size}")
    x = images.astype(np.float32).reshape(n, size, h // size, size, w // size, c).mean(axis=(2, 4))
    return (x / 255.0).reshape(n, -1)


def nearest_neighbours(queries: np.ndarray, references: np.ndarray, k: int = 3,
                       size: int = NEAREST_SIZE, chunk: int = 256):
    """For each query image, the k closest reference images by pixel L2 at `size` x `size`.

    Returns (indices (Q, k), distances (Q, k)); distances are RMS per value in [0, 1] units
    (0 = identical after downsampling), closest first; ties go to the lower index.
    """
    q = downsample(queries, size).astype(np.float64)
    r = downsample(references, size).astype(np.float64)
    k = min(k, len(r))
    r_sq = (r * r).sum(axis=1)
    indices, distances = [], []
    for start in range(0, len(q), chunk):
        block = q[start:start + chunk]
        d2 = (block * block).sum(axis=1)[:, None] + r_sq[None] - 2.0 * block @ r.T
        d2 = np.maximum(d2, 0.0)
        order = np.argsort(d2, axis=1, kind="stable")[:, :k]
        indices.append(order)
        distances.append(np.sqrt(np.take_along_axis(d2, order, axis=1) / q.shape[1]))
    return np.concatenate(indices), np.concatenate(distances)


def nearest_grid(queries: np.ndarray, references: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """uint8 grid: each row a query image followed by its nearest reference images."""
    rows = [np.concatenate([queries[i:i + 1], references[idx]]) for i, idx in enumerate(indices)]
    return make_grid(np.concatenate(rows), nrow=indices.shape[1] + 1)
