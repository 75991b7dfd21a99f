"""Streaming feature statistics, the cached real-image statistics, and generator evaluation.

Images only ever exist one batch at a time: they are turned into (B, 2048) features and folded into
a running mean/covariance, so evaluating 50k samples costs the memory of one batch (plus at most
`max_keep` feature rows kept for KID). Nothing is written to disk except the real-stats .npz cache.
"""

import hashlib
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

from fastgan_tf.metrics.frechet import frechet_distance
from fastgan_tf.metrics.kid import kernel_inception_distance

DEFAULT_MAX_KEEP = 10_000  # feature rows kept for KID: 10k x 2048 float32 = 80 MB
METRICS = ("fid", "kid")


class FeatureStats:
    """Running float64 mean and unbiased covariance of feature rows, merged batch by batch.

    Batches are merged with Chan et al.'s pairwise update (means and centred sums of squares), which
    avoids the cancellation of the naive sum(x x^T) - n mu mu^T formula.
    keep_features=True also keeps the first `max_keep` rows (float32) for KID.
    """

    def __init__(self, keep_features=False, max_keep=DEFAULT_MAX_KEEP, backbone=None):
        self.keep_features = keep_features
        self.max_keep = int(max_keep)
        self.backbone = backbone  # variant string of the backbone that made the features
        self.count = 0
        self._mean = None
        self._m2 = None  # sum of outer products of centred rows
        self._kept = []
        self._num_kept = 0
        self.metadata = {}  # extra keys passed to save(), filled by load()

    @property
    def dim(self):
        return None if self._mean is None else self._mean.shape[0]

    def update(self, features):
        """Fold a (B, D) batch of features into the statistics."""
        x = np.asarray(features, np.float64)
        if x.ndim != 2:
            raise ValueError(f"features must be (B, D), got shape {x.shape}")
        if self._mean is not None and x.shape[1] != self.dim:
            raise ValueError(f"feature dim {x.shape[1]} != {self.dim} seen before")
        n_b = x.shape[0]
        if n_b == 0:
            return
        mean_b = x.mean(axis=0)
        centred = x - mean_b
        m2_b = centred.T @ centred
        if self._mean is None:
            self._mean, self._m2, self.count = mean_b, m2_b, n_b
        else:
            n = self.count + n_b
            delta = mean_b - self._mean
            self._m2 += m2_b + np.outer(delta, delta) * (self.count * n_b / n)
            self._mean = self._mean + delta * (n_b / n)
            self.count = n
        if self.keep_features and self._num_kept < self.max_keep:
            rows = x[: self.max_keep - self._num_kept].astype(np.float32)
            self._kept.append(rows)
            self._num_kept += len(rows)

    def mean(self):
        if self.count == 0:
            raise ValueError("FeatureStats is empty")
        return self._mean.copy()

    def cov(self):
        """Unbiased covariance (ddof=1), like np.cov(x, rowvar=False)."""
        if self.count < 2:
            raise ValueError(f"a covariance needs at least 2 samples, have {self.count}")
        return self._m2 / (self.count - 1)

    @property
    def features(self):
        """Kept feature rows (float32, at most max_keep), or None if not kept."""
        if not self._kept:
            return None
        if len(self._kept) > 1:
            self._kept = [np.concatenate(self._kept)]
        return self._kept[0]

    def save(self, path, **metadata):
        """Write an .npz atomically (temp file + os.replace), so a crash never leaves half a cache.

        Keys `mu` and `sigma` follow the TTUR/pytorch-fid stats format.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {
            "mu": self.mean(),
            "sigma": self.cov(),
            "count": np.int64(self.count),
            "backbone": np.str_(self.backbone or ""),
            "max_keep": np.int64(self.max_keep),
        }
        if self.features is not None:
            arrays["features"] = self.features
        for key, value in metadata.items():
            arrays[f"meta_{key}"] = np.asarray(value)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path):
        """Inverse of save(); extra metadata is available as `stats.metadata`."""
        with np.load(path, allow_pickle=False) as data:
            count = int(data["count"])
            stats = cls(
                keep_features="features" in data,
                max_keep=int(data["max_keep"]),
                backbone=str(data["backbone"]) or None,
            )
            stats.count = count
            stats._mean = data["mu"].astype(np.float64)
            stats._m2 = data["sigma"].astype(np.float64) * (count - 1)
            if "features" in data:
                stats._kept = [data["features"]]
                stats._num_kept = len(stats._kept[0])
            stats.metadata = {k[5:]: data[k].item() for k in data.files if k.startswith("meta_")}
        return stats


def _variant(backbone):
    """What identifies a backbone's features (name + weights/input-size variant)."""
    return getattr(backbone, "variant", backbone.name)


def compute_stats(image_batches, backbone, keep_features=False, max_keep=DEFAULT_MAX_KEEP,
                  progress=None):
    """Stream batches of NHWC images (uint8 or float [-1, 1]) through `backbone` into FeatureStats.

    progress: optional callable(num_images_done).
    """
    stats = FeatureStats(keep_features, max_keep, backbone=_variant(backbone))
    for images in image_batches:
        stats.update(backbone.features(images))
        if progress is not None:
            progress(stats.count)
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
            warnings.warn(f"ignoring unreadable real-stats cache {path}: {e}", stacklevel=2)
    stats = compute_stats(image_batches_fn(), backbone, keep_features=keep_features,
                          max_keep=max_keep, progress=progress)
    stats.save(path, fingerprint=str(fingerprint), resolution=int(resolution))
    return stats


def evaluate_generator(sample_fn, num_samples, batch_size, backbone, real, metrics=METRICS,
                       kid_subsets=100, kid_subset_size=1000, seed=0, max_keep=DEFAULT_MAX_KEEP,
                       progress=None):
    """FID/KID of `sample_fn` against real statistics, generating and scoring one batch at a time.

    sample_fn(n) -> n images, NHWC float in [-1, 1] (or uint8). Returns a JSON-friendly dict:
    {"backbone", "num_fake", "num_real", "fid", "kid_mean", "kid_std", "kid_subset_size"}
    (the metric keys only for the requested metrics). progress: optional callable(num_done).
    """
    metrics = tuple(metrics)
    unknown = set(metrics) - set(METRICS)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; choose from {METRICS}")
    if real.backbone is not None and real.backbone != _variant(backbone):
        raise ValueError(
            f"real statistics come from backbone {real.backbone!r}, not {_variant(backbone)!r}"
        )
    want_kid = "kid" in metrics
    if want_kid and real.features is None:
        raise ValueError("KID needs real features: compute the real stats with keep_features=True")
    fake = FeatureStats(keep_features=want_kid, max_keep=max_keep, backbone=_variant(backbone))
    while fake.count < num_samples:
        n = min(batch_size, num_samples - fake.count)
        images = sample_fn(n)
        if images.shape[0] != n:
            raise ValueError(f"sample_fn({n}) returned {images.shape[0]} images")
        fake.update(backbone.features(images))
        del images
        if progress is not None:
            progress(fake.count)
    result = {"backbone": backbone.name, "num_fake": int(fake.count), "num_real": int(real.count)}
    if "fid" in metrics:
        result["fid"] = frechet_distance(real.mean(), real.cov(), fake.mean(), fake.cov(),
                                         n1=real.count, n2=fake.count)
    if want_kid:
        mean, std = kernel_inception_distance(real.features, fake.features, kid_subsets,
                                              kid_subset_size, seed)
        result.update(kid_mean=mean, kid_std=std,
                      kid_subset_size=int(min(kid_subset_size, len(real.features),
                                              len(fake.features))))
    return result
