"""Streaming feature statistics, the cached real-image statistics, and generator evaluation.

Images only ever exist one batch at a time: they are turned into (B, 2048) features and folded into
a running mean/covariance, so evaluating 50k samples costs the memory of one batch (plus at most
`max_keep` feature rows kept for KID). Nothing is written to disk except the real-stats .npz cache.
"""

import hashlib
import logging
from pathlib import Path


from fastgan_tf.metrics.registry import DEFAULT_METRICS, MetricOptions, lookup_metrics
from fastgan_tf.metrics.stats import DEFAULT_MAX_KEEP, FeatureStats

log = logging.getLogger(__name__)

def _variant(backbone):
    """What identifies a backbone's features (name + weights/input-size variant)."""
    return getattr(backbone, "variant", backbone.name)


def compute_stats(image_batches, backbone, keep_features=False, max_keep=DEFAULT_MAX_KEEP,
                  progress=None):
    """Stream batches of NHWC images (uint8 or float [-1, 1]) through `backbone` into FeatureStats.

    progress: optional callable(images_in_this_batch), e.g. a progress bar's `update`.
    """
    stats = FeatureStats(keep_features, max_keep, backbone=_variant(backbone))
    for images in image_batches:
        features = backbone.features(images)
        del images  # only one batch of images alive at a time, even while the next is made
        stats.update(features)
        if progress is not None:
            progress(len(features))
    return stats


def real_stats_path(cache_dir, fingerprint, resolution, backbone):
    """Cache file for one (dataset fingerprint, resolution, backbone); the fingerprint is hashed."""
    digest = hashlib.sha256(str(fingerprint).encode("utf-8")).hexdigest()[:16]
    return Path(cache_dir) / f"real_{_variant(backbone)}_{int(resolution)}px_{digest}.npz"


def real_stats(cache_dir, fingerprint, resolution, image_batches_fn, backbone, keep_features=True,
               max_keep=DEFAULT_MAX_KEEP, progress=None):
    """Real-image statistics, computed once per (fingerprint, resolution, backbone) and cached.

    image_batches_fn: zero-argument callable returning an iterable of image batches; only called on
    a cache miss. A cache file without kept features is recomputed when keep_features is set.
    """
    path = real_stats_path(cache_dir, fingerprint, resolution, backbone)
    if path.exists():
        try:
            stats = FeatureStats.load(path)
            meta = stats.metadata
            if (meta.get("fingerprint") == str(fingerprint)
                    and meta.get("resolution") == int(resolution)
                    and stats.backbone == _variant(backbone)
                    and (stats.features is not None or not keep_features)):
                return stats
        except (OSError, ValueError, KeyError) as e:
            log.warning(f"ignoring unreadable real-stats cache {path}: {e}")
    stats = compute_stats(image_batches_fn(), backbone, keep_features=keep_features,
                          max_keep=max_keep, progress=progress)
    stats.save(path, fingerprint=str(fingerprint), resolution=int(resolution))
    return stats


def evaluate_generator(sample_fn, num_samples, batch_size, backbone, real,
                       metrics=DEFAULT_METRICS, kid_subsets=100, kid_subset_size=1000, seed=0,
                       max_keep=DEFAULT_MAX_KEEP, progress=None):
    """The registered `metrics` of `sample_fn` against real statistics (see registry.py).

    The generated images are made and embedded one batch at a time, once, whatever the number of
    metrics. sample_fn(n) -> n images, NHWC float in [-1, 1] (or uint8). Returns a JSON-friendly
    dict: {"backbone", "num_fake", "num_real"} and each metric's keys ("fid"; "kid_mean",
    "kid_std", "kid_subset_size"). progress: optional callable(images_in_this_batch).
    """
    chosen = lookup_metrics(metrics)
    _check_real(real, backbone, chosen)
    fake = compute_stats(_generated_batches(sample_fn, num_samples, batch_size), backbone,
                         keep_features=any(m.needs_features for m in chosen), max_keep=max_keep,
                         progress=progress)
    result = {"backbone": backbone.name, "num_fake": int(fake.count), "num_real": int(real.count)}
    options = MetricOptions(kid_subsets=kid_subsets, kid_subset_size=kid_subset_size, seed=seed)
    for metric in chosen:
        result.update(metric.compute(real, fake, options))
    return result


def _check_real(real, backbone, metrics):
    """Real statistics that cannot serve this evaluation fail before any image is generated."""
    if real.backbone is not None and real.backbone != _variant(backbone):
        raise ValueError(
            f"real statistics come from backbone {real.backbone!r}, not {_variant(backbone)!r}"
        )
    for metric in metrics:
        metric.check_stats(real, "real")


def _generated_batches(sample_fn, num_samples, batch_size):
    """`num_samples` images from `sample_fn`, in batches of at most `batch_size`.

    No local keeps a batch: it must be freed before `sample_fn` makes the next one.
    """
    done = 0
    while done < num_samples:
        n = min(batch_size, num_samples - done)
        done += n
        yield _checked_batch(sample_fn(n), n)


def _checked_batch(images, n):
    if images.shape[0] != n:
        raise ValueError(f"sample_fn({n}) returned {images.shape[0]} images")
    return images
