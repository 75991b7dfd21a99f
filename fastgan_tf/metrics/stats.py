"""Running statistics of feature rows (mean, covariance, a bounded sample of the rows), saved
and loaded in the TTUR/pytorch-fid `.npz` layout (`mu`, `sigma`)."""

import numpy as np

from fastgan_tf.io import atomic_file

DEFAULT_MAX_KEEP = 10_000  # feature rows kept for KID: 10k x 2048 float32 = 80 MB


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
        """Write an .npz atomically (`io.atomic_file`), so a crash never leaves half a cache.

        Keys `mu` and `sigma` follow the TTUR/pytorch-fid stats format.
        """
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
        with atomic_file(path) as f:
            np.savez(f, **arrays)

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
