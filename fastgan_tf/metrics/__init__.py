"""Evaluation metrics on Inception features, streamed batch by batch: FID, KID, precision/recall
and density/coverage ("prdc"), and any metric registered with `register_metric` (see
registry.py).

Typical use (the generator enters only as a callable):

    backbone = load_backbone("keras")                      # or "standard" for paper-comparable FID
    real = real_stats(cache_dir, fingerprint, 256, lambda: real_batches(), backbone)
    result = evaluate_generator(sample_fn, 5000, 32, backbone, real, metrics=("fid", "kid"))
    # {"backbone": "keras", "num_fake": 5000, "num_real": 1000, "fid": ..., "kid_mean": ..., ...}

For a FastGAN generator and its training set, `fastgan_tf.metrics.scoring` does the above.
"""

from fastgan_tf.metrics.backbones import (
    BACKBONES,
    FEATURE_DIM,
    Backbone,
    KerasInception,
    StandardInception,
    backbone_weights_available,
    backbone_weights_path,
    load_backbone,
    to_pixels,
)
from fastgan_tf.metrics.features import (
    FeatureStats,
    compute_stats,
    evaluate_generator,
    real_stats,
    real_stats_path,
)
from fastgan_tf.metrics.frechet import SingularCovarianceWarning, frechet_distance
from fastgan_tf.metrics.kid import kernel_inception_distance
from fastgan_tf.metrics.prdc import precision_recall_density_coverage
from fastgan_tf.metrics.registry import (
    DEFAULT_METRICS,
    MetricOptions,
    PartialFeaturesWarning,
    calc_metric,
    is_valid_metric,
    list_valid_metrics,
    register_metric,
)

__all__ = [
    "BACKBONES",
    "Backbone",
    "DEFAULT_METRICS",
    "FEATURE_DIM",
    "FeatureStats",
    "KerasInception",
    "MetricOptions",
    "PartialFeaturesWarning",
    "SingularCovarianceWarning",
    "StandardInception",
    "backbone_weights_available",
    "backbone_weights_path",
    "calc_metric",
    "compute_stats",
    "evaluate_generator",
    "frechet_distance",
    "is_valid_metric",
    "kernel_inception_distance",
    "list_valid_metrics",
    "load_backbone",
    "precision_recall_density_coverage",
    "real_stats",
    "real_stats_path",
    "register_metric",
    "to_pixels",
]
