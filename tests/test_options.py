"""One source of truth for training options: TrainConfig makes train.py's flags, and the README's
option table lists every flag with the default TrainConfig gives it."""

import re
from pathlib import Path

import pytest

from fastgan_tf import config
from fastgan_tf.cli.train import build_parser
from fastgan_tf.training import registry

README = Path(__file__).resolve().parents[1] / "README.md"
HEADER = "| option | default | meaning |"


def readme_table() -> dict[str, str]:
    """flag -> default cell, for every row of the README's option table."""
    lines = README.read_text(encoding="utf-8").splitlines()
    rows = {}
    for line in lines[lines.index(HEADER) + 2:]:
        if not line.startswith("|"):
            break
        option, default, _meaning = (cell.strip() for cell in line.strip("|").split(" | ", 2))
        for flag in re.findall(r"`(--[a-z0-9-]+)`", option):
            rows[flag] = default
    return rows


def parser_flags() -> set[str]:
    """Every flag train.py accepts (the long form of each option)."""
    flags = set()
    for action in build_parser()._actions:
        longs = [s for s in action.option_strings if s.startswith("--")]
        flags.update(longs[:1])
    return flags - {"--help"}


def test_every_config_key_is_a_flag_with_help_and_a_section():
    flags = parser_flags()
    for name, f in config.FIELDS.items():
        assert config.flag(name) in flags
        assert f.metadata["help"] and f.metadata["section"], name


def test_every_flag_is_in_the_readme_table():
    table = readme_table()
    missing = sorted(flag for flag in parser_flags()
                     if flag not in table and flag.replace("--", "--no-", 1) not in table)
    assert missing == [], f"add these to the README's option table: {missing}"


def test_every_readme_option_exists_with_the_stated_default():
    table, flags = readme_table(), parser_flags()
    unknown = sorted(flag for flag in table if flag not in flags
                     and flag.replace("--no-", "--") not in flags)
    assert unknown == [], f"the README documents options train.py does not have: {unknown}"
    wrong = {}
    for name in config.FIELDS:
        flag = config.flag(name)
        stated = table.get(flag, table.get(flag.replace("--", "--no-")))
        if stated != config.shown_default(name):
            wrong[flag] = (stated, config.shown_default(name))
    assert wrong == {}, "README default differs from TrainConfig (README, code): " + str(wrong)


@pytest.mark.parametrize("argv, key, value", [
    (["--no-sle"], "sle", False),
    (["--decoders"], "decoders", True),
    (["--ema-decay", "0.99"], "ema_decay", 0.99),
    (["--output-tanh", "false"], "output_tanh", False),
    (["--max-nan-retries", "5"], "max_nan_retries", 5),
    (["--xla"], "xla", True),
])
def test_flags_parse_to_config_values(argv, key, value):
    args = build_parser().parse_args(["--dataset", "x", *argv])
    assert getattr(args, key) == value


def test_only_typed_flags_override_the_config_file():
    args = vars(build_parser().parse_args(["--dataset", "x"]))
    assert {k for k in args if k in config.FIELDS} == {"dataset"}


def test_choices_come_from_the_config():
    choices = {a.dest: a.choices for a in build_parser()._actions if a.choices}
    assert choices["model"] == tuple(registry.MODELS)
    assert choices["resolution"] == config.RESOLUTIONS
