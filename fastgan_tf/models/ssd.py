"""Spectral Style-DCGAN (SSD), a small 64x64 baseline (Garg, ICLR 2024 Tiny Papers, appendix A.5).

Generator (nz=100, ngf=64; 3,809,104 trainable parameters)::

    z (B, 100) -> mapping: 4 x [Linear 100->100, LeakyReLU 0.2] -> style w (B, 100)
    z as a 1x1 map -> ConvT 4x4 s1 p0 -> 4x4x512  -> AdaIN(w) -> ReLU
                   -> ConvT 4x4 s2 p1 -> 8x8x256  -> AdaIN(w) -> ReLU
                   -> ConvT 4x4 s2 p1 -> 16x16x128 -> AdaIN(w) -> ReLU
                   -> ConvT 4x4 s2 p1 -> 32x32x64 -> AdaIN(w) -> ReLU
                   -> ConvT 4x4 s2 p1 -> 64x64x3  -> tanh

Discriminator (ndf=64; 2,765,568 trainable parameters)::

    64x64x3 -> SNConv 4x4 s2 p1 -> 32x32x64  -> LReLU 0.2
            -> SNConv 4x4 s2 p1 -> 16x16x128 -> BN -> LReLU 0.2
            -> SNConv 4x4 s2 p1 -> 8x8x256   -> BN -> LReLU 0.2
            -> SNConv 4x4 s2 p1 -> 4x4x512   -> BN -> LReLU 0.2
            -> SNConv 4x4 valid -> 1x1x1 logit

Details the paper leaves open, chosen as the DCGAN convention that reproduces its two counts:

* All convolutions are bias-free with 4x4 kernels and DCGAN widths (ngf*8 .. ngf, ndf .. ndf*8).
  G: convs 3,574,784 + mapping 4*(100*100+100) = 40,400 + AdaIN 2*(100*C+C) for
  C = 512, 256, 128, 64 = 193,920. D: convs 2,763,776 + BN (gamma, beta) 2*(128+256+512) = 1,792.
* The paper says every D conv is followed by BatchNorm and LeakyReLU; only BN on the middle three
  matches the published count (DCGAN: no BN on the input layer, and the last conv is the logit).
* Spectral norm on D only: the paper speaks of a "spectral normalized discriminator" and of SN
  helping the generator *implicitly*. D uses ``layers.SNConv2D`` (PyTorch semantics: raw kernel
  trainable, u a buffer, gradient through W / sigma).
* AdaIN: IN(x) * (1 + gamma(w)) + beta(w), instance norm eps 1e-5 without affine. The "1 +" keeps
  the scale near 1 at initialisation (same as StyleGAN's scale-bias init of 1) instead of ~0.
* Transposed convs are Keras ``Conv2DTranspose`` with "same" padding for stride 2: TF pads the
  full transposed output by (k - s) = 2 split 1/1, i.e. it crops one pixel on each side exactly
  like torch's ConvTranspose2d(padding=1) (checked numerically in tests/test_ssd.py).
* Init as the DCGAN example: convs N(0, 0.02), BN gamma N(1, 0.02), beta 0. Linear layers keep
  torch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias (DCGAN's init only
  touches conv and BN layers).
* D's BatchNorm is plain Keras BatchNormalization (momentum 0.9 = torch's 0.1, eps 1e-5): batch
  statistics when training, moving averages at inference. G has no BatchNorm.

Training recipe (``SSD_DEFAULTS``): BCE from logits, one D step per G step, Adam(5e-4, 0.5, 0.999),
batch 32, 64x64.
"""

import math

import tensorflow as tf
import keras

from fastgan_tf.models import layers as L
from fastgan_tf.models.saving import BuiltByCall

SSD_DEFAULTS = {"resolution": 64, "batch_size": 32, "lr": 5e-4, "nz": 100, "ngf": 64, "ndf": 64}
SSD_BETAS = (0.5, 0.999)
MAPPING_DEPTH = 4
IN_EPS = 1e-5


def _conv_init():
    # Fresh instance per layer: a Keras initializer fixes its seed when constructed.
    return keras.initializers.RandomNormal(mean=0.0, stddev=0.02)


def _torch_linear_init(fan_in):
    """torch.nn.Linear's default for weight and bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)
    return keras.initializers.RandomUniform(-bound, bound)


class TorchDense(keras.layers.Dense):
    """Dense (with bias) initialised like torch.nn.Linear; fan_in is known only at build time."""

    def build(self, input_shape):
        fan_in = int(input_shape[-1])
        self.kernel_initializer = _torch_linear_init(fan_in)
        self.bias_initializer = _torch_linear_init(fan_in)
        super().build(input_shape)


def instance_norm(x, eps=IN_EPS):
    """Per-sample, per-channel normalisation over H, W (biased variance, no affine), in float32."""
    x = tf.cast(x, "float32")
    mean, var = tf.nn.moments(x, axes=(1, 2), keepdims=True)
    return (x - mean) * tf.math.rsqrt(var + eps)


class AdaIN(keras.layers.Layer):
    """Adaptive instance norm: IN(x) * (1 + gamma(w)) + beta(w), gamma/beta Linear(w_dim -> C)."""

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)
        self.scale = TorchDense(self.channels, name="scale")
        self.bias = TorchDense(self.channels, name="bias")

    def call(self, x, w):
        gamma = tf.cast(self.scale(w), "float32")[:, None, None, :]
        beta = tf.cast(self.bias(w), "float32")[:, None, None, :]
        return tf.cast(instance_norm(x) * (1.0 + gamma) + beta, self.compute_dtype)


def conv_transpose(filters, first=False, name=None):
    """Bias-free 4x4 ConvTranspose: 1x1 -> 4x4 (torch stride 1, pad 0) or x2 (stride 2, pad 1)."""
    return keras.layers.Conv2DTranspose(
        filters, 4, strides=1 if first else 2, padding="valid" if first else "same",
        use_bias=False, kernel_initializer=_conv_init(), name=name,
    )


def _name_for_checkpoints(model, layers):
    """Also hold each layer as a named attribute: `tf.train.Checkpoint` follows attributes but
    silently skips layers kept only in Python lists (verified: 0 of 51 variables were saved)."""
    for layer in layers:
        setattr(model, layer.name, layer)


@keras.saving.register_keras_serializable(package="fastgan_tf")
class SSDGenerator(BuiltByCall, keras.Model):
    """SSD generator. ``call(z, training=True, noise_seed=None) -> [image]``, one float32
    (B, 64, 64, channels) image in [-1, 1], in a list like FastGAN's ``[image, image_small]``.

    ``training`` and ``noise_seed`` are accepted for that uniform API; this G has no state or
    noise that depends on them.
    """

    resolution = 64

    def __init__(self, nz=100, ngf=64, name="ssd_generator", channels=3, **kwargs):
        super().__init__(name=name, **kwargs)
        self.nz, self.ngf, self.channels = int(nz), int(ngf), int(channels)
        widths = [self.ngf * m for m in (8, 4, 2, 1)]
        self.mapping = [TorchDense(self.nz, name=f"map_{i}") for i in range(MAPPING_DEPTH)]
        self.ups = [conv_transpose(c, first=(i == 0), name=f"up_{i}") for i, c in enumerate(widths)]
        self.ups.append(conv_transpose(self.channels, name=f"up_{len(widths)}"))
        self.adains = [AdaIN(c, name=f"adain_{i}") for i, c in enumerate(widths)]
        _name_for_checkpoints(self, self.mapping + self.ups + self.adains)

    def style(self, z):
        """The mapping network: z -> w (each Linear followed by LeakyReLU 0.2)."""
        w = tf.reshape(z, (-1, self.nz))
        for dense in self.mapping:
            w = L.lrelu(dense(w))
        return w

    def call(self, z, training=True, noise_seed=None):
        w = self.style(z)
        x = tf.reshape(z, (-1, 1, 1, self.nz))
        for up, adain in zip(self.ups, self.adains):
            x = tf.nn.relu(adain(up(x), w))
        return [tf.tanh(tf.cast(self.ups[-1](x), "float32"))]

    def build_for_restore(self, batch_size=2):
        """Create every variable by one state-free call (do this before restoring a checkpoint)."""
        self(tf.zeros((batch_size, self.nz)), training=False)
        return self

    def get_config(self):
        return {"nz": self.nz, "ngf": self.ngf, "name": self.name, "channels": self.channels}


class SSDDiscriminator(keras.Model):
    """SSD discriminator. ``call(images, training=True) -> (B,)`` float32 logits.

    ``training=True`` normalises with batch statistics and updates BN moving averages and the SN
    u vectors; ``training=False`` uses the moving averages and changes no state.
    """

    def __init__(self, ndf=64, name="ssd_discriminator", **kwargs):
        super().__init__(name=name, **kwargs)
        self.ndf = int(ndf)
        widths = [self.ndf * m for m in (1, 2, 4, 8)]
        self.convs = [L.SNConv2D(c, 4, strides=2, padding=1, name=f"conv_{i}")
                      for i, c in enumerate(widths)]
        self.convs.append(L.SNConv2D(1, 4, name=f"conv_{len(widths)}"))
        # BN after conv_1..conv_3 only (see the module docstring: it is what the count implies).
        self.bns = [None] + [
            keras.layers.BatchNormalization(
                momentum=0.9, epsilon=1e-5, name=f"bn_{i}",
                gamma_initializer=keras.initializers.RandomNormal(mean=1.0, stddev=0.02),
            )
            for i in (1, 2, 3)
        ]
        _name_for_checkpoints(self, self.convs + self.bns[1:])

    def call(self, images, training=True):
        x = images
        for conv, bn in zip(self.convs, self.bns):
            x = conv(x, training=training)
            if bn is not None:
                x = bn(x, training=training)
            x = L.lrelu(x)
        logits = self.convs[-1](x, training=training)
        return tf.reshape(tf.cast(logits, "float32"), (-1,))

    def build_for_restore(self, batch_size=2, resolution=64, channels=3):
        """Create every variable by one state-free call (do this before restoring a checkpoint)."""
        self(tf.zeros((batch_size, resolution, resolution, channels)), training=False)
        return self


def _bce_with_logits(logits, label):
    logits = tf.cast(logits, "float32")
    labels = tf.fill(tf.shape(logits), tf.constant(label, "float32"))
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits))


def bce_d_loss(real_logits, fake_logits):
    """BCE(D(x), 1) + BCE(D(G(z)), 0), each a batch mean (torch DCGAN: errD_real + errD_fake)."""
    return _bce_with_logits(real_logits, 1.0) + _bce_with_logits(fake_logits, 0.0)


def bce_g_loss(fake_logits):
    """Non-saturating G loss: BCE(D(G(z)), 1) = mean softplus(-logit)."""
    return _bce_with_logits(fake_logits, 1.0)


__all__ = [
    "SSDGenerator", "SSDDiscriminator", "AdaIN", "bce_d_loss", "bce_g_loss", "SSD_DEFAULTS",
    "SSD_BETAS",
]
