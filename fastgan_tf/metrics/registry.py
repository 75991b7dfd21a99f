"""Evaluation metrics by name, in the manner of StyleGAN2-ADA's metric_main.

An evaluation runs the real and the generated images through the backbone once, into two
FeatureStats; every requested metric is then a function of those two statistics, so asking for
more metrics never generates or embeds more images. Adding a metric is one function plus one
decorator that names it and says whether it reads the kept feature rows (`stats.features`) or
only the mean and covariance:

    @register_metric("mean_gap", needs_features=False)
    def mean_gap(real, fake, options):
        return {"mean_gap": float(abs(real.mean() - fake.mean()).max())}  # JSON-friendly keys

`needs_features` decides whether the generated features are kept during the evaluation, and
whether cached real statistics without rows can serve it. Registered below: "fid", "kid"
(kid_mean, kid_std) and "prdc" (precision, recall, density, coverage; see prdc.py).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from fastgan_tf.metrics.diversity import Reference
from fastgan_tf.metrics.frechet import frechet_distance
from fastgan_tf.metrics.kid import kernel_inception_distance
from fastgan_tf.metrics.prdc import (
    DC_NEIGHBOURS,
    PR_NEIGHBOURS,
    precision_recall_density_coverage,
)
from fastgan_tf.metrics.stats import FeatureStats

DEFAULT_METRICS = ("fid", "kid")


@dataclass(frozen=True)
class MetricOptions:
    """The settings of all metrics, in one object so that every metric has the same signature."""

    kid_subsets: int = 100  # random subsets the KID estimate is averaged over
    kid_subset_size: int = 1000  # clipped to the smaller feature set
    seed: int = 0  # draws the KID subsets
    pr_k: int = PR_NEIGHBOURS  # neighbours of precision and recall (3, Kynkaanniemi et al.)
    dc_k: int = DC_NEIGHBOURS  # neighbours of density and coverage (5, Naeem et al.)


class PartialFeaturesWarning(RuntimeWarning):
    """A metric read only the kept rows (FeatureStats.max_keep), not every image's features."""


MetricFn = Callable[[FeatureStats, FeatureStats, MetricOptions], dict]


@dataclass(frozen=True)
class Metric:
    """A registered metric: `fn(real, fake, options) -> dict` and what it needs from the stats."""

    name: str
    fn: MetricFn
    needs_features: bool

    def check_stats(self, stats: FeatureStats, which: str) -> None:
        """Fail early, before any image is generated, if `stats` lack the rows this metric reads."""
        if self.needs_features and stats.features is None:
            raise ValueError(f"{self.name.upper()} needs {which} features: compute the {which} "
                             "stats with keep_features=True")

    def compute(self, real: FeatureStats, fake: FeatureStats, options: MetricOptions) -> dict:
        self.check_stats(real, "real")
        self.check_stats(fake, "fake")
        return self.fn(real, fake, options)


_metric_dict: dict[str, Metric] = {}  # name -> Metric, in registration order


def register_metric(name: str, *, needs_features: bool) -> Callable[[MetricFn], MetricFn]:
    """Decorator: make `fn(real, fake, options) -> dict` available as metric `name`."""

    def register(fn: MetricFn) -> MetricFn:
        if name in _metric_dict:
            raise ValueError(f"metric {name!r} is already registered")
        _metric_dict[name] = Metric(name, fn, needs_features)
        return fn

    return register


def is_valid_metric(name: str) -> bool:
    return name in _metric_dict


def list_valid_metrics() -> list[str]:
    return list(_metric_dict)


def lookup_metrics(names: Iterable[str]) -> list[Metric]:
    """The metrics `names`, each once, in registration order (so result keys come in a fixed
    order); unknown names are a ValueError that lists the valid ones."""
    names = {names} if isinstance(names, str) else set(names)
    unknown = sorted(names - set(_metric_dict))
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; choose from "
                         f"{', '.join(list_valid_metrics())}")
    return [metric for name, metric in _metric_dict.items() if name in names]


def calc_metric(name: str, real: FeatureStats, fake: FeatureStats,
                options: MetricOptions | None = None) -> dict:
    """Metric `name` of two existing statistics (e.g. two cached .npz files)."""
    (metric,) = lookup_metrics([name])
    return metric.compute(real, fake, options or MetricOptions())


# --------------------------------------------------------------------------- the metrics


@register_metric("fid", needs_features=False)
def fid(real: FeatureStats, fake: FeatureStats, options: MetricOptions) -> dict:
    """Frechet distance of the two Gaussians (mean, covariance) fitted to the features."""
    return {"fid": frechet_distance(real.mean(), real.cov(), fake.mean(), fake.cov(),
                                    n1=real.count, n2=fake.count)}


@register_metric("kid", needs_features=True)
def kid(real: FeatureStats, fake: FeatureStats, options: MetricOptions) -> dict:
    """Kernel Inception Distance over random subsets of the kept feature rows."""
    mean, std = kernel_inception_distance(real.features, fake.features, options.kid_subsets,
                                          options.kid_subset_size, options.seed)
    subset_size = min(options.kid_subset_size, len(real.features), len(fake.features))
    return {"kid_mean": mean, "kid_std": std, "kid_subset_size": int(subset_size)}


@register_metric("prdc", needs_features=True)
def prdc(real: FeatureStats, fake: FeatureStats, options: MetricOptions) -> dict:
    """Precision and recall (k = pr_k), density and coverage (k = dc_k) of the kept feature rows.

    One metric with four keys, not four metrics: all of them read the same k-NN radii and one
    pass over the real-generated distances, which would otherwise be computed up to four times.
    The rows used are reported (prdc_num_real/fake) and a warning says when they are fewer than
    the images, i.e. when FeatureStats kept only its first max_keep rows.
    """
    for stats, which in ((real, "real"), (fake, "generated")):
        _warn_if_partial(stats, which)
    scores = precision_recall_density_coverage(real.features, fake.features, options.pr_k,
                                               options.dc_k)
    return {**scores, "pr_k": options.pr_k, "dc_k": options.dc_k,
            "prdc_num_real": len(real.features), "prdc_num_fake": len(fake.features)}


@register_metric("diversity", needs_features=True)
def diversity(real: FeatureStats, fake: FeatureStats, options: MetricOptions) -> dict:
    """How varied the samples are against the training images (1: alike, near 0: collapse), and
    the share sitting next to a training image (memorisation); see metrics/diversity.py."""
    return Reference.of(real.features, seed=options.seed).compare(fake.features)


def _warn_if_partial(stats: FeatureStats, which: str) -> None:
    kept = len(stats.features)
    if kept < stats.count:
        warnings.warn(f"precision/recall/density/coverage use the first {kept} of {stats.count} "
                      f"{which} images' features (max_keep {stats.max_keep})",
                      PartialFeaturesWarning, stacklevel=3)
