"""FID/KID maths, streaming statistics, the real-stats cache and generator evaluation.

No Inception here: a fake backbone with the same interface stands in.
"""

import json
import warnings

import numpy as np
import pytest
import scipy.linalg

from support import PixelBackbone
from fastgan_tf.metrics import (
    FeatureStats,
    MetricOptions,
    PartialFeaturesWarning,
    SingularCovarianceWarning,
    calc_metric,
    compute_stats,
    evaluate_generator,
    frechet_distance,
    is_valid_metric,
    kernel_inception_distance,
    list_valid_metrics,
    precision_recall_density_coverage,
    real_stats,
    register_metric,
)
from fastgan_tf.metrics import prdc as prdc_module
from fastgan_tf.metrics import registry


def _random_spd(rng, dim, n=None):
    a = rng.normal(size=(n or 3 * dim, dim))
    return np.cov(a, rowvar=False) + 0.01 * np.eye(dim)


def _fid_scipy(mu1, s1, mu2, s2):
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean))


# --------------------------------------------------------------------------- Frechet distance


@pytest.mark.parametrize("dim", [8, 64, 200])
def test_frechet_matches_scipy_sqrtm(rng, dim):
    mu1, mu2 = rng.normal(size=dim), rng.normal(size=dim)
    s1, s2 = _random_spd(rng, dim), 2.0 * _random_spd(rng, dim)
    expected = _fid_scipy(mu1, s1, mu2, s2)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-4)


def test_frechet_identical_stats_is_zero(rng):
    mu, s = rng.normal(size=50), _random_spd(rng, 50)
    value = frechet_distance(mu, s, mu, s)
    assert 0.0 <= value < 1e-8 * np.trace(s)


def test_frechet_closed_form_isotropic_gaussians(rng):
    dim, a, b = 32, 1.5, 0.5
    mu1, mu2 = rng.normal(size=dim), rng.normal(size=dim)
    expected = np.sum((mu1 - mu2) ** 2) + dim * (a - b) ** 2  # Tr(a^2 I + b^2 I - 2ab I)
    value = frechet_distance(mu1, a**2 * np.eye(dim), mu2, b**2 * np.eye(dim))
    assert value == pytest.approx(expected, rel=1e-10)


def test_frechet_warns_when_fewer_samples_than_dims(rng):
    dim = 64
    x, y = rng.normal(size=(20, dim)), rng.normal(size=(20, dim))
    args = (x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
    with pytest.warns(SingularCovarianceWarning, match="20 samples"):
        value = frechet_distance(*args, n1=20, n2=20)
    assert np.isfinite(value) and value >= 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        frechet_distance(*args, n1=500, n2=500)  # no warning with enough samples


def test_frechet_rejects_shape_mismatch(rng):
    with pytest.raises(ValueError):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


# --------------------------------------------------------------------------- KID


def _mmd2_by_loops(x, y):
    """The unbiased MMD^2 estimator written out term by term."""
    m, d = x.shape

    def k(a, b):
        return (a @ b / d + 1.0) ** 3

    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    return (xx + yy) / (m * (m - 1)) - 2.0 * xy / (m * m)


def test_kid_matches_direct_unbiased_mmd(rng):
    a = rng.normal(size=(12, 5))
    b = rng.normal(loc=0.7, size=(12, 5))
    # Subsets as large as the sets are permutations of them, so every subset gives the full MMD.
    mean, std = kernel_inception_distance(a, b, num_subsets=4, subset_size=1000, seed=3)
    assert mean == pytest.approx(_mmd2_by_loops(a, b), rel=1e-10)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_kid_subsets_are_deterministic_and_clipped(rng):
    a, b = rng.normal(size=(40, 6)), rng.normal(loc=0.3, size=(25, 6))
    first = kernel_inception_distance(a, b, num_subsets=10, subset_size=100, seed=1)
    assert first == kernel_inception_distance(a, b, num_subsets=10, subset_size=100, seed=1)
    assert first != kernel_inception_distance(a, b, num_subsets=10, subset_size=100, seed=2)
    assert first[1] > 0.0  # 25-of-40 subsets of `a` differ


def test_kid_same_distribution_is_near_zero(rng):
    # Non-negative features, like Inception pool features.
    a, b = rng.uniform(size=(300, 16)), rng.uniform(size=(300, 16))
    same_set, _ = kernel_inception_distance(a, a, num_subsets=20, subset_size=100)
    same_dist, _ = kernel_inception_distance(a, b, num_subsets=20, subset_size=100)
    shifted, _ = kernel_inception_distance(a, b + 0.1, num_subsets=20, subset_size=100)
    assert abs(same_set) < 0.1 * shifted and abs(same_dist) < 0.1 * shifted
    assert shifted > 0.0


# --------------------------------------------------------------------------- PRDC


def _prdc_by_definition(real, fake, pr_k=3, dc_k=5):
    """The four scores written out from the definitions, with every distance a plain norm of a
    difference: B(x, r) holds y if |x - y| < r or y == x; r is the k-th distance to the others."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)

    def dist(a, b):
        return np.linalg.norm(a[:, None, :] - b[None, :, :], axis=-1)

    def radii(x, k):
        d = dist(x, x)
        np.fill_diagonal(d, np.inf)
        return np.sort(d, axis=1)[:, k - 1]

    def inside(d, r):  # d[j, i]: generated j to real i
        return (d < r) | (d == 0.0)

    d = dist(fake, real)
    in_real_pr = inside(d, radii(real, pr_k)[None, :])
    in_real_dc = inside(d, radii(real, dc_k)[None, :])
    in_fake = inside(d, radii(fake, pr_k)[:, None])
    return {"precision": in_real_pr.any(axis=1).mean(), "recall": in_fake.any(axis=0).mean(),
            "density": in_real_dc.sum() / (dc_k * len(fake)),
            "coverage": in_real_dc.any(axis=0).mean()}


def _assert_scores(got, expected):
    assert set(got) == {"precision", "recall", "density", "coverage"}
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key


@pytest.mark.parametrize("pr_k, dc_k", [(3, 5), (3, 3), (1, 2)])
def test_prdc_matches_the_definitions(rng, pr_k, dc_k):
    real = rng.normal(size=(40, 6))
    fake = rng.normal(0.8, 0.6, size=(70, 6))  # shifted and narrower: no score is 0 or 1
    expected = _prdc_by_definition(real, fake, pr_k, dc_k)
    _assert_scores(precision_recall_density_coverage(real, fake, pr_k, dc_k), expected)
    assert all(0.0 < expected[key] < 1.0 for key in ("precision", "recall", "coverage"))


def test_prdc_with_ties_and_duplicates_matches_the_definitions(rng):
    # Integer points on a small grid: many equal distances and many exact duplicates.
    real = rng.integers(0, 4, size=(60, 2)).astype(np.float32)
    fake = rng.integers(0, 5, size=(50, 2)).astype(np.float32)
    _assert_scores(precision_recall_density_coverage(real, fake),
                   _prdc_by_definition(real, fake))


def test_prdc_by_hand_on_a_line():
    real = np.array([[0.0], [1.0], [3.0]])  # k = 1 radii: 1, 1, 2
    fake = np.array([[0.5], [10.0]])  # radii 9.5, 9.5
    # 0.5 lies in the balls of 0 and 1, 10 in none; the real 3 is in no real ball's reach of a
    # generated point; every real point is within 9.5 of 0.5.
    _assert_scores(precision_recall_density_coverage(real, fake, pr_k=1, dc_k=1),
                   {"precision": 0.5, "recall": 1.0, "density": 1.0, "coverage": 2 / 3})


def test_prdc_of_identical_and_of_far_apart_sets(rng):
    real = rng.normal(size=(80, 16)).astype(np.float32)
    # Identical sets: each ball holds its centre's twin and the k - 1 nearer neighbours' twins
    # (the k-th lies on the boundary of the open ball): density exactly 1.
    _assert_scores(precision_recall_density_coverage(real, real.copy()),
                   {"precision": 1.0, "recall": 1.0, "density": 1.0, "coverage": 1.0})
    _assert_scores(precision_recall_density_coverage(real, real[::-1] + 100.0),
                   {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0})


def test_prdc_keeps_duplicates_inside_their_zero_radius_balls(rng):
    point = rng.normal(size=(1, 8))
    real = np.concatenate([np.repeat(point, 4, axis=0), rng.normal(size=(20, 8))])  # radius 0
    fake = np.concatenate([point, rng.normal(size=(9, 8)) + 50.0])
    got = precision_recall_density_coverage(real, fake, pr_k=3, dc_k=3)
    # The copy of `point` is in the four zero-radius balls (and no other): an open ball alone
    # would hold nothing and score 0 everywhere.
    _assert_scores(got, {"precision": 0.1, "density": 4 / (3 * 10), "coverage": 4 / 24})
    _assert_scores(got, _prdc_by_definition(real, fake, 3, 3))


def test_prdc_is_exact_far_from_the_origin(rng):
    # |a|^2 + |b|^2 - 2a.b would lose all 16 digits to cancellation here (|a|^2 ~ 6e13, distances
    # ~1e-2; uncentred, every score comes out 1 and density 4): the features are centred first.
    real = 1e6 + 1e-2 * rng.normal(size=(50, 64))
    fake = 1e6 + 1e-2 * rng.normal(0.3, 1.0, size=(60, 64))
    expected = _prdc_by_definition(real, fake)
    _assert_scores(precision_recall_density_coverage(real, fake), expected)
    assert expected["density"] < 1.0


def test_prdc_blocks_do_not_change_the_result(rng, monkeypatch):
    real, fake = rng.normal(size=(45, 5)), rng.normal(0.2, size=(38, 5))
    whole = precision_recall_density_coverage(real, fake)
    monkeypatch.setattr(prdc_module, "BLOCK_DISTANCES", 7)  # blocks of 1 row, ragged ends
    assert precision_recall_density_coverage(real, fake) == whole
    monkeypatch.setattr(prdc_module, "BLOCK_DISTANCES", 100)  # 2 rows against 45 columns
    assert precision_recall_density_coverage(real, fake) == whole


def test_prdc_needs_more_rows_than_neighbours(rng):
    with pytest.raises(ValueError, match="more than k = 5 real feature rows, got 5"):
        precision_recall_density_coverage(rng.normal(size=(5, 3)), rng.normal(size=(9, 3)))
    with pytest.raises(ValueError, match="more than k = 3 generated feature rows, got 3"):
        precision_recall_density_coverage(rng.normal(size=(9, 3)), rng.normal(size=(3, 3)))
    with pytest.raises(ValueError, match="equal D"):
        precision_recall_density_coverage(rng.normal(size=(9, 3)), rng.normal(size=(9, 4)))


def test_registered_prdc_reports_its_rows_and_warns_when_rows_were_dropped(rng):
    x = rng.normal(size=(30, 4))
    real, fake = FeatureStats(keep_features=True), FeatureStats(keep_features=True, max_keep=12)
    real.update(x[:20])
    fake.update(x[20:] + 0.1)
    fake.update(x[:10] + 0.1)  # 20 generated rows seen, the first 12 kept
    with pytest.warns(PartialFeaturesWarning, match="first 12 of 20 generated images"):
        result = calc_metric("prdc", real, fake, MetricOptions(pr_k=2, dc_k=4))
    expected = _prdc_by_definition(real.features, fake.features, 2, 4)
    _assert_scores({k: result[k] for k in expected}, expected)
    assert {k: result[k] for k in ("pr_k", "dc_k", "prdc_num_real", "prdc_num_fake")} == \
        {"pr_k": 2, "dc_k": 4, "prdc_num_real": 20, "prdc_num_fake": 12}
    json.dumps(result)


# --------------------------------------------------------------------------- FeatureStats


def _stream(stats, x, sizes):
    start = 0
    for size in sizes:
        stats.update(x[start : start + size])
        start += size
    assert start == len(x)


def test_feature_stats_streaming_equals_numpy(rng):
    x = rng.normal(size=(103, 7)) * 3.0 + 1e3  # large offset: checks the merge is stable
    stats = FeatureStats()
    _stream(stats, x, [1, 10, 32, 0, 60])
    assert stats.count == 103
    np.testing.assert_allclose(stats.mean(), x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.cov(), np.cov(x, rowvar=False), rtol=1e-9)
    assert stats.features is None


def test_feature_stats_keeps_at_most_max_keep(rng):
    x = rng.normal(size=(50, 4)).astype(np.float32)
    stats = FeatureStats(keep_features=True, max_keep=23)
    _stream(stats, x, [10, 10, 10, 20])
    np.testing.assert_array_equal(stats.features, x[:23])


def test_feature_stats_save_load_round_trip(rng, tmp_path):
    x = rng.normal(size=(40, 6))
    stats = FeatureStats(keep_features=True, max_keep=30, backbone="fake")
    _stream(stats, x, [16, 16, 8])
    path = tmp_path / "sub" / "stats.npz"
    stats.save(path, fingerprint="abc", resolution=64)
    assert sorted(p.name for p in path.parent.iterdir()) == ["stats.npz"]  # no temp files left

    loaded = FeatureStats.load(path)
    assert (loaded.count, loaded.backbone, loaded.max_keep) == (40, "fake", 30)
    assert loaded.metadata == {"fingerprint": "abc", "resolution": 64}
    np.testing.assert_array_equal(loaded.mean(), stats.mean())
    np.testing.assert_allclose(loaded.cov(), stats.cov(), rtol=1e-12)
    np.testing.assert_array_equal(loaded.features, x[:30].astype(np.float32))

    # A loaded accumulator keeps streaming correctly.
    more = rng.normal(size=(9, 6))
    loaded.update(more)
    both = np.concatenate([x, more])
    np.testing.assert_allclose(loaded.cov(), np.cov(both, rowvar=False), rtol=1e-9)


# --------------------------------------------------------------------------- cache and evaluation


class FakeBackbone:
    """Same interface as the Inception backbones: a fixed random projection of the pixels."""

    name = "fake"
    variant = "fake"
    feature_dim = 8

    def __init__(self, size=8):
        self.weights = np.random.default_rng(7).normal(size=(size * size * 3, self.feature_dim))
        self.calls = 0
        self.images_seen = 0

    def features(self, images):
        images = np.asarray(images, np.float64)
        self.calls += 1
        self.images_seen += len(images)
        return np.tanh(images.reshape(len(images), -1) @ self.weights / 20.0).astype(np.float32)


def test_pixel_backbone_takes_what_the_inception_backbones_take(rng):
    """The shared stand-in (tests/support.py): uint8 or [-1, 1] floats, grey or RGB, any size."""
    backbone = PixelBackbone()
    grey = rng.integers(0, 256, (3, 64, 64, 1), dtype=np.uint8)
    rgb = np.repeat(grey, 3, axis=-1)
    features = backbone.features(rgb)
    assert features.shape == (3, backbone.feature_dim)
    np.testing.assert_allclose(backbone.features(grey), features)
    np.testing.assert_allclose(backbone.features(rgb / 127.5 - 1.0), features, atol=1e-4)
    np.testing.assert_allclose(PixelBackbone().features(rgb[:, ::4, ::4]),
                               backbone.features(rgb[:, ::4, ::4]))  # a fixed projection
    assert not np.allclose(features[0], features[1])


def _image_batches(seed, num, batch=16, shift=0.0):
    rng = np.random.default_rng(seed)
    for start in range(0, num, batch):
        n = min(batch, num - start)
        yield np.clip(rng.normal(shift, 0.5, size=(n, 8, 8, 3)), -1, 1).astype(np.float32)


def test_compute_stats_streams_batches(rng):
    backbone = FakeBackbone()
    progress = []
    batches = _image_batches(0, 50)
    stats = compute_stats(batches, backbone, keep_features=True, progress=progress.append)
    assert stats.count == 50 and backbone.calls == 4 and progress == [16, 16, 16, 2]  # increments
    feats = backbone.features(np.concatenate(list(_image_batches(0, 50))))
    expected_cov = np.cov(feats.astype(np.float64), rowvar=False)
    np.testing.assert_allclose(stats.cov(), expected_cov, rtol=1e-6)
    np.testing.assert_array_equal(stats.features, feats)


def test_real_stats_cached_per_fingerprint_and_resolution(tmp_path):
    backbone = FakeBackbone()
    calls = []

    def batches():
        calls.append(1)
        return _image_batches(0, 40)

    first = real_stats(tmp_path, "dataset-v1", 64, batches, backbone)
    assert len(calls) == 1 and backbone.calls == 3
    again = real_stats(tmp_path, "dataset-v1", 64, batches, backbone)
    assert len(calls) == 1 and backbone.calls == 3  # loaded from disk, no backbone call
    np.testing.assert_array_equal(again.mean(), first.mean())
    np.testing.assert_array_equal(again.features, first.features)

    real_stats(tmp_path, "dataset-v2", 64, batches, backbone)  # another dataset
    assert len(calls) == 2 and backbone.calls == 6
    real_stats(tmp_path, "dataset-v1", 128, batches, backbone)  # another resolution
    assert len(calls) == 3
    assert len(list(tmp_path.glob("*.npz"))) == 3


def test_real_stats_recomputes_when_features_missing(tmp_path):
    backbone = FakeBackbone()
    real_stats(tmp_path, "d", 64, lambda: _image_batches(0, 20), backbone, keep_features=False)
    assert backbone.calls == 2
    stats = real_stats(tmp_path, "d", 64, lambda: _image_batches(0, 20), backbone)
    assert backbone.calls == 4 and stats.features is not None


def _sampler(seed, shift=0.0):
    """sample_fn(n) drawing from the same stream as _image_batches(seed, ...), any batch size."""
    rng = np.random.default_rng(seed)
    requested = []

    def sample_fn(n):
        requested.append(n)
        return np.clip(rng.normal(shift, 0.5, size=(n, 8, 8, 3)), -1, 1).astype(np.float32)

    return sample_fn, requested


def test_evaluate_generator_end_to_end(tmp_path):
    backbone = FakeBackbone()
    real = real_stats(tmp_path, "d", 8, lambda: _image_batches(0, 400), backbone)

    # Same images as the real set (same seed): FID and KID ~0.
    sample_fn, requested = _sampler(0)
    kid = {"kid_subsets": 10, "kid_subset_size": 100}
    result = evaluate_generator(sample_fn, 400, 16, backbone, real, **kid)
    json.dumps(result)
    assert result["backbone"] == "fake"
    assert (result["num_fake"], result["num_real"], result["kid_subset_size"]) == (400, 400, 100)
    assert max(requested) <= 16 and sum(requested) == 400
    assert 0.0 <= result["fid"] < 1e-9

    # Same distribution, other samples; then a shifted distribution.
    sample_fn, requested = _sampler(1)
    progress = []
    same = evaluate_generator(sample_fn, 250, 64, backbone, real, progress=progress.append, **kid)
    assert requested == [64, 64, 64, 58] and same["num_fake"] == 250
    assert progress == requested  # images per batch, ready for a progress bar's update()
    sample_fn, _ = _sampler(2, shift=0.3)
    shifted = evaluate_generator(sample_fn, 250, 64, backbone, real, **kid)
    assert same["fid"] < 0.1 * shifted["fid"]
    assert abs(same["kid_mean"]) < 0.1 * shifted["kid_mean"]
    assert shifted["kid_std"] > 0.0

    only_fid = evaluate_generator(_sampler(1)[0], 32, 16, backbone, real, metrics=("fid",))
    assert set(only_fid) == {"backbone", "num_fake", "num_real", "fid"}


def test_evaluate_generator_scores_prdc_from_the_same_generated_features(tmp_path):
    backbone = FakeBackbone()
    real = real_stats(tmp_path, "d", 8, lambda: _image_batches(0, 200), backbone)
    backbone.calls = 0
    same = evaluate_generator(_sampler(1)[0], 300, 50, backbone, real,
                              metrics=("prdc", "fid", "kid"), kid_subsets=3)
    assert backbone.calls == 6  # 300 images embedded once for the three metrics
    assert list(same)[3:] == ["fid", "kid_mean", "kid_std", "kid_subset_size", "precision",
                              "recall", "density", "coverage", "pr_k", "dc_k", "prdc_num_real",
                              "prdc_num_fake"]
    assert (same["prdc_num_real"], same["prdc_num_fake"], same["pr_k"], same["dc_k"]) == \
        (200, 300, 3, 5)
    assert 0.8 < same["density"] < 1.2 and same["coverage"] > 0.9 and same["precision"] > 0.8
    far = evaluate_generator(_sampler(2, shift=0.5)[0], 300, 50, backbone, real, metrics=("prdc",))
    for key in ("precision", "recall", "density", "coverage"):
        assert far[key] < 0.3 * same[key], key


def test_evaluate_generator_rejects_mismatches(tmp_path):
    backbone = FakeBackbone()
    batches_fn = lambda: _image_batches(0, 40)  # noqa: E731
    real = real_stats(tmp_path, "d", 8, batches_fn, backbone, keep_features=False)
    sample_fn, _ = _sampler(1)
    with pytest.raises(ValueError, match="keep_features"):
        evaluate_generator(sample_fn, 16, 8, backbone, real, metrics=("kid",))
    with pytest.raises(ValueError, match="unknown metrics"):
        evaluate_generator(sample_fn, 16, 8, backbone, real, metrics=("is",))
    other = FakeBackbone()
    other.variant = "other"
    with pytest.raises(ValueError, match="backbone"):
        evaluate_generator(sample_fn, 16, 8, other, real, metrics=("fid",))


def test_feature_stats_save_keeps_the_old_file_when_interrupted(rng, tmp_path, monkeypatch):
    path = tmp_path / "stats.npz"
    stats = FeatureStats(backbone="fake")
    stats.update(rng.normal(size=(5, 3)))
    stats.save(path)
    before = path.read_bytes()

    def killed(file, **arrays):
        file.write(b"half an npz")
        raise KeyboardInterrupt  # what a Ctrl-C in the middle of the write looks like

    monkeypatch.setattr(np, "savez", killed)
    stats.update(rng.normal(size=(5, 3)))
    with pytest.raises(KeyboardInterrupt):
        stats.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["stats.npz"]  # the partial file is gone


# --------------------------------------------------------------------------- metric registry


@pytest.fixture
def scratch_registry(monkeypatch):
    """Register test metrics into a copy of the registry, dropped after the test."""
    monkeypatch.setattr(registry, "_metric_dict", dict(registry._metric_dict))


def test_fid_kid_and_prdc_are_the_registered_metrics():
    assert list_valid_metrics() == ["fid", "kid", "prdc", "diversity"]
    assert is_valid_metric("kid") and is_valid_metric("prdc") and not is_valid_metric("pr")
    assert [m.needs_features for m in registry.lookup_metrics(["prdc", "kid", "fid", "kid"])] \
        == [False, True, True]


def test_registered_fid_and_kid_are_the_plain_formulas(tmp_path):
    backbone = FakeBackbone()
    real = real_stats(tmp_path, "d", 8, lambda: _image_batches(0, 60), backbone)
    fake = compute_stats(_image_batches(1, 50, shift=0.2), backbone, keep_features=True)
    options = MetricOptions(kid_subsets=7, kid_subset_size=40, seed=3)
    assert calc_metric("fid", real, fake, options) == {
        "fid": frechet_distance(real.mean(), real.cov(), fake.mean(), fake.cov())}
    mean, std = kernel_inception_distance(real.features, fake.features, 7, 40, 3)
    assert calc_metric("kid", real, fake, options) == {"kid_mean": mean, "kid_std": std,
                                                       "kid_subset_size": 40}
    # evaluate_generator reports exactly these, computed on the same fake statistics
    result = evaluate_generator(_sampler(1, shift=0.2)[0], 50, 16, backbone, real,
                                kid_subsets=7, kid_subset_size=40, seed=3)
    assert result == {"backbone": "fake", "num_fake": 50, "num_real": 60,
                      **calc_metric("fid", real, fake, options),
                      **calc_metric("kid", real, fake, options)}


def test_unknown_metric_names_list_the_valid_ones(tmp_path):
    real = FeatureStats()
    with pytest.raises(ValueError,
                       match=r"unknown metrics \['is', 'pr'\]; choose from fid, kid, prdc"):
        evaluate_generator(_sampler(1)[0], 16, 8, FakeBackbone(), real, metrics=("fid", "is", "pr"))
    with pytest.raises(ValueError, match="choose from fid, kid, prdc"):
        calc_metric("is", real, real)


def test_a_new_metric_is_one_function_and_a_decorator(tmp_path, scratch_registry):
    seen = {}

    @register_metric("mean_gap", needs_features=False)
    def mean_gap(real, fake, options):
        seen["fake_features"] = fake.features
        return {"mean_gap": float(np.abs(real.mean() - fake.mean()).max())}

    backbone = FakeBackbone()
    real = real_stats(tmp_path, "d", 8, lambda: _image_batches(0, 40), backbone)
    backbone.calls = 0
    result = evaluate_generator(_sampler(1)[0], 40, 16, backbone, real,
                                metrics=("mean_gap", "fid", "kid"), kid_subsets=3)
    assert backbone.calls == 3  # the generated images were embedded once, for all three metrics
    assert list(result) == ["backbone", "num_fake", "num_real", "fid", "kid_mean", "kid_std",
                            "kid_subset_size", "mean_gap"]  # registration order
    assert result["mean_gap"] > 0.0 and "mean_gap" in list_valid_metrics()

    evaluate_generator(_sampler(1)[0], 16, 16, backbone, real, metrics=("mean_gap",))
    assert seen["fake_features"] is None  # no metric needed rows, so none were kept
    with pytest.raises(ValueError, match="already registered"):
        register_metric("mean_gap", needs_features=False)(mean_gap)


def test_a_metric_needing_rows_refuses_stats_without_them(scratch_registry):
    register_metric("rows", needs_features=True)(lambda real, fake, options: {})
    with_rows, without = FeatureStats(keep_features=True), FeatureStats()
    for stats in (with_rows, without):
        stats.update(np.eye(3))
    assert calc_metric("rows", with_rows, with_rows) == {}
    with pytest.raises(ValueError, match="ROWS needs fake features"):
        calc_metric("rows", with_rows, without)
