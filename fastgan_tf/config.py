"""Training configuration: one dataclass, filled from defaults < dataset presets < YAML < CLI.

Every run writes its resolved configuration to ``<run>/config.yaml``. Unknown keys and values of
the wrong type are user errors, never silently ignored: a typo in a config file must not train a
different model than the one the user asked for.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from fastgan_tf.errors import UserError

RESOLUTIONS = (64, 128, 256, 512, 1024)
RECON_LOSSES = ("lpips", "l1", "mse")
PRECISION_MODES = ("auto", "on", "off")
AUGMENT_OPS = ("color", "translation", "cutout")
FID_BACKBONES = ("keras", "standard")
STRATEGIES = ("auto", "one", "mirrored", "multiworker")
MODELS = ("fastgan", "ssd")
CHANNELS = (1, 3)
CROPS = ("none", "center")
NAMED_BACKGROUNDS = {"white": (255, 255, 255), "black": (0, 0, 0)}
BACKGROUND_FORMS = "white, black, #RRGGBB or R,G,B (each 0-255)"


@dataclass
class TrainConfig:
    """Everything that defines a training run. Defaults reproduce the reference FastGAN."""

    # Data
    dataset: str = ""
    data_dir: str | None = None  # cache for named datasets; default: FASTGAN_DATA or user cache
    resolution: int = 256
    channels: int = 3  # 1 trains greyscale models (images converted to luma), 3 is RGB
    crop: str = "none"  # non-square images: "none" squashes (the reference), "center" crops
    background: str = "white"  # colour transparent pixels are composited on
    # Model (defaults are the reference architecture)
    model: str = "fastgan"  # or "ssd", the Spectral Style-DCGAN baseline (64x64)
    sle: bool = True  # skip-layer excitation in G (False: the paper's ablation)
    decoders: bool = True  # D's self-supervised decoders (False: the paper's ablation)
    ngf: int = 64
    ndf: int = 64
    nz: int = 256
    output_tanh: bool | None = None  # None: reference behaviour (tanh only at 1024)
    # Objective and optimisation (reference values)
    recon_loss: str = "lpips"
    vgg_weights: str | None = None  # path to the Keras VGG16 notop .h5; None: Keras cache
    augment: str = "color,translation"
    batch_size: int = 8
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    ema_decay: float = 0.999
    # Schedule
    epochs: int = 100
    sample_every: int = 10  # epochs
    checkpoint_every: int = 10  # epochs; Ctrl-C and the end of training always save too
    keep_checkpoints: int = 2
    max_nan_retries: int = 3  # rollbacks to the same checkpoint after a NaN/Inf before stopping
    log_every: int = 10  # steps between metrics.jsonl / TensorBoard lines
    # FID/KID of the EMA generator during training; the best one is kept in <run>/best/
    fid_every: int = 50  # epochs; 0 turns it off
    fid_samples: int = 1000
    fid_backbone: str = "keras"
    inception_weights: str | None = None  # a weights file; None: the backbone's usual cache
    # Reproducibility and speed
    seed: int = 0
    deterministic: bool = False
    mixed_precision: str = "auto"
    xla: bool = False
    accumulate: int = 1  # micro-batches per step: same global batch, 1/N of the activation memory
    strategy: str = "auto"  # tf.distribute: auto, one, mirrored (GPUs of a machine), multiworker
    # Where the run lives
    out: str = "checkpoints"
    run_name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Keys that define the trained state: a run folder can only be resumed with the same values.
# Everything else (epochs, cadences, xla, determinism, paths) may change between invocations.
# So may `accumulate` and `strategy`: the global batch and the state are the same, so a run can
# move to a smaller or to several GPUs; only BatchNorm then sees other batches (not bit-exact).
# The dataset is compared by content fingerprint, not by the string the user typed.
STATE_KEYS = (
    "model", "sle", "decoders", "resolution", "channels", "ngf", "ndf", "nz", "output_tanh",
    "recon_loss", "augment", "batch_size", "lr", "beta1", "beta2", "ema_decay", "seed",
    "mixed_precision",
)

_FIELDS = {f.name: f for f in fields(TrainConfig)}


def _type_ok(name: str, value: Any) -> bool:
    """Check a value against the dataclass annotation (a small, explicit subset of typing)."""
    annotation = _FIELDS[name].type
    allowed = {
        "str": (str,), "int": (int,), "float": (float, int), "bool": (bool,),
        "str | None": (str, type(None)), "bool | None": (bool, type(None)),
    }[annotation]
    if isinstance(value, bool) and bool not in allowed:
        return False  # YAML's `yes` must not become resolution=1
    return isinstance(value, allowed)


def check_keys(values: dict[str, Any], source: str) -> None:
    """Reject unknown keys and wrongly typed values with a one-line message naming `source`."""
    for key, value in values.items():
        if key not in _FIELDS:
            close = difflib.get_close_matches(key, _FIELDS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise UserError(f"{source}: unknown key '{key}'{hint}; valid keys: {', '.join(_FIELDS)}")
        if key == "background" and value is None:  # `background: #fff` is a YAML comment
            raise UserError(f"{source}: 'background' is empty; quote a hex colour in YAML "
                            "(background: '#RRGGBB')")
        if not _type_ok(key, value):
            raise UserError(
                f"{source}: '{key}' must be of type {_FIELDS[key].type}, got {value!r}")


def load_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping of config keys (dashes or underscores) from `path`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise UserError(f"cannot read config file {path}: {e.strerror or e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}: not valid YAML{where}; fix the file or pass options on the "
                        "command line") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of key: value pairs, got {type(data).__name__}")
    values = {str(k).replace("-", "_"): v for k, v in data.items()}
    check_keys(values, str(path))
    return values


def validate(cfg: TrainConfig) -> TrainConfig:
    """Check ranges and choices; return cfg so calls can be chained."""
    def bad(msg):
        raise UserError(msg)

    if not cfg.dataset:
        bad("no dataset given: pass --dataset PATH_OR_NAME (a folder of images, a .zip, a known "
            "name such as obama, or 'demo')")
    if cfg.model not in MODELS:
        bad(f"--model {cfg.model!r} is not one of {', '.join(MODELS)}")
    if cfg.model == "ssd":
        _check_ssd(cfg)
    if cfg.resolution not in RESOLUTIONS:
        bad(f"--resolution {cfg.resolution} is not supported; choose one of "
            f"{', '.join(map(str, RESOLUTIONS))}")
    if cfg.channels not in CHANNELS:
        bad(f"--channels {cfg.channels} is not supported; use 3 (RGB) or 1 (greyscale)")
    if cfg.crop not in CROPS:
        bad(f"--crop {cfg.crop!r} is not one of {', '.join(CROPS)}")
    cfg.background = canonical_background(cfg.background)
    if cfg.recon_loss not in RECON_LOSSES:
        bad(f"--recon-loss {cfg.recon_loss!r} is not one of {', '.join(RECON_LOSSES)}")
    if cfg.mixed_precision not in PRECISION_MODES:
        bad(f"--mixed-precision {cfg.mixed_precision!r} is not one of {', '.join(PRECISION_MODES)}")
    ops = [p.strip() for p in cfg.augment.split(",") if p.strip()]
    for op in ops:
        if op not in AUGMENT_OPS:
            bad(f"--augment: unknown operation {op!r}; use a comma-separated subset of "
                f"{','.join(AUGMENT_OPS)}, or '' for none")
    for name in ("ngf", "ndf", "nz", "batch_size", "epochs", "sample_every", "checkpoint_every",
                 "keep_checkpoints", "log_every"):
        if getattr(cfg, name) < 1:
            bad(f"{name} must be at least 1, got {getattr(cfg, name)}")
    for name in ("ngf", "ndf"):
        if getattr(cfg, name) % 8:
            bad(f"{name} must be a multiple of 8 (the narrowest layers use {name}/8 channels), "
                f"got {getattr(cfg, name)}")
    if cfg.strategy not in STRATEGIES:
        bad(f"--strategy {cfg.strategy!r} is not one of {', '.join(STRATEGIES)}")
    if cfg.accumulate < 1 or cfg.batch_size % cfg.accumulate:
        bad(f"--accumulate {cfg.accumulate} must be at least 1 and divide --batch-size "
            f"{cfg.batch_size} (each step runs batch_size / accumulate images at a time)")
    if cfg.fid_backbone not in FID_BACKBONES:
        bad(f"--fid-backbone {cfg.fid_backbone!r} is not one of {', '.join(FID_BACKBONES)}")
    if cfg.max_nan_retries < 0:
        bad(f"max_nan_retries must be 0 (stop at the first NaN) or more, got {cfg.max_nan_retries}")
    if cfg.fid_every < 0:
        bad(f"fid_every must be 0 (off) or a number of epochs, got {cfg.fid_every}")
    if cfg.fid_samples < 2:
        bad(f"fid_samples must be at least 2, got {cfg.fid_samples}")
    if not 0 < cfg.lr < float("inf"):  # also catches NaN
        bad(f"lr must be a positive number, got {cfg.lr}")
    for name in ("beta1", "beta2", "ema_decay"):
        if not 0.0 <= getattr(cfg, name) < 1.0:
            bad(f"{name} must be in [0, 1), got {getattr(cfg, name)}")
    if not 0 <= cfg.seed < 2**32:  # numpy's and Keras's seeding take 32 bits
        bad(f"seed must be in [0, 2**32), got {cfg.seed}")
    return cfg


def parse_background(text: str) -> tuple[int, int, int]:
    """'white', 'black', '#RRGGBB' or 'R,G,B' -> (r, g, b); anything else is a UserError."""
    value = str(text).strip().lower()
    if value in NAMED_BACKGROUNDS:
        return NAMED_BACKGROUNDS[value]
    try:
        if value.startswith("#") and len(value) == 7:
            rgb = tuple(int(value[i:i + 2], 16) for i in (1, 3, 5))
        else:
            rgb = tuple(int(part) for part in value.split(","))
    except ValueError:
        rgb = ()
    if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
        raise UserError(f"--background {text!r} is not a colour; use {BACKGROUND_FORMS}")
    return rgb


def canonical_background(text: str) -> str:
    """The colour as config.yaml records it: a name kept as is, anything else as '#rrggbb'."""
    rgb = parse_background(text)
    name = str(text).strip().lower()
    return name if name in NAMED_BACKGROUNDS else "#{:02x}{:02x}{:02x}".format(*rgb)


def _check_ssd(cfg: TrainConfig) -> None:
    """The SSD baseline is a fixed 64x64 DCGAN: options that only FastGAN has are errors."""
    if cfg.resolution != 64:
        raise UserError(f"--model ssd generates 64x64 images; drop --resolution {cfg.resolution} "
                        "or use --model fastgan")
    for name, value in (("--no-sle", not cfg.sle), ("--no-decoders", not cfg.decoders),
                        ("--output-tanh", cfg.output_tanh is not None)):
        if value:
            raise UserError(f"{name} applies to --model fastgan only; the SSD baseline has no "
                            "such part")


def resolve(overrides: dict[str, Any], config_file: Path | None = None,
            presets: dict[str, Any] | None = None,
            model_presets: dict[str, Any] | None = None) -> TrainConfig:
    """Merge defaults < model preset < dataset preset < YAML file < overrides, then validate.

    `model_presets` and `presets` map a model name and a dataset name to the settings it brings.
    """
    values: dict[str, Any] = {}
    file_values = load_yaml(config_file) if config_file else {}
    check_keys(overrides, "command line")
    model = overrides.get("model", file_values.get("model", "fastgan"))
    dataset = overrides.get("dataset", file_values.get("dataset", ""))
    values.update((model_presets or {}).get(model, {}))
    values.update((presets or {}).get(dataset, {}))
    values.update(file_values)
    values.update(overrides)
    return validate(TrainConfig(**values))


def save(cfg: TrainConfig, path: Path) -> None:
    """Write the resolved config atomically (a kill never leaves half a file)."""
    from fastgan_tf.io import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def load_saved(path: Path) -> TrainConfig:
    """Read a run's config.yaml back (written by `save`)."""
    return TrainConfig(**load_yaml(path))


def state_mismatches(saved: TrainConfig, requested: TrainConfig) -> list[str]:
    """Keys whose values differ in ways that make resuming the saved run impossible."""
    return [f"{k}: run has {getattr(saved, k)!r}, you asked for {getattr(requested, k)!r}"
            for k in STATE_KEYS if getattr(saved, k) != getattr(requested, k)]
