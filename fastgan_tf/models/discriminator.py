"""FastGAN discriminator: two paths (full and small resolution) plus self-supervised decoders.

Reference architecture (ndf=64, resolution >= 256). Channel widths depend only on the SPATIAL size
of a feature, times ndf/64: big path {512: 8, 256: 16, 128: 32, 64: 64, 32: 128, 16: 256, 8: 512},
small path {64: 32, 32: 64, 16: 128, 8: 256}.

Big path (the image at ``resolution``)::

    down_from_big   stem, always ending at 256x256x16   (1024: two 4x4 s2 convs, 512: one,
                                                          256: a 3x3 s1 conv)
    down_128        DownBlockComp -> 128x128x32
    down_64         DownBlockComp ->  64x64x64
    down_32         DownBlockComp ->  32x32x128, then se_256_32 gated by the 256x256 stem output
    down_16         DownBlockComp ->  16x16x256, then se_128_16 gated by the 128x128 feature
    down_8          DownBlockComp ->   8x8x512,  then se_64_8   gated by the 64x64 feature
    rf_big          conv1x1 -> 1024, BN, LReLU, conv4x4 valid -> 5x5 logits

Small path (the image at ``small_resolution`` = 128)::

    down_from_small conv4x4 s2 -> 64x64x32, LReLU
    small_down_32/16/8  DownBlocks -> 8x8x256
    rf_small        conv4x4 valid -> 5x5 logits

The output is one flat float32 vector: the B*25 big-path logits, then the B*25 small-path ones.
A real batch is passed as one tensor; D takes the small view itself by nearest downsampling (torch
semantics, see ``imageops.nearest_resize``). G's outputs are passed as the list [big, small].

Decoders (real batches only, when ``part`` is given): three ``SimpleDecoder``s reconstruct
``recon_resolution`` images (128) from the 8x8 big feature (``decoder_big``), the 8x8 small feature
(``decoder_small``) and one 8x8 quadrant of the 16x16 big feature (``decoder_part``; part 0 =
top-left, 1 = top-right, 2 = bottom-left, 3 = bottom-right). The training loss compares them with
the (nearest-resized) real image and the matching quadrant of it.

Names versus the reference (which labels features nominally): feat_2/4/8/16/32/last -> the outputs
of down_from_big/down_128/down_64/down_32/down_16/down_8; se_2_16 -> se_256_32, se_4_32 ->
se_128_16, se_8_64 -> se_64_8; the reference's ``down_from_small`` Sequential -> down_from_small +
small_down_<s>.

Truncation for 64 and 128 (not in the reference): widths are still indexed by spatial size. The stem
``down_from_big`` is a conv3x3 s1 to the width of the input size + LReLU, followed by DownBlockComps
down to 8x8 (128: down_64 ... down_8; 64: down_32 ... down_8). SLE gates exist only where both ends
exist (128: se_128_16 and se_64_8; 64: se_64_8). ``small_resolution`` is resolution // 2 and the
small path is conv4x4 s2 followed by DownBlocks until 8x8. Decoders stop upsampling at
``recon_resolution`` = min(128, resolution). Parameter counts at ndf=64 (with / without decoders):
64: 10,923,520 / 7,892,416; 128: 11,427,968 / 8,288,480; 256: 11,526,160 / 8,386,672;
512: 11,526,496 / 8,387,008; 1024: 11,528,192 / 8,388,704.

Checkpoint keys follow the attribute names above.
"""

import tensorflow as tf
import keras

from fastgan_tf.imageops import nearest_resize, quadrant
from fastgan_tf.models import layers as L
from fastgan_tf.models.generator import check_resolution, small_resolution_for

BIG_MULT = {512: 0.125, 256: 0.25, 128: 0.5, 64: 1, 32: 2, 16: 4, 8: 8}
SMALL_MULT = {64: 0.5, 32: 1, 16: 2, 8: 4}
HEAD_MULT = 16                         # rf_big hidden width (the reference's nfc[4])
D_SLE = {32: 256, 16: 128, 8: 64}      # gated spatial size -> gating spatial size


class Discriminator(keras.Model):
    """FastGAN discriminator. ``call(inputs, part=None, training=True)``.

    ``inputs``: a real batch (B, resolution, resolution, channels), or G's outputs ``[big, small]``.
    Returns the flat float32 logits (B*50,), or with ``part`` (int or int32 scalar tensor in 0..3,
    real batches only) ``(logits, [rec_big, rec_small, rec_part])``, each float32
    (B, recon_resolution, recon_resolution, channels) in [-1, 1].

    Args:
        resolution: 64, 128, 256, 512 or 1024.
        ndf: width multiplier (64 in the reference).
        decoders: False omits the three decoders (ablation; ``part`` is then ignored).
        sync_bn: synchronise BatchNorm statistics across tf.distribute replicas.
        channels: image channels in and out of the decoders, 3 (the reference) or 1 (greyscale).
    """

    def __init__(self, resolution, ndf=64, decoders=True, sync_bn=False, name="discriminator",
                 channels=3, **kwargs):
        super().__init__(name=name, **kwargs)
        self.resolution = check_resolution(resolution)
        self.small_resolution = small_resolution_for(self.resolution)
        self.recon_resolution = min(128, self.resolution)
        self.ndf = int(ndf)
        self.has_decoders = bool(decoders)
        self.channels = int(channels)

        big = {s: int(m * self.ndf) for s, m in BIG_MULT.items()}
        small = {s: int(m * self.ndf) for s, m in SMALL_MULT.items()}
        if big[512 if self.resolution == 1024 else min(self.resolution, 256)] < 1:
            raise ValueError(f"ndf={ndf} is too small for resolution {resolution}")

        # Big path: stem, then DownBlockComps from the stem's output size down to 8x8.
        stem = min(self.resolution, 256)
        self.down_from_big = L.DownFromBig(self.resolution, big, sync_bn=sync_bn, name="down_from_big")
        self.big_sizes = [s for s in (128, 64, 32, 16, 8) if s < stem]
        for s in self.big_sizes:
            setattr(self, f"down_{s}", L.DownBlockComp(big[s], sync_bn=sync_bn, name=f"down_{s}"))
        self.gated = [s for s, src in D_SLE.items() if src <= stem]
        for s in self.gated:
            setattr(self, f"se_{D_SLE[s]}_{s}", L.SLE(big[s], name=f"se_{D_SLE[s]}_{s}"))
        self.rf_big = L.BigLogitHead(HEAD_MULT * self.ndf, sync_bn=sync_bn, name="rf_big")

        # Small path: conv4x4 s2, then DownBlocks down to 8x8.
        first = self.small_resolution // 2
        self.down_from_small = L.SNConv2D(small[first], 4, strides=2, padding=1, name="down_from_small")
        self.small_sizes = [s for s in (32, 16, 8) if s < first]
        for s in self.small_sizes:
            setattr(self, f"small_down_{s}", L.DownBlock(small[s], sync_bn=sync_bn, name=f"small_down_{s}"))
        self.rf_small = L.SNConv2D(1, 4, name="rf_small")

        if self.has_decoders:
            r = self.recon_resolution
            self.decoder_big = L.SimpleDecoder(r, sync_bn=sync_bn, channels=self.channels,
                                               name="decoder_big")
            self.decoder_small = L.SimpleDecoder(r, sync_bn=sync_bn, channels=self.channels,
                                                 name="decoder_small")
            self.decoder_part = L.SimpleDecoder(r, sync_bn=sync_bn, channels=self.channels,
                                                name="decoder_part")

    def build(self, input_shape=None):
        # Sub-layers create their variables during the first (eager) call; this skips Keras's
        # symbolic trace, which is slow and would mark the model built before every sub-layer is
        # (D's decoders only run when ``part`` is given). Use build_for_restore() to build fully.
        self.built = True

    # -- paths ------------------------------------------------------------------------------------

    def encode_big(self, big, training=False):
        """Big path features: a dict spatial size -> feature (SLE-gated where a gate exists)."""
        x = self.down_from_big(big, training=training)
        feats = {x.shape[1]: x}
        for s in self.big_sizes:
            x = getattr(self, f"down_{s}")(x, training=training)
            if s in self.gated:
                x = getattr(self, f"se_{D_SLE[s]}_{s}")(feats[D_SLE[s]], x, training=training)
            feats[s] = x
        return feats

    def encode_small(self, small, training=False):
        """Small path: the 8x8 feature."""
        x = L.lrelu(self.down_from_small(small, training=training))
        for s in self.small_sizes:
            x = getattr(self, f"small_down_{s}")(x, training=training)
        return x

    @staticmethod
    def crop_part(feat, part):
        """Quadrant ``part`` (0 TL, 1 TR, 2 BL, 3 BR) of a 16x16 feature, without retracing per part."""
        return quadrant(feat, tf.cast(part, "int32"))

    def call(self, inputs, part=None, training=True):
        if isinstance(inputs, (list, tuple)):
            big, small = inputs
            if part is not None and self.has_decoders:
                raise ValueError("part (reconstruction) is for real batches; pass one tensor")
        else:
            big = inputs
            if big.shape[1] is not None and big.shape[1] != self.resolution:
                raise ValueError(f"expected images of {self.resolution}px, got {big.shape[1]}px")
            small = nearest_resize(big, self.small_resolution)

        feats = self.encode_big(big, training=training)
        feat_small = self.encode_small(small, training=training)
        logits_big = tf.cast(self.rf_big(feats[8], training=training), "float32")
        logits_small = tf.cast(self.rf_small(feat_small, training=training), "float32")
        logits = tf.concat([tf.reshape(logits_big, [-1]), tf.reshape(logits_small, [-1])], axis=0)
        if part is None or not self.has_decoders:
            return logits

        rec_big = self.decoder_big(feats[8], training=training)
        rec_small = self.decoder_small(feat_small, training=training)
        rec_part = self.decoder_part(self.crop_part(feats[16], part), training=training)
        return logits, [rec_big, rec_small, rec_part]

    def build_for_restore(self, batch_size=2):
        """Create every variable (decoders included) by one call on zeros; changes no state.

        Call this before ``tf.train.Checkpoint.restore``.
        """
        x = tf.zeros((batch_size, self.resolution, self.resolution, self.channels))
        self(x, part=0 if self.has_decoders else None, training=False)
        return self
