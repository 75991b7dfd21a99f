"""FastGAN generator: a latent vector up-sampled stage by stage, with skip-layer excitation.

Architecture (reference, ngf=64, nz=256; channels nfc[r] = int(mult[r] * ngf) with
mult = {4: 16, 8: 8, 16: 4, 32: 2, 64: 2, 128: 1, 256: 0.5, 512: 0.25, 1024: 0.125}):

    z (B, 256) --init--> feat_4 (4x4x1024)       init = ConvTranspose 4x4 on z as a 1x1 map
                                                        -> BN -> GLU (a spectrally normed dense map)
    feat_8    UpBlockComp 1024->512              "comp" = two convs with noise injection
    feat_16   UpBlock      512->256              "simple" = one conv
    feat_32   UpBlockComp  256->128
    feat_64   UpBlock      128->128   then se_64:  gated by feat_4
    feat_128  UpBlockComp  128->64    then se_128: gated by feat_8
    feat_256  UpBlock       64->32    then se_256: gated by feat_16
    feat_512  UpBlockComp   32->16    then se_512: gated by feat_32
    feat_1024 UpBlock       16->8     (no gate)

Every up block is nearest x2 -> conv3x3 to 2*out channels -> (noise) -> BN -> GLU. An SLE gate
turns a low-resolution feature into per-channel weights in (0, 1) that multiply the high-resolution
feature; the gated tensor feeds the next stage. Two heads:

* ``to_big``: conv3x3 -> 3 on the last feature (the image at ``resolution``);
* ``to_small``: conv1x1 -> 3 on the feature at ``small_resolution`` (the reference's ``to_128``),
  a side output fed to D's small path.

(1 instead of 3 with ``channels=1``, for greyscale models.)

Both heads are raw conv outputs except at 1024, where the reference applies tanh (``output_tanh``
overrides this). All convs are bias-free and spectrally normalised (see layers.py).

Truncation for 64 and 128 (not in the reference, which supports 256/512/1024 only): the same stage
table is cut at the output resolution; an SLE gate exists only if its target stage does (64 has
se_64, 128 has se_64 and se_128); ``small_resolution`` is resolution // 2, so ``to_small`` sits on
feat_32 (at 64) or on the gated feat_64 (at 128). Parameter counts at ngf=64, nz=256:
64: 28,211,460; 128: 28,959,814; 256: 29,127,846; 512: 29,174,392; 1024: 29,176,512.

``call`` runs in two stages: ``features`` (init and the stages below 64: feat_4 .. feat_32, every
feature that gates a later stage) and ``synthesize`` (stage 64 up and the heads, each SLE gate fed
from a given dict of features). Style mixing (generation.py) feeds the gates from other latents.

Checkpoint keys follow the attribute names: ``init``, ``init_bn``, ``feat_<r>``, ``se_<r>``, ``to_big``,
``to_small``.
"""

import random

import tensorflow as tf
import keras

from fastgan_tf.models import layers as L
from fastgan_tf.models.saving import BuiltByCall

RESOLUTIONS = (64, 128, 256, 512, 1024)
G_MULT = {4: 16, 8: 8, 16: 4, 32: 2, 64: 2, 128: 1, 256: 0.5, 512: 0.25, 1024: 0.125}
COMP_STAGES = (8, 32, 128, 512)          # UpBlockComp; the others are UpBlock
SLE_SOURCES = {64: 4, 128: 8, 256: 16, 512: 32}  # gated stage -> gating stage
SYNTHESIS_START = min(SLE_SOURCES)  # the first gated stage: `features` stops below it


def check_resolution(resolution):
    if resolution not in RESOLUTIONS:
        allowed = ", ".join(str(r) for r in RESOLUTIONS)
        raise ValueError(f"resolution must be one of {allowed}; got {resolution!r}")
    return int(resolution)


def small_resolution_for(resolution):
    """The side output's resolution: 128 for >= 256 (reference), resolution // 2 below."""
    return 128 if resolution >= 256 else resolution // 2


@keras.saving.register_keras_serializable(package="fastgan_tf")
class Generator(BuiltByCall, keras.Model):
    """FastGAN generator. ``call(z, training=True, noise_seed=None) -> [image_big, image_small]``.

    Args:
        resolution: 64, 128, 256, 512 or 1024.
        ngf: width multiplier (64 in the reference).
        nz: latent size (256 in the reference's train.py).
        output_tanh: None = reference behaviour (tanh only at 1024); True/False forces it.
        sle: False drops the SLE gates (ablation).
        channels: image channels of both heads, 3 (RGB, the reference) or 1 (greyscale).
        sync_bn: synchronise BatchNorm statistics across tf.distribute replicas.
        seed: base seed for the NoiseInjection layers (None: drawn from Python's ``random``, so
            ``keras.utils.set_random_seed`` makes it reproducible).

    ``training`` controls state updates only (SN u, BN moving averages, noise seed counters);
    BatchNorm always uses batch statistics. ``noise_seed`` (int tensor [2]) makes the noise a
    pure function of the seed and changes no state.
    """

    def __init__(self, resolution, ngf=64, nz=256, output_tanh=None, sle=True, sync_bn=False,
                 seed=None, name="generator", channels=3, **kwargs):
        super().__init__(name=name, **kwargs)
        self.resolution = check_resolution(resolution)
        self.small_resolution = small_resolution_for(self.resolution)
        self.ngf, self.nz = int(ngf), int(nz)
        self.output_tanh = (self.resolution == 1024) if output_tanh is None else bool(output_tanh)
        self.use_sle = bool(sle)
        self.channels = int(channels)
        self.seed = random.getrandbits(31) if seed is None else int(seed)

        nfc = {r: int(m * self.ngf) for r, m in G_MULT.items()}
        if min(nfc[r] for r in nfc if r <= self.resolution) < 1:
            raise ValueError(f"ngf={ngf} is too small for resolution {resolution}")

        self.stages = [r for r in (8, 16, 32, 64, 128, 256, 512, 1024) if r <= self.resolution]
        self.init = L.SNLatentConvTranspose(2 * nfc[4], size=4, name="init")
        self.init_bn = L.BatchNorm(sync=sync_bn, name="init_bn")
        noise_index = 0
        for r in self.stages:
            if r in COMP_STAGES:
                seeds = (L.derive_seed(self.seed, noise_index), L.derive_seed(self.seed, noise_index + 1))
                block = L.UpBlockComp(nfc[r], sync_bn=sync_bn, noise_index=noise_index, seeds=seeds,
                                      name=f"feat_{r}")
                noise_index += 2
            else:
                block = L.UpBlock(nfc[r], sync_bn=sync_bn, name=f"feat_{r}")
            setattr(self, f"feat_{r}", block)
        self.gated = [r for r in SLE_SOURCES if r <= self.resolution] if self.use_sle else []
        for r in self.gated:
            setattr(self, f"se_{r}", L.SLE(nfc[r], name=f"se_{r}"))
        self.to_big = L.SNConv2D(self.channels, 3, padding=1, name="to_big")
        self.to_small = L.SNConv2D(self.channels, 1, name="to_small")

    def build(self, input_shape=None):
        # Sub-layers create their variables during the first (eager) call; this skips Keras's
        # symbolic trace, which is slow and would mark the model built before every sub-layer is
        # (D's decoders only run when ``part`` is given). Use build_for_restore() to build fully.
        self.built = True

    def call(self, z, training=True, noise_seed=None):
        feats = self.features(z, training=training, noise_seed=noise_seed)
        return self.synthesize(feats, feats, training=training, noise_seed=noise_seed)

    def features(self, z, training=True, noise_seed=None):
        """The feature stage: ``{4: feat_4, 8: feat_8, 16: feat_16, 32: feat_32}`` of latents z.

        These are the stages below the first SLE gate, i.e. every feature that gates a later
        stage. Split off from ``call`` so that style mixing can take them from other latents.
        """
        x = self.init(tf.reshape(z, (-1, self.nz)), training=training)
        feats = {4: L.glu(self.init_bn(x, training=training))}
        for r in self.stages:
            if r < SYNTHESIS_START:
                feats[r] = self._stage(r, feats, feats, training, noise_seed)
        return feats

    def synthesize(self, content, gates, training=True, noise_seed=None):
        """The synthesis stage: continue ``content`` (a ``features`` dict) to ``[big, small]``.

        Stage r >= 64 is gated by ``gates[SLE_SOURCES[r]]``, a ``features`` dict of the same or
        of other latents (style mixing). A gate whose source is missing from ``gates`` is left
        out, which is how style mixing skips se_64.
        """
        feats = dict(content)
        for r in self.stages:
            if r >= SYNTHESIS_START:
                feats[r] = self._stage(r, feats, gates, training, noise_seed)
        big = tf.cast(self.to_big(feats[self.resolution], training=training), "float32")
        small = tf.cast(self.to_small(feats[self.small_resolution], training=training), "float32")
        if self.output_tanh:
            big, small = tf.tanh(big), tf.tanh(small)
        return [big, small]

    def _stage(self, r, feats, gates, training, noise_seed):
        """feat_r from the previous stage's feature, then its SLE gate (if it has one and
        ``gates`` holds its source)."""
        x = getattr(self, f"feat_{r}")(feats[r // 2], training=training, noise_seed=noise_seed)
        if r in self.gated and SLE_SOURCES[r] in gates:
            x = getattr(self, f"se_{r}")(gates[SLE_SOURCES[r]], x, training=training)
        return x

    def build_for_restore(self, batch_size=2):
        """Create every variable by one call on zeros (training=False: no state changes).

        Call this before ``tf.train.Checkpoint.restore`` (restoring into unbuilt Keras 3 models
        silently corrupts them).
        """
        self(tf.zeros((batch_size, self.nz)), training=False)
        return self

    # Keras serialization, so that ``model.save("g.keras")`` and ``keras.saving.load_model``
    # work (with fastgan_tf imported, which registers the class).
    def get_config(self):
        return {"resolution": self.resolution, "ngf": self.ngf, "nz": self.nz,
                "output_tanh": self.output_tanh, "sle": self.use_sle, "seed": self.seed,
                "channels": self.channels,
                "name": self.name}

