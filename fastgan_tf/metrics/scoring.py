"""FID/KID of a FastGAN generator against its training images: shared by training and evaluate.py.

The few-shot protocol (DiffAugment, FastGAN): generated samples against the *whole* training set,
at the training resolution. Real statistics are cached per (dataset fingerprint, resolution,
backbone) under the cache folder, so they are computed once. Images are generated and scored one
batch at a time, so memory stays bounded on a 4 GB GPU.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from fastgan_tf import paths
from fastgan_tf.metrics.features import FeatureStats, evaluate_generator, real_stats
from fastgan_tf.metrics.registry import DEFAULT_METRICS

EVAL_BATCH_SIZE = 16  # the reference's eval.py batch: BatchNorm uses per-batch statistics


def real_feature_stats(images: np.ndarray, fingerprint: str, backbone,
                       batch_size: int = EVAL_BATCH_SIZE) -> FeatureStats:
    """Backbone statistics (with features, for KID) of uint8 training images, cached on disk."""
    resolution = images.shape[1]

    def batches():
        for start in range(0, len(images), batch_size):
            yield np.asarray(images[start:start + batch_size])

    return real_stats(paths.cache_dir() / "fid", fingerprint, resolution, batches, backbone,
                      keep_features=True)


def latent_sampler(generator, seed: int = 0, truncation: float | None = None):
    """A `sample_fn(n)` drawing z from N(0, I) (optionally truncated) with a seeded numpy RNG.

    Each call uses fresh latents and a fresh noise seed, so the stream of images is a pure
    function of `seed`: the same seed gives the same images and the same score.
    """
    rng = np.random.default_rng(seed)
    calls = 0

    def sample(n: int):
        nonlocal calls
        z = truncated_normal(rng, (n, generator.nz), truncation)
        noise_seed = tf.constant([seed, calls], tf.int64)
        calls += 1
        big = generator(tf.constant(z), training=False, noise_seed=noise_seed)[0]
        return big

    return sample


def truncated_normal(rng: np.random.Generator, shape, truncation: float | None) -> np.ndarray:
    """N(0, I) latents; with `truncation` psi, entries with |z| > psi are redrawn (BigGAN's trick)."""
    z = rng.standard_normal(shape).astype(np.float32)
    if truncation is None:
        return z
    if truncation <= 0:
        raise ValueError(f"truncation must be positive, got {truncation}")
    outside = np.abs(z) > truncation
    while outside.any():
        z[outside] = rng.standard_normal(int(outside.sum())).astype(np.float32)
        outside = np.abs(z) > truncation
    return z


def score_generator(generator, backbone, real: FeatureStats, num_samples: int,
                    metrics=DEFAULT_METRICS, seed: int = 0, batch_size: int = EVAL_BATCH_SIZE,
                    kid_subsets: int = 100, progress=None) -> dict:
    """The registered `metrics` (FID and KID by default) of `generator` (EMA weights) on
    `num_samples` samples; a JSON-friendly dict. progress: optional callable(images_scored)."""
    result = evaluate_generator(latent_sampler(generator, seed), num_samples, batch_size,
                                backbone, real, metrics=metrics, kid_subsets=kid_subsets,
                                seed=seed, progress=progress)
    result["backbone_variant"] = getattr(backbone, "variant", backbone.name)
    return result
