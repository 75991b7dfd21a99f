"""Bad command lines and config files end in one line of error, never a traceback (issue 6).

hypothesis throws random argument lists and YAML files at `train.py --dry-run` and at
`evaluate.py` (which has no dry run: it is pointed at run folders without checkpoints, so no
action runs and only argument handling and run lookup are exercised). Every call must exit with
0 (a valid dry run, --help) or 2, print no traceback, and a failure must be one `error:` line.

Model building and the demo images are replaced by fast stand-ins, the VGG16 download by an
offline error: the subject is the error path, not the models (tests/test_train.py builds them).
"""

import contextlib
import dataclasses
import io
import os

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conftest import write_images
from fastgan_tf.cli import evaluate as evaluate_cli
from fastgan_tf.cli import train as train_cli
from fastgan_tf.config import TrainConfig
from fastgan_tf.errors import UserError
from fastgan_tf.training import registry

# benchmarks/fault_injection.py runs many more examples through FASTGAN_FUZZ_EXAMPLES.
SETTINGS = settings(max_examples=int(os.environ.get("FASTGAN_FUZZ_EXAMPLES", "40")),
                    deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])

# Text that a shell can hand over: no NUL, no lone surrogates.
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
               max_size=12)
NUMBERS = st.one_of(st.integers(-3, 3000), st.integers(-2**70, 2**70),
                    st.floats(allow_nan=True, allow_infinity=True))
CHOICES = ["64", "128", "256", "1024", "lpips", "l1", "mse", "auto", "on", "off", "true", "no",
           "keras", "standard", "color,translation", "cutout", "", "-1", "0", "1e-4", "nan"]


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzz")
    (base / "empty").mkdir()
    (base / "notes.txt").write_text("not images")
    (base / "junk.zip").write_bytes(b"PK\x03\x04 not really a zip")
    (base / "config_dir").mkdir()
    runs = base / "runs"
    (runs / "no-ckpt").mkdir(parents=True)
    (runs / "no-ckpt" / "config.yaml").write_text(yaml.safe_dump(
        TrainConfig(dataset="demo", resolution=64, ngf=16, ndf=16).to_dict()))
    (runs / "bad-config").mkdir()
    (runs / "bad-config" / "config.yaml").write_text("resolution: [unclosed")
    return {
        "base": base,
        "images": write_images(base / "images", count=8),
        "datasets": ["demo", str(base / "images"), str(base / "empty"), str(base / "notes.txt"),
                     str(base / "junk.zip"), str(base / "missing"), "/nonexistent/place"],
        "runs": runs,
        "yaml": base / "fuzz.yaml",
    }


@pytest.fixture
def offline_and_fast(monkeypatch, tmp_path):
    """No downloads, no real models, no big demo images; errors stay what they would be."""
    monkeypatch.setenv("FASTGAN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FASTGAN_DATA", str(tmp_path / "data"))

    def offline(*a, **k):
        raise UserError("VGG16 weights are not cached and this machine is offline; pass "
                        "--vgg-weights PATH or --recon-loss l1")

    monkeypatch.setattr("fastgan_tf.lpips.fetch_vgg16_weights", offline)
    monkeypatch.setattr("fastgan_tf.downloads.download", offline)
    monkeypatch.setattr("fastgan_tf.training.loop.count_params", lambda model: 0)
    real_get = registry.get
    monkeypatch.setattr(registry, "get", lambda name: dataclasses.replace(
        real_get(name), build_generator=lambda *a, **k: None,
        build_discriminator=lambda *a, **k: None, memory_estimate=None))
    monkeypatch.setattr("fastgan_tf.training.dataset.make_demo_images",
                        lambda resolution=64, seed=0, **k: np.zeros((16, resolution, resolution, 3),
                                                                     np.uint8))
    monkeypatch.setattr(train_cli, "deterministic_tensorflow", lambda: None)


def call(main, argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def check(code, err, argv, fuzzing=True):
    if fuzzing:  # `--hypothesis-show-statistics` shows which checks the examples reached
        event(f"exit {code}: " + (err.strip().splitlines() or [""])[-1].split(": error: ")[-1][:24])
    assert code in (0, 2), (code, argv, err)
    assert "Traceback" not in err, (argv, err)
    if code == 2:
        lines = [line for line in err.splitlines() if line.strip()]
        errors = [line for line in lines if ": error: " in line]
        assert len(errors) == 1 and lines[-1] == errors[0], (argv, err)


def option_strings(parser):
    return sorted({s for a in parser._actions for s in a.option_strings if s.startswith("--")})


def arguments(parser, values):
    """Random argument lists: real options (and near misses) followed by random values."""
    options = option_strings(parser) + ["--epoch", "--resolutions", "-x", "--", "---"]
    value = st.one_of(st.sampled_from(CHOICES), NUMBERS.map(str), TEXT, st.sampled_from(values))
    count = st.sampled_from([1, 1, 1, 1, 1, 0, 2])  # options mostly take one value
    pair = st.tuples(st.sampled_from(options), count.flatmap(lambda n: st.lists(
        value, min_size=n, max_size=n)))
    return st.lists(pair, max_size=5).map(lambda pairs: [t for o, vs in pairs for t in (o, *vs)])


def typed_arguments(parser, paths):
    """Random argument lists whose values mostly have the right type: they get past argparse."""
    import argparse

    def values_for(action):
        if action.nargs == 0:
            return st.just([])
        if action.choices:
            good = st.sampled_from([str(c) for c in action.choices])
        elif action.type is int or getattr(action.type, "__name__", "") == "_positive":
            good = st.integers(-2, 130).map(str)
        elif action.type is float:
            good = st.one_of(st.floats(-1, 2), st.sampled_from([0.0, 1.0, 1e-4])).map(str)
        else:
            good = st.one_of(st.sampled_from(paths), TEXT, st.sampled_from(CHOICES))
        return st.one_of(good, good, good, st.sampled_from(CHOICES), TEXT).map(lambda v: [v])

    actions = [a for a in parser._actions if a.option_strings
               and not isinstance(a, (argparse._HelpAction, argparse._VersionAction))]
    pair = st.sampled_from(actions).flatmap(
        lambda a: values_for(a).map(lambda vs, a=a: [a.option_strings[-1], *vs]))
    return st.lists(pair, max_size=6).map(lambda pairs: [t for p in pairs for t in p])


KEYS = [f.replace("_", "-") if i % 2 else f
        for i, f in enumerate(TrainConfig.__dataclass_fields__)] + ["epoch", "lr_g", "1", ""]
YAML_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), NUMBERS, TEXT, st.sampled_from(CHOICES)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(TEXT, inner, max_size=2)),
    max_leaves=4)
YAML_DOCS = st.one_of(
    st.dictionaries(st.sampled_from(KEYS), YAML_VALUES, max_size=5).map(yaml.safe_dump),
    YAML_VALUES.map(yaml.safe_dump),
    TEXT)  # usually not a mapping, sometimes not YAML at all


@SETTINGS
@given(data=st.data())
def test_train_dry_run_random_command_lines(places, offline_and_fast, data):
    parser = train_cli.build_parser()
    argv = data.draw(arguments(parser, places["datasets"]))
    if data.draw(st.booleans()):  # mostly a dataset that resolves, so later checks run too
        argv = ["--dataset", data.draw(st.sampled_from(places["datasets"])), *argv]
    argv += ["--dry-run", "--out", str(places["base"] / "out")]
    code, out, err = call(train_cli.main, argv)
    check(code, err, argv)


@SETTINGS
@given(data=st.data())
def test_train_dry_run_well_typed_command_lines(places, offline_and_fast, data):
    argv = ["--dataset", data.draw(st.sampled_from(places["datasets"][:2])),
            *data.draw(typed_arguments(train_cli.build_parser(), places["datasets"])),
            "--dry-run", "--out", str(places["base"] / "out")]
    code, out, err = call(train_cli.main, argv)
    check(code, err, argv)


@SETTINGS
@given(doc=YAML_DOCS, dataset=st.sampled_from(["demo", None]), data=st.data())
def test_train_dry_run_random_config_files(places, offline_and_fast, doc, dataset, data):
    places["yaml"].write_text(doc, encoding="utf-8")
    config = data.draw(st.sampled_from([places["yaml"], places["yaml"], places["base"] / "nope.yaml",
                                        places["base"] / "config_dir"]))
    argv = ["--config", str(config), "--dry-run", "--out", str(places["base"] / "out")]
    if dataset:
        argv += ["--dataset", dataset, "--recon-loss", "l1"]
    code, out, err = call(train_cli.main, argv)
    check(code, err, argv)


@SETTINGS
@given(data=st.data())
def test_evaluate_random_command_lines(places, offline_and_fast, data):
    parser = evaluate_cli.build_parser()
    runs = places["runs"]
    targets = [str(runs / "no-ckpt"), str(runs / "bad-config"), "no-ckpt", str(runs / "nothing"),
               str(places["base"] / "empty")]
    argv = data.draw(st.one_of(arguments(parser, targets), typed_arguments(parser, targets)))
    action = data.draw(st.sampled_from([[], ["--grid"], ["--fid", "--kid"], ["--generate", "4"],
                                        ["--export", str(places["base"] / "export")]]))
    where = data.draw(st.sampled_from([["--out", str(runs)], ["--out", str(places["base"] / "empty")],
                                       ["--run", data.draw(st.sampled_from(targets))]]))
    argv = [*action, *argv, *where]
    code, out, err = call(evaluate_cli.main, argv)
    check(code, err, argv)
    assert not (places["base"] / "export").exists()  # no action ran: no checkpoint anywhere


@pytest.mark.parametrize("argv, expected", [
    (["--help"], 0),
    (["--dataset", "demo"], 0),
    (["--dataset", "demo", "--seed", str(2**70)], "seed must be in [0, 2**32)"),  # numpy: 32 bits
    (["--dataset", "demo", "--lr", "inf"], "lr must be a positive number"),
    (["--dataset", "demo", "--lr", "nan"], "lr must be a positive number"),
    (["--dataset", "demo", "--nz", "0"], "nz must be at least 1"),
    (["--dataset", "demo", "--fid-samples", "1"], "fid_samples must be at least 2"),
    (["--dataset", "demo", "--max-nan-retries", "-1"], "max_nan_retries must be 0"),
    (["--dataset", "demo", "--keep-checkpoints", "0"], "keep_checkpoints must be at least 1"),
    (["--dataset", "demo", "--epochs", "ten"], "invalid int value: 'ten'"),
    (["--dataset", "demo", "--epochs", "1\n2"], "invalid int value"),  # still one line
])
def test_train_edge_cases(places, offline_and_fast, argv, expected):
    code, out, err = call(train_cli.main, [*argv, "--dry-run", "--out",
                                           str(places["base"] / "out")])
    check(code, err, argv, fuzzing=False)
    if expected == 0:
        assert code == 0
    else:
        assert code == 2 and expected in err
