"""FastGAN's losses as its official code computes them (reference section 4).

D: hinge with a random margin m = 0.8 + 0.2*U[0,1) drawn per logit (a label-smoothing trick; the
paper writes margin 1). G: -mean(D(G(z))), no clipping. Reconstruction of D's decoders: LPIPS-VGG
by default, returned per sample so that the trainer can sum it over the batch as the reference does.
All maths in float32, whatever the compute dtype of the inputs (mixed precision).
"""

import tensorflow as tf

from fastgan_tf.augment import uniform01

MARGIN_LOW, MARGIN_SPAN = 0.8, 0.2
RECON_LOSSES = ("lpips", "l1", "mse")


def _random_margin(logits, rng):
    return MARGIN_LOW + MARGIN_SPAN * uniform01(rng, tf.shape(logits))


def d_hinge_real(logits, rng):
    """mean(relu(m - l)) over all real logits, a fresh m in [0.8, 1.0) per logit."""
    logits = tf.cast(logits, tf.float32)
    return tf.reduce_mean(tf.nn.relu(_random_margin(logits, rng) - logits))


def d_hinge_fake(logits, rng):
    """mean(relu(m + l)) over all fake logits, a fresh m in [0.8, 1.0) per logit."""
    logits = tf.cast(logits, tf.float32)
    return tf.reduce_mean(tf.nn.relu(_random_margin(logits, rng) + logits))


def g_adversarial(logits):
    """-mean(l): G's loss on D's logits for its (augmented) fakes."""
    return -tf.reduce_mean(tf.cast(logits, tf.float32))


def _per_sample_mean(x):
    return tf.reduce_mean(tf.reshape(x, [tf.shape(x)[0], -1]), axis=1)


def l1_per_sample(pred, target):
    """mean |pred - target| over H, W, C: shape (B,)."""
    return _per_sample_mean(tf.abs(pred - target))


def mse_per_sample(pred, target):
    """mean (pred - target)^2 over H, W, C: shape (B,)."""
    return _per_sample_mean(tf.square(pred - target))


def reconstruction_loss(kind, vgg_weights="imagenet", lpips_precision="float32"):
    """Return fn(pred, target) -> (B,) float32 loss per sample for the decoders.

    kind: 'lpips' (the reference's LPIPS-VGG v0.1; builds VGG16, see `fastgan_tf.lpips`), 'l1' or
    'mse' (no weights needed, e.g. offline). Inputs are NHWC in [-1, 1] of the same size; `target`
    is wrapped in stop_gradient because the decoders chase the (augmented) real image, not the
    other way round. For 'lpips' the function has an `lpips` attribute holding the Keras layer.
    `fn.pairs(preds, targets)` gives the per-sample losses of several pairs at once (LPIPS then
    runs VGG16 once on all predictions and once, off the tape, on each distinct target).
    `lpips_precision` is LPIPS's `precision` ("bf16": VGG16's blocks 3-5 in bfloat16).
    """
    if kind not in RECON_LOSSES:
        raise ValueError(f"Unknown reconstruction loss {kind!r}; valid: {', '.join(RECON_LOSSES)}.")
    if kind == "lpips":
        from fastgan_tf.lpips import LPIPS  # imported lazily: l1/mse users never build VGG16

        metric = LPIPS(vgg_weights=vgg_weights, precision=lpips_precision)
        distance = metric
    else:
        metric = None
        distance = l1_per_sample if kind == "l1" else mse_per_sample

    def fn(pred, target):
        pred = tf.cast(pred, tf.float32)
        target = tf.stop_gradient(tf.cast(target, tf.float32))
        return distance(pred, target)

    def pairs(preds: list, targets: list) -> list:
        if metric is None:
            return [fn(p, t) for p, t in zip(preds, targets)]
        cast = {}  # a shared target stays one tensor (LPIPS computes each distinct one once)
        return metric.pairs([tf.cast(p, tf.float32) for p in preds],
                            [cast.setdefault(id(t), tf.cast(t, tf.float32)) for t in targets])

    fn.pairs = pairs
    fn.kind = kind
    fn.lpips = metric
    fn.__name__ = f"{kind}_reconstruction_loss"
    return fn
