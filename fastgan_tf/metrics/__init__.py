"""Evaluation metrics: FID and KID on Inception features, streamed batch by batch.

Typical use (the generator enters only as a callable):

    backbone = load_backbone("keras")                      # or "standard" for paper-comparable FID
    real = real_stats(cache_dir, fingerprint, 256, lambda: real_batches(), backbone)
    result = evaluate_generator(sample_fn, 5000, 32, backbone, real)
    # {"backbone": "keras", "num_fake": 5000, "num_real": 1000, "fid": ..., "kid_mean": ..., ...}
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

__all__ = [
    "BACKBONES",
    "FEATURE_DIM",
    "Backbone",
    "FeatureStats",
    "KerasInception",
    "SingularCovarianceWarning",
    "StandardInception",
    "backbone_weights_available",
    "backbone_weights_path",
    "compute_stats",
    "evaluate_generator",
    "frechet_distance",
    "kernel_inception_distance",
    "load_backbone",
    "real_stats",
    "real_stats_path",
    "to_pixels",
]
