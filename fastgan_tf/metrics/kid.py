"""Kernel Inception Distance: unbiased MMD^2 with a cubic polynomial kernel, averaged over subsets.

Unlike FID it is unbiased in the sample count, so it stays meaningful for few-shot datasets with a
few hundred real images. Same estimator as StyleGAN2-ADA and clean-fid.
"""

import numpy as np


def _unbiased_mmd2(x, y):
    """Unbiased MMD^2 between two equal-size sets with k(a, b) = (a.b / d + 1)^3."""
    m, d = x.shape
    k_xx = (x @ x.T / d + 1.0) ** 3
    k_yy = (y @ y.T / d + 1.0) ** 3
    k_xy = (x @ y.T / d + 1.0) ** 3
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return within - 2.0 * k_xy.sum() / (m * m)


def kernel_inception_distance(feats_a, feats_b, num_subsets=100, subset_size=1000, seed=0):
    """(mean, std) of the unbiased MMD^2 over `num_subsets` random subsets (without replacement).

    subset_size is clipped to the smaller set; the draw is deterministic for `seed`. The std is the
    spread of the subset estimates (np.std, ddof=0), as reported by the KID paper.
    """
    a = np.asarray(feats_a, np.float64)
    b = np.asarray(feats_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected (N, D) features with equal D, got {a.shape} and {b.shape}")
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise ValueError(f"KID needs at least 2 samples per set, got {len(a)} and {len(b)}")
    rng = np.random.default_rng(seed)
    mmds = np.empty(num_subsets)
    for i in range(num_subsets):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        mmds[i] = _unbiased_mmd2(x, y)
    return float(mmds.mean()), float(mmds.std())
