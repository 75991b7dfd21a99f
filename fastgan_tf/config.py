"""Training configuration: one dataclass, filled from defaults < presets < YAML < command line.

`TrainConfig` is the single source of truth for options: each field's metadata holds its help
text, its choices and how its default is shown, and `train.py`'s command line is generated from
it (see `cli/train.py`; the README's option table is checked against it by the tests). Every run
writes its resolved configuration to ``<run>/config.yaml``. Unknown keys and values of the wrong
type are user errors, never silently ignored: a typo in a config file must not train a different
model than the one the user asked for.
"""

from __future__ import annotations

import codecs
import dataclasses
import difflib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from fastgan_tf import schedule
from fastgan_tf.errors import UserError

log = logging.getLogger(__name__)

RESOLUTIONS = (64, 128, 256, 512, 1024)
RECON_LOSSES = ("lpips", "l1", "mse")
PRECISION_MODES = ("auto", "on", "bf16", "off")
LPIPS_PRECISIONS = ("float32", "bf16")
AUGMENT_OPS = ("color", "translation", "cutout")
FID_BACKBONES = ("keras", "standard")
BEST_BY = ("fid", "kid")
STRATEGIES = ("auto", "one", "mirrored", "multiworker")
CHANNELS = (1, 3)
CROPS = ("none", "center")
NAMED_BACKGROUNDS = {"white": (255, 255, 255), "black": (0, 0, 0)}
BACKGROUND_FORMS = "white, black, #RRGGBB or R,G,B (each 0-255)"


def option(default, help: str, *, section: str, choices=None, shown: str | None = None):
    """A TrainConfig field with what `--help` and the README say about it."""
    return field(default=default, metadata={
        "help": help, "section": section, "choices": choices, "shown": shown})


DATA, MODEL, OBJECTIVE, SCHEDULE, FID, SPEED, PLACE = (
    "data", "model", "objective", "schedule", "FID during training", "speed and devices",
    "where the run lives")


@dataclass
class TrainConfig:
    """Everything that defines a training run. Defaults reproduce the reference FastGAN."""

    # Data
    dataset: str = option("", "folder of images, a .zip, a known name (obama, ...) or 'demo'",
                          section=DATA, shown="(required)")
    data_dir: str | None = option(None, "cache folder for named datasets", section=DATA,
                                  shown="`$FASTGAN_DATA`")
    resolution: int = option(256, "image size the model trains at", section=DATA,
                             choices=RESOLUTIONS)
    channels: int = option(3, "3 (RGB) or 1 (greyscale models; images converted to luma)",
                           section=DATA, choices=CHANNELS)
    crop: str = option("none", "non-square images: none squashes them to a square (the "
                       "reference), center crops the long side", section=DATA, choices=CROPS)
    background: str = option("white", "colour under transparent pixels: white, black, #RRGGBB or "
                             "R,G,B", section=DATA)
    # Model (defaults are the reference architecture)
    model: str = option("fastgan", "fastgan, or ssd: the Spectral Style-DCGAN 64x64 baseline "
                        "(the models of fastgan_tf/training/registry.py)", section=MODEL)
    sle: bool = option(True, "skip-layer excitation in G (--no-sle: the paper's ablation)",
                       section=MODEL)
    decoders: bool = option(True, "D's self-supervised decoders (--no-decoders: the paper's "
                            "ablation)", section=MODEL)
    ngf: int = option(64, "generator width (a multiple of 8)", section=MODEL)
    ndf: int = option(64, "discriminator width (a multiple of 8)", section=MODEL)
    nz: int = option(256, "latent size", section=MODEL)
    output_tanh: bool | None = option(None, "tanh on G's outputs, true or false; default: only at "
                                      "1024, as the reference", section=MODEL, shown="reference")
    # Objective and optimisation (reference values)
    recon_loss: str = option("lpips", "decoders' reconstruction loss (lpips needs the Keras VGG16 "
                             "weights)", section=OBJECTIVE, choices=RECON_LOSSES)
    vgg_weights: str | None = option(None, "path to vgg16_weights_tf_dim_ordering_tf_kernels_"
                                     "notop.h5 (offline use)", section=OBJECTIVE,
                                     shown="Keras cache")
    augment: str = option("color,translation", "DiffAugment policy: a comma-separated subset of "
                          "color,translation,cutout; '' for none", section=OBJECTIVE)
    batch_size: int = option(8, "images per step (the global batch)", section=OBJECTIVE)
    lr: float = option(2e-4, "Adam learning rate of G and D", section=OBJECTIVE)
    beta1: float = option(0.5, "Adam beta1", section=OBJECTIVE)
    beta2: float = option(0.999, "Adam beta2", section=OBJECTIVE)
    ema_decay: float = option(0.999, "decay of the EMA generator that samples and FID use",
                              section=OBJECTIVE)
    # Schedule
    epochs: int | None = option(None, "total epochs (passes over the images); a larger number "
                                "continues; 100 when --steps is not given either",
                                section=SCHEDULE, shown="100")
    steps: int | None = option(None, "total optimisation steps, instead of --epochs (the "
                               "reference's --iter): training ends at exactly that step",
                               section=SCHEDULE, shown="none")
    time_limit: str | None = option(None, "save and exit (code 0) once this invocation has "
                                    "trained this long, e.g. 4h, 90m or 2h30m; re-run to go on",
                                    section=SCHEDULE, shown="none")
    sample_every: int | str = option(10, "sample grids every N epochs, or every N steps written "
                                     "500steps", section=SCHEDULE)
    checkpoint_every: int | str = option(10, "checkpoints every N epochs or Nsteps (Ctrl-C, the "
                                         "time limit and the end always save)", section=SCHEDULE)
    keep_checkpoints: int = option(2, "checkpoints kept", section=SCHEDULE)
    max_nan_retries: int = option(3, "rollbacks to the last good checkpoint after a NaN/Inf before "
                                  "training stops", section=SCHEDULE)
    log_every: int = option(10, "steps between metrics.jsonl and TensorBoard records",
                            section=SCHEDULE)
    # FID/KID of the EMA generator during training; the best one is kept in <run>/best/
    fid_every: int | str = option(50, "FID/KID of the EMA generator every N epochs or Nsteps "
                                  "(the best kept in best/); 0 = off", section=FID)
    fid_samples: int = option(1000, "generated samples per FID", section=FID)
    best_by: str = option("fid", "the metric that picks best/: fid, or kid (better behaved with "
                          "few images)", section=FID, choices=BEST_BY)
    early_stop: int = option(0, "end training after K FID evaluations without improvement; "
                             "0 = off", section=FID)
    fid_backbone: str = option("keras", "keras InceptionV3, or the standard 2015 Inception of the "
                               "papers", section=FID, choices=FID_BACKBONES)
    inception_weights: str | None = option(None, "weights file of the FID backbone (offline use)",
                                           section=FID, shown="the backbone's cache")
    # Reproducibility and speed
    seed: int = option(0, "random seed", section=SPEED)
    deterministic: bool = option(False, "bit-for-bit reproducible kernels (slower on GPU)",
                                 section=SPEED)
    mixed_precision: str = option("auto", "on: float16 compute with loss scaling; bf16: bfloat16 "
                                  "compute; off: float32; auto: bf16 on CUDA GPUs of compute "
                                  "capability >= 8.0 and on CPUs with AMX or AVX512_BF16 (not "
                                  "with --deterministic), on for 7.x, else off", section=SPEED,
                                  choices=PRECISION_MODES)
    lpips_precision: str = option("float32", "LPIPS's VGG16: float32 (reference), or bf16: its "
                                  "blocks 3-5 in bfloat16, LPIPS about 2x faster on CPUs with "
                                  "AMX, its gradients ~5 % off float32's", section=SPEED,
                                  choices=LPIPS_PRECISIONS)
    xla: bool = option(False, "compile the training step with XLA", section=SPEED)
    accumulate: int = option(1, "split each batch into N micro-batches: the same update with "
                             "about 1/N of the activation memory, slower", section=SPEED)
    strategy: str = option("auto", "devices: one, mirrored (the GPUs of this machine), multiworker "
                           "(the machines in TF_CONFIG); auto picks", section=SPEED,
                           choices=STRATEGIES)
    # Where the run lives
    out: str = option("checkpoints", "folder holding runs", section=PLACE, shown="`checkpoints/`")
    run_name: str | None = option(None, "run folder name under --out", section=PLACE,
                                  shown="`<dataset>-<res>`")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Keys that define the trained state: a run folder can only be resumed with the same values.
# The architecture decides which weights exist and what they compute; the batch size is the unit
# of the saved position in an epoch (batch_in_epoch) and of the step counter.
STATE_KEYS = (
    "model", "sle", "decoders", "resolution", "channels", "ngf", "ndf", "nz", "output_tanh",
    "batch_size",
)
# Keys that steer training but leave the state as it is: a run may resume with other values (the
# trainer says which changed). Precision is a way of computing (the float32 weights and Adam's
# moments are the same), so a run moves between a GPU (float16) and a CPU (float32); the losses,
# augmentation, Adam's settings, the EMA decay and the seed of future epochs' order may be tuned
# mid-run; `accumulate` and `strategy` keep the global batch (only BatchNorm sees other batches).
# Everything else (epochs, cadences, FID, xla, determinism, paths) may change too, silently.
TRAINING_KEYS = (
    "recon_loss", "augment", "lr", "beta1", "beta2", "ema_decay", "seed", "mixed_precision",
    "lpips_precision", "accumulate", "strategy",
)

FIELDS = {f.name: f for f in fields(TrainConfig)}
_TYPES = {"str": (str,), "int": (int,), "float": (float, int), "bool": (bool,),
          "str | None": (str, type(None)), "bool | None": (bool, type(None)),
          "int | None": (int, type(None)), "int | str": (int, str)}


def flag(name: str) -> str:
    """The command-line flag of a config key: batch_size -> --batch-size."""
    return "--" + name.replace("_", "-")


def shown_default(name: str) -> str:
    """A key's default as --help and the README show it."""
    f = FIELDS[name]
    if f.metadata.get("shown"):
        return f.metadata["shown"]
    if isinstance(f.default, bool):
        return "on" if f.default else "off"
    if isinstance(f.default, float):
        return f"{f.default:g}"
    return f"`{f.default}`" if isinstance(f.default, str) else str(f.default)


def _type_ok(name: str, value: Any) -> bool:
    """Check a value against the dataclass annotation (a small, explicit subset of typing)."""
    allowed = _TYPES[FIELDS[name].type]
    if isinstance(value, bool) and bool not in allowed:
        return False  # YAML's `yes` must not become resolution=1
    return isinstance(value, allowed)


def check_keys(values: dict[str, Any], source: str) -> None:
    """Reject unknown keys and wrongly typed values with a one-line message naming `source`."""
    for key, value in values.items():
        if key not in FIELDS:
            close = difflib.get_close_matches(key, FIELDS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise UserError(f"{source}: unknown key '{key}'{hint}; valid keys: {', '.join(FIELDS)}")
        if key == "background" and value is None:  # `background: #fff` is a YAML comment
            raise UserError(f"{source}: 'background' is empty; quote a hex colour in YAML "
                            "(background: '#RRGGBB')")
        if not _type_ok(key, value):
            raise UserError(
                f"{source}: '{key}' must be of type {FIELDS[key].type}, got {value!r}")


def load_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping of config keys (dashes or underscores) from `path`.

    Any encoding a Windows shell or editor writes is read (see `_decode`); errors are one line
    naming the file and the line.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read config file {path}: {e.strerror or e}") from None
    text = _decode(raw, path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise UserError(_yaml_problem(e, path, text)) from None
    _warn_escaped_windows_paths(text, path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of key: value pairs, got {type(data).__name__}")
    values = {str(k).replace("-", "_"): v for k, v in data.items()}
    check_keys(values, str(path))
    return values


# Byte-order marks, UTF-32's before UTF-16's (UTF-32 LE's starts with UTF-16 LE's).
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
         (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
         (codecs.BOM_UTF16_BE, "utf-16"))
ANSI_FALLBACK = "cp1252"  # Windows' ANSI code page in Western Europe and the Americas
_DOUBLE_QUOTED = re.compile(r'"((?:[^"\\\n]|\\.)*)"')
_WINDOWS_PATH = re.compile(r"[A-Za-z]:\\")
PATH_QUOTING = "write Windows paths in single quotes ('C:\\data') or with forward slashes (C:/data)"


def _decode(raw: bytes, path: Path) -> str:
    """The text of a config file, whatever wrote it.

    Windows PowerShell 5.1 writes UTF-16 with a byte-order mark (`>`, Out-File) or the ANSI code
    page (Set-Content), Notepad UTF-8 with or without one. A BOM decides; without one UTF-8 is
    tried, then cp1252 (with a warning: other ANSI code pages cannot be told apart from it).
    """
    for bom, encoding in _BOMS:
        if raw.startswith(bom):
            return _decoded(raw, encoding, path)
    if b"\x00" in raw:
        raise UserError(f"{path}: looks like UTF-16 or UTF-32 without a byte-order mark; save it "
                        "as UTF-8")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = _line_at(raw, e.start, "utf-8")
    text = _decoded(raw, ANSI_FALLBACK, path)
    log.warning(f"{path}, line {line}: not UTF-8; read as Windows ANSI ({ANSI_FALLBACK}): save "
                "the file as UTF-8 if its text looks wrong")
    return text


def _decoded(raw: bytes, encoding: str, path: Path) -> str:
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as e:
        raise UserError(f"{path}, line {_line_at(raw, e.start, encoding)}: not valid {encoding} "
                        f"({e.reason}); save the file as UTF-8") from None


def _line_at(raw: bytes, offset: int, encoding: str) -> int:
    """The line number of byte `offset` of `raw` in `encoding`."""
    return raw[:offset].decode(encoding, errors="replace").count("\n") + 1


def _yaml_problem(error: yaml.YAMLError, path: Path, text: str) -> str:
    """One line: the file, the line, what YAML found, and how to fix it."""
    mark = getattr(error, "problem_mark", None)
    where = f", line {mark.line + 1}" if mark else ""
    problem = getattr(error, "problem", None)
    lines = text.splitlines()
    line = lines[mark.line] if mark and mark.line < len(lines) else ""
    fix = PATH_QUOTING if _WINDOWS_PATH.search(line) and '"' in line else \
        "fix the file or pass options on the command line"
    return f"{path}{where}: not valid YAML{f' ({problem})' if problem else ''}; {fix}"


def _warn_escaped_windows_paths(text: str, path: Path) -> None:
    """Warn about `"C:\\new"`: valid YAML, but \\n is a newline there (and \\t a tab)."""
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("#"):
            continue
        for match in _DOUBLE_QUOTED.finditer(line):
            body = match.group(1)
            escapes = set(re.findall(r"\\(.)", body)) - {"\\", '"'}
            if _WINDOWS_PATH.match(body) and escapes:
                log.warning(f'{path}, line {number}: in "{body}" YAML reads '
                            f"{', '.join(sorted(chr(92) + e for e in escapes))} as escapes, not "
                            f"as a folder name; {PATH_QUOTING}")


def validate(cfg: TrainConfig) -> TrainConfig:
    """Check choices and ranges; return cfg so calls can be chained."""
    def bad(msg):
        raise UserError(msg)

    if not cfg.dataset:
        bad("no dataset given: pass --dataset PATH_OR_NAME (a folder of images, a .zip, a known "
            "name such as obama, or 'demo')")
    for name, f in FIELDS.items():
        choices = f.metadata.get("choices")
        if choices and getattr(cfg, name) not in choices:
            bad(f"{flag(name)} {getattr(cfg, name)!r} is not supported; choose one of "
                f"{', '.join(map(str, choices))}")
    cfg.background = canonical_background(cfg.background)
    ops = [p.strip() for p in cfg.augment.split(",") if p.strip()]
    for op in ops:
        if op not in AUGMENT_OPS:
            bad(f"--augment: unknown operation {op!r}; use a comma-separated subset of "
                f"{','.join(AUGMENT_OPS)}, or '' for none")
    _check_schedule(cfg)
    for name in ("ngf", "ndf", "nz", "batch_size", "keep_checkpoints", "log_every"):
        if getattr(cfg, name) < 1:
            bad(f"{name} must be at least 1, got {getattr(cfg, name)}")
    for name in ("ngf", "ndf"):
        if getattr(cfg, name) % 8:
            bad(f"{name} must be a multiple of 8 (the narrowest layers use {name}/8 channels), "
                f"got {getattr(cfg, name)}")
    if cfg.accumulate < 1 or cfg.batch_size % cfg.accumulate:
        bad(f"--accumulate {cfg.accumulate} must be at least 1 and divide --batch-size "
            f"{cfg.batch_size} (each step runs batch_size / accumulate images at a time)")
    if cfg.max_nan_retries < 0:
        bad(f"max_nan_retries must be 0 (stop at the first NaN) or more, got {cfg.max_nan_retries}")
    if cfg.early_stop < 0:
        bad(f"early_stop must be 0 (off) or a number of FID evaluations, got {cfg.early_stop}")
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


def _check_schedule(cfg: TrainConfig) -> None:
    """One budget (--epochs 100 by default, or --steps), a valid time limit, and cadences in
    epochs or steps, recorded with their unit ("10 epochs")."""
    if cfg.epochs is not None and cfg.steps is not None:
        raise UserError(f"--epochs {cfg.epochs} and --steps {cfg.steps}: pass one of them (the "
                        "total number of epochs, or of steps)")
    if cfg.epochs is None and cfg.steps is None:
        cfg.epochs = 100
    for name in ("epochs", "steps"):
        if getattr(cfg, name) is not None and getattr(cfg, name) < 1:
            raise UserError(f"{name} must be at least 1, got {getattr(cfg, name)}")
    for name in ("time_limit", "sample_every", "checkpoint_every", "fid_every"):
        try:
            if name != "time_limit":
                setattr(cfg, name, schedule.canonical_every(getattr(cfg, name)))
            elif cfg.time_limit is not None:
                schedule.parse_duration(cfg.time_limit)
        except ValueError as e:
            raise UserError(f"{flag(name)}: {e}") from None
    for name in ("sample_every", "checkpoint_every"):
        if getattr(cfg, name) == 0:
            raise UserError(f"{flag(name)} must be at least 1 (epoch or step), got 0")


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


def resolve(overrides: dict[str, Any], config_file: Path | None = None,
            presets: Callable[[str, str], dict] | None = None) -> TrainConfig:
    """Merge defaults < presets < YAML file < overrides, then validate.

    `presets(model, dataset)` gives the settings the chosen model and dataset bring (see
    training/options.py, which knows the models); none by default.
    """
    file_values = load_yaml(config_file) if config_file else {}
    check_keys(overrides, "command line")
    model = overrides.get("model", file_values.get("model", FIELDS["model"].default))
    dataset = overrides.get("dataset", file_values.get("dataset", ""))
    values = dict(presets(model, dataset)) if presets else {}
    values.update(file_values)
    for budget, other in (("epochs", "steps"), ("steps", "epochs")):
        if budget in overrides and other not in overrides:
            values.pop(other, None)  # a budget on the command line replaces the file's
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


def training_changes(saved: TrainConfig, requested: TrainConfig) -> list[str]:
    """How the settings that steer training (TRAINING_KEYS) differ from the run's last ones."""
    return [f"{k} {getattr(saved, k)} -> {getattr(requested, k)}"
            for k in TRAINING_KEYS if getattr(saved, k) != getattr(requested, k)]
