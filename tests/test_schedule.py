"""Budgets and cadences (issue 14): --steps, --time-limit, and cadences in epochs or steps."""

import pytest

from fastgan_tf import config
from fastgan_tf.errors import UserError
from fastgan_tf.schedule import (
    Budget,
    Every,
    canonical_every,
    format_duration,
    parse_duration,
    parse_every,
)


@pytest.mark.parametrize("text, every", [
    (10, Every(10, "epochs")), ("10", Every(10, "epochs")), ("3epochs", Every(3, "epochs")),
    ("1 epoch", Every(1, "epochs")), ("500steps", Every(500, "steps")),
    (" 20 step ", Every(20, "steps")), (0, None), ("0steps", None),
])
def test_cadences_in_epochs_or_steps(text, every):
    assert parse_every(text) == every


def test_config_records_the_unit():
    cfg = config.resolve({"dataset": "x", "sample_every": "500steps", "checkpoint_every": 5})
    assert (cfg.sample_every, cfg.checkpoint_every, cfg.fid_every) == (
        "500 steps", "5 epochs", "50 epochs")
    assert canonical_every(cfg.sample_every) == "500 steps"  # stable when read back
    assert config.resolve({"dataset": "x", "fid_every": 0}).fid_every == 0  # off


def test_step_cadence_is_due_on_its_multiples_epochs_at_epoch_ends():
    steps, epochs = Every(4, "steps"), Every(2, "epochs")
    assert [s for s in range(1, 13) if steps.due(s, 0, False)] == [4, 8, 12]
    assert not epochs.due(8, 2, epoch_ended=False) and epochs.due(8, 2, epoch_ended=True)
    assert not epochs.due(12, 3, epoch_ended=True)


@pytest.mark.parametrize("text, seconds", [
    ("4h", 14400), ("90m", 5400), ("2h30m", 9000), ("45s", 45), ("1h 5m 3s", 3903),
    ("90min", 5400),
])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("parse, text", [
    *((parse_every, t) for t in ("ten", "5 minutes", "-1", "1.5", "steps")),
    *((parse_duration, t) for t in ("4", "4 hours", "h", "", "1d")),
])
def test_bad_cadences_and_durations(parse, text):
    with pytest.raises(ValueError, match="not a cadence|not a duration"):
        parse(text)


def test_format_duration():
    assert (format_duration(3725), format_duration(95), format_duration(0)) == (
        "1h02m", "1m35s", "0m00s")


def test_exactly_one_budget_and_the_command_line_replaces_the_files(tmp_path):
    assert config.resolve({"dataset": "x"}).epochs == 100  # the default budget
    with pytest.raises(UserError, match="pass one of them"):
        config.resolve({"dataset": "x", "epochs": 3, "steps": 50})
    path = tmp_path / "run.yaml"
    path.write_text("dataset: x\nepochs: 30\n", encoding="utf-8")
    cfg = config.resolve({"steps": 500}, config_file=path)
    assert (cfg.epochs, cfg.steps) == (None, 500)
    with pytest.raises(UserError, match="--time-limit: '4 hours' is not a duration"):
        config.resolve({"dataset": "x", "time_limit": "4 hours"})


def test_budget_in_steps_or_epochs():
    assert Budget(steps=45).reached(45, 3) and not Budget(steps=45).reached(44, 3)
    assert Budget(epochs=4).reached(40, 4) and not Budget(epochs=4).reached(47, 3)
    assert Budget(epochs=4).describe(3, 1) == "epochs 1->4"
    assert Budget(steps=9, time_limit=5400).describe(3, 1) == "steps 3->9, time limit 1h30m"
