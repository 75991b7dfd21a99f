"""Precision, recall, density and coverage: k-nearest-neighbour estimates of how much of each
feature distribution the other one reaches, where FID and KID give one number for both.

Each point x of a set gets a ball B(x, r_k(x)), r_k(x) being the distance from x to its k-th
nearest neighbour in its own set, x itself excluded (by index: a duplicate of x is a neighbour at
distance 0). With N real and M generated points:

- precision (Kynkaanniemi et al. 2019): the fraction of generated points inside at least one real
  ball (k = 3, the paper's choice);
- recall: the fraction of real points inside at least one generated ball (k = 3);
- density (Naeem et al. 2020): (1 / kM) * the sum over generated points of the number of real
  balls holding each; about 1 when both sets come from the same distribution;
- coverage: the fraction of real points whose ball holds at least one generated point (k = 5,
  Naeem et al.'s choice: for two equal-size samples of one distribution the expected coverage is
  about 1 - 2^-k, above 0.95 from k = 5 on; it is 0.875 at k = 3).

A ball is open, as in Naeem et al.'s reference code: identical sets then score density exactly 1
(each ball holds its centre and the k - 1 nearer neighbours, not the k-th on its boundary), and
Kynkaanniemi et al.'s closed ball differs only for points exactly on a boundary. An exact copy of
the centre is always inside, so a point with k or more duplicates (radius 0) keeps its copies.

Numerics: float64 throughout, features centred on the real mean (distances do not change, the
cancellation in |a|^2 + |b|^2 - 2 a.b shrinks), distances computed for blocks of rows against the
whole other set, so 10k x 10k distances never exist at once (a block holds at most
BLOCK_DISTANCES). Bitwise-equal rows get distance exactly 0 (the formula leaves ~1e-13), and a
distance within a relative TIE_RTOL of a radius counts as on the boundary, so equal distances
computed in two different matrix products (a twin of the k-th neighbour) never land inside by
rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PR_NEIGHBOURS = 3  # k of precision and recall (Kynkaanniemi et al.)
DC_NEIGHBOURS = 5  # k of density and coverage (Naeem et al.)
BLOCK_DISTANCES = 1 << 22  # 32 MB of float64 distances per block
TIE_RTOL = 1e-9  # far below float32 feature precision, far above float64 round-off


@dataclass(frozen=True)
class _Points:
    """One feature set ready for distances."""

    x: np.ndarray  # (n, d) float64, centred on the real mean
    sq: np.ndarray  # (n,) squared norms of x
    ids: np.ndarray  # (n,) equal for bitwise-equal rows, across both sets


def _prepare(real: np.ndarray, fake: np.ndarray) -> tuple[_Points, _Points]:
    """Both sets as float64 rows centred on the real mean, in one array (10k + 10k rows of 2048
    float64 take 320 MB)."""
    n = len(real)
    both = np.concatenate([real, fake]).astype(np.float64)
    both -= both[:n].mean(axis=0)
    ids = _row_ids(both)
    sq = np.einsum("ij,ij->i", both, both)
    return _Points(both[:n], sq[:n], ids[:n]), _Points(both[n:], sq[n:], ids[n:])


def _row_ids(x: np.ndarray) -> np.ndarray:
    """An id per row, shared by bitwise-equal rows (a dict of row bytes: exact, and faster than
    np.unique(axis=0) on 2048-d rows)."""
    first: dict[bytes, int] = {}
    return np.array([first.setdefault(row.tobytes(), len(first)) for row in x], np.int64)


def _distance_blocks(rows: _Points, cols: _Points):
    """Yield (first row, block) of squared distances from consecutive rows to every column."""
    step = max(1, BLOCK_DISTANCES // max(1, len(cols.x)))
    for start in range(0, len(rows.x), step):
        stop = start + step
        d2 = rows.x[start:stop] @ cols.x.T
        d2 *= -2.0
        d2 += rows.sq[start:stop, None]
        d2 += cols.sq[None, :]
        np.maximum(d2, 0.0, out=d2)
        d2[rows.ids[start:stop, None] == cols.ids[None, :]] = 0.0
        yield start, d2


def _kth_neighbour_sq(points: _Points, ks: list[int]) -> dict[int, np.ndarray]:
    """For each k, the squared distance from every point to its k-th nearest other point."""
    radii = np.empty((len(ks), len(points.x)))
    for start, d2 in _distance_blocks(points, points):
        rows = np.arange(len(d2))
        d2[rows, start + rows] = np.inf  # not its own neighbour (its duplicates still are)
        kth = np.partition(d2, [k - 1 for k in ks], axis=1)
        radii[:, start:start + len(d2)] = kth[:, [k - 1 for k in ks]].T
    return dict(zip(ks, radii))


def _inside(d2: np.ndarray, radius_sq: np.ndarray) -> np.ndarray:
    """Membership of open balls; exact copies of a centre are inside, near-ties are not."""
    return (d2 < radius_sq * (1.0 - TIE_RTOL)) | (d2 == 0.0)


def _check(real: np.ndarray, fake: np.ndarray, pr_k: int, dc_k: int) -> None:
    """Readable errors before any distance is computed (a k-th neighbour needs k others)."""
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"expected (N, D) features with equal D, got {real.shape} and "
                         f"{fake.shape}")
    if min(pr_k, dc_k) < 1:
        raise ValueError(f"k must be at least 1, got {pr_k} and {dc_k}")
    for name, rows, k in (("real", real, max(pr_k, dc_k)), ("generated", fake, pr_k)):
        if len(rows) <= k:
            raise ValueError(f"precision/recall/density/coverage need more than k = {k} "
                             f"{name} feature rows, got {len(rows)}")


def precision_recall_density_coverage(real, fake, pr_k: int = PR_NEIGHBOURS,
                                      dc_k: int = DC_NEIGHBOURS) -> dict:
    """The four scores of (N, D) real and (M, D) generated features (see the module docstring).

    One pass over the real-generated distances serves all four; the radii need one pass over
    each set's own distances.
    """
    real, fake = np.asarray(real), np.asarray(fake)
    _check(real, fake, pr_k, dc_k)
    real_pts, fake_pts = _prepare(real, fake)
    real_radii = _kth_neighbour_sq(real_pts, sorted({pr_k, dc_k}))
    fake_radii = _kth_neighbour_sq(fake_pts, [pr_k])[pr_k]
    precise = held = 0
    recalled = np.zeros(len(real_pts.x), bool)
    covered = np.zeros(len(real_pts.x), bool)
    for start, d2 in _distance_blocks(fake_pts, real_pts):  # rows: generated, columns: real
        precise += int(_inside(d2, real_radii[pr_k][None, :]).any(axis=1).sum())
        recalled |= _inside(d2, fake_radii[start:start + len(d2), None]).any(axis=0)
        in_dc = _inside(d2, real_radii[dc_k][None, :])
        held += int(in_dc.sum())
        covered |= in_dc.any(axis=0)
    num_fake = len(fake_pts.x)
    return {"precision": precise / num_fake, "recall": float(recalled.mean()),
            "density": held / (dc_k * num_fake), "coverage": float(covered.mean())}
