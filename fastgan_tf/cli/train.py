"""`python train.py`: parse the command line, resolve the configuration, call the trainer.

Every option comes from `TrainConfig` (its field metadata: help, choices, shown default): a new
config key is a new flag without touching this file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fastgan_tf import config
from fastgan_tf.cli.common import (
    ArgumentParser,
    add_verbose_flag,
    deterministic_tensorflow,
    run_cli,
)
from fastgan_tf.training import options

_TYPES = {"int": int, "float": float, "str": str, "str | None": str, "int | None": int,
          "int | str": str}


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _add_option(group, name: str, f) -> None:
    """The flag of config key `name`: --no-X for what is on by default, --X for what is off."""
    meta = f.metadata
    text = f"{meta['help']} (default: {config.shown_default(name)})"
    if f.type == "bool":
        group.add_argument(config.flag(name), action=argparse.BooleanOptionalAction,
                           help=text.replace("%", "%%"))
    elif f.type == "bool | None":
        group.add_argument(config.flag(name), type=_bool, metavar="true|false",
                           help=text.replace("%", "%%"))
    else:
        choices = options.choices(name)
        group.add_argument(config.flag(name), type=_TYPES[f.type], choices=choices,
                           metavar=None if choices else name.upper(), help=text.replace("%", "%%"))


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="train.py",
        description="Train FastGAN on a folder of images. Re-running the same command resumes. "
                    "Every option is also a key of the --config YAML file (batch_size for "
                    "--batch-size); flags win over the file.",
        argument_default=argparse.SUPPRESS)  # only flags the user typed override the YAML file
    p.add_argument("--config", type=Path, default=None, help="YAML file of settings; flags win")
    p.add_argument("--fresh", action="store_true", default=False,
                   help="start over: the existing run folder is renamed aside, not deleted")
    p.add_argument("--dry-run", action="store_true", default=False,
                   help="validate dataset and config, print JSON, train nothing")
    p.add_argument("--doctor", action="store_true", default=False,
                   help="check this machine instead of training (python -m fastgan_tf doctor; "
                        "--json and --speed pass through)")
    add_verbose_flag(p)
    groups = {}
    for name, f in config.FIELDS.items():
        section = f.metadata["section"]
        if section not in groups:
            groups[section] = p.add_argument_group(section)
        _add_option(groups[section], name, f)
    return p


def _settings(args: argparse.Namespace) -> dict:
    """The config keys the user typed as flags."""
    return {k: v for k, v in vars(args).items() if k in config.FIELDS}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--doctor" in argv:
        from fastgan_tf.cli import doctor

        return doctor.main([a for a in argv if a != "--doctor"])

    def before_tensorflow(args: argparse.Namespace) -> None:
        if args.deterministic if "deterministic" in args else (
                args.config and config.load_yaml(args.config).get("deterministic")):
            deterministic_tensorflow()

    def run(args: argparse.Namespace) -> int:
        from fastgan_tf.training.loop import dry_run, train

        cfg = options.resolve_config(_settings(args), config_file=args.config)
        if args.dry_run:
            print(json.dumps(dry_run(cfg), indent=2))
            return 0
        return train(cfg, fresh=args.fresh)

    return run_cli(build_parser(), run, argv, before_tensorflow=before_tensorflow)
