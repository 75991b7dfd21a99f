"""A run that moves between WSL2 and Windows (issue 12): its recorded paths are translated, and
best/ is found without TensorFlow's state file.

Windows is simulated by replacing `oscompat.on_windows` (patching `os.name` would make pathlib
build WindowsPath objects, which fail on Linux) and the WSL mount root by a temporary folder.
"""

import json
import logging
from pathlib import Path

import pytest
import tensorflow as tf

from conftest import write_images
from fastgan_tf import oscompat
from fastgan_tf.config import TrainConfig
from fastgan_tf.data import resolve as resolve_mod
from fastgan_tf.data.resolve import moved_path, other_side, resolve_dataset
from fastgan_tf.errors import UserError
from fastgan_tf.runs import checkpoint_prefix, usable_config


@pytest.fixture
def mount(tmp_path, monkeypatch):
    """A stand-in for WSL's /mnt: `<tmp>/mnt/c` is drive C."""
    root = tmp_path / "mnt"
    (root / "c").mkdir(parents=True)
    monkeypatch.setattr(resolve_mod, "WSL_MOUNT_ROOT", root)
    return root


@pytest.fixture
def windows(monkeypatch):
    monkeypatch.setattr(oscompat, "on_windows", lambda: True)


# -- the translation --------------------------------------------------------------------------

@pytest.mark.parametrize("stored, expected", [
    ("C:\\data\\faces", "c/data/faces"),
    ("c:/Data/Faces", "c/Data/Faces"),
    ("D:\\data/mixed\\slashes\\", "d/data/mixed/slashes"),
    ("E:", "e"),
    ("C:\\\\doubled\\\\separators", "c/doubled/separators"),
])
def test_windows_paths_are_translated_to_the_wsl_mount(stored, expected, mount):
    assert other_side(stored) == str(mount / expected)


@pytest.mark.parametrize("stored", ["/mnt/c/data", "faces", "C:relative", "obama",
                                    "\\\\server\\share"])
def test_other_paths_have_no_other_side_on_linux(stored):
    assert other_side(stored) is None


@pytest.mark.parametrize("stored, expected", [
    ("/mnt/c/data/faces", "C:\\data\\faces"),
    ("/MNT/C/Data", "C:\\Data"),
    ("\\mnt\\d\\x/y", "D:\\x\\y"),
    ("/mnt/c", "C:\\"),
    ("/mnt/c/", "C:\\"),
])
def test_wsl_paths_are_translated_to_drive_letters_on_windows(stored, expected, windows):
    assert other_side(stored) == expected


@pytest.mark.parametrize("stored", ["C:\\data", "/home/me/data", "/mnt/cd/x", "/mnt", "faces"])
def test_other_paths_have_no_other_side_on_windows(stored, windows):
    assert other_side(stored) is None


def test_moved_path_prefers_the_stored_path_then_the_translation(mount, tmp_path, caplog):
    (mount / "c" / "data").mkdir()
    assert moved_path(str(tmp_path)) == str(tmp_path)  # exists: used as it is, silently
    with caplog.at_level(logging.INFO, logger="fastgan_tf"):
        assert moved_path("C:\\data") == str(mount / "c" / "data")
    assert "using" in caplog.text and str(mount / "c" / "data") in caplog.text
    assert moved_path("C:\\nothing") is None and moved_path("nothing") is None


# -- a run's config ---------------------------------------------------------------------------

def test_usable_config_translates_every_recorded_path(mount):
    drive = mount / "c"
    write_images(drive / "data" / "faces", count=2)
    (drive / "cache").mkdir()
    for name in ("inception.h5", "vgg.h5"):
        (drive / name).write_bytes(b"x")
    cfg = TrainConfig(dataset="C:\\data\\faces", data_dir="C:\\cache",
                      inception_weights="c:/inception.h5", vgg_weights="C:\\vgg.h5")
    here = usable_config(cfg, needed=("dataset", "inception_weights"))
    assert here.dataset == str(drive / "data" / "faces")
    assert here.data_dir == str(drive / "cache")
    assert here.inception_weights == str(drive / "inception.h5")
    assert here.vgg_weights == str(drive / "vgg.h5")
    assert cfg.dataset == "C:\\data\\faces"  # the run's own config is left as it was
    assert (here.resolution, here.ngf) == (cfg.resolution, cfg.ngf)


def test_usable_config_keeps_names_and_paths_it_does_not_need(mount):
    for name in ("obama", "demo"):
        assert usable_config(TrainConfig(dataset=name), needed=("dataset",)).dataset == name
    cfg = TrainConfig(dataset="C:\\gone", inception_weights="C:\\gone.h5")
    assert usable_config(cfg) == cfg  # nothing needed: the caller's own errors come later


def test_missing_dataset_says_what_was_tried_on_windows(windows):
    cfg = TrainConfig(dataset="/mnt/c/data/faces")
    with pytest.raises(UserError) as info:
        usable_config(cfg, needed=("dataset",))
    assert str(info.value) == ("the run's dataset /mnt/c/data/faces is not on this machine: "
                               "tried /mnt/c/data/faces and C:\\data\\faces; pass --dataset PATH")


def test_missing_dataset_says_what_was_tried_on_linux(mount):
    with pytest.raises(UserError, match=r"tried C:\\data\\faces and .*/mnt/c/data/faces; pass "
                                        r"--dataset PATH$"):
        usable_config(TrainConfig(dataset="C:\\data\\faces"), needed=("dataset",))
    with pytest.raises(UserError, match=r"the run's inception_weights C:\\w.h5 .* pass "
                                        "--inception-weights PATH"):
        usable_config(TrainConfig(dataset="demo", inception_weights="C:\\w.h5"),
                      needed=("inception_weights",))


def test_a_dataset_given_replaces_the_recorded_one(mount, tmp_path):
    folder = write_images(tmp_path / "here", count=2)
    cfg = TrainConfig(dataset="C:\\data\\faces")
    assert usable_config(cfg, dataset=str(folder), needed=("dataset",)).dataset == str(folder)
    with pytest.raises(UserError, match=r"^--dataset /nowhere is not on this machine: tried "
                                        r"/nowhere; check the path$"):
        usable_config(cfg, dataset="/nowhere", needed=("dataset",))


def test_the_windows_form_is_used_when_it_exists_on_simulated_windows(windows, tmp_path,
                                                                   monkeypatch):
    # On Linux "C:\data\faces" is one relative file name: made in the working folder, it stands
    # for the folder the Windows path names.
    monkeypatch.chdir(tmp_path)
    Path("C:\\data\\faces").mkdir()
    here = usable_config(TrainConfig(dataset="/mnt/c/data/faces"), needed=("dataset",))
    assert here.dataset == "C:\\data\\faces"


def test_resolve_dataset_translates_a_moved_folder_and_data_dir(mount, tmp_path, monkeypatch,
                                                                caplog):
    monkeypatch.setenv("FASTGAN_DATA", str(tmp_path / "default"))
    write_images(mount / "c" / "imgs", count=2)
    ds = resolve_dataset("C:\\imgs", data_dir="D:\\nowhere", progress=False)
    assert ds.root == (mount / "c" / "imgs").resolve()
    assert "the data dir D:\\nowhere is not on this machine" in caplog.text
    assert resolve_mod._usable_data_dir("D:\\nowhere") == tmp_path / "default"
    (mount / "c" / "cache").mkdir()
    assert resolve_mod._usable_data_dir("C:\\cache") == mount / "c" / "cache"
    assert resolve_mod._usable_data_dir(tmp_path / "new") == tmp_path / "new"  # made later
    with pytest.raises(UserError, match=r"no such folder or .zip file \(tried C:\\gone and "):
        resolve_dataset("C:\\gone", progress=False)


# -- best/ without TensorFlow's state file ----------------------------------------------------

def write_best(run: Path, steps=(1, 2)) -> list[str]:
    """best/ as FidTracker writes it: a CheckpointManager keeping one, then best.json."""
    variable = tf.Variable(0.0)
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(v=variable), str(run / "best"),
                                         max_to_keep=2, checkpoint_name="best")
    prefixes = [manager.save(checkpoint_number=step) for step in steps]
    record = {"epoch": 1, "step": steps[-1], "fid": 1.0, "checkpoint": Path(prefixes[-1]).name}
    (run / "best" / "best.json").write_text(json.dumps(record), encoding="utf-8")
    return prefixes


def test_best_is_found_from_best_json_when_the_state_file_is_gone(tmp_path):
    prefixes = write_best(tmp_path)
    assert checkpoint_prefix(tmp_path, "best") == prefixes[-1]
    (tmp_path / "best" / "checkpoint").unlink()  # killed inside Windows' delete-then-move
    assert checkpoint_prefix(tmp_path, "best") == prefixes[-1]
    assert checkpoint_prefix(tmp_path, str(tmp_path / "best")) == prefixes[-1]


def test_best_falls_back_to_the_state_file(tmp_path):
    prefixes = write_best(tmp_path)
    record_path = tmp_path / "best" / "best.json"
    for record in ({"checkpoint": "best-99"}, {"checkpoint": "../best/best-1"}, "not json"):
        record_path.write_text(record if isinstance(record, str) else json.dumps(record),
                               encoding="utf-8")
        assert checkpoint_prefix(tmp_path, "best") == prefixes[-1]
    record_path.unlink()
    assert checkpoint_prefix(tmp_path, "best") == prefixes[-1]


def test_no_best_model_is_one_clear_line(tmp_path):
    with pytest.raises(UserError, match="has no best model yet.*--checkpoint latest"):
        checkpoint_prefix(tmp_path, "best")
    write_best(tmp_path)
    (tmp_path / "best" / "checkpoint").unlink()
    (tmp_path / "best" / "best.json").unlink()
    with pytest.raises(UserError, match="has no best model yet"):
        checkpoint_prefix(tmp_path, "best")


# -- what evaluate.py needs for each action ---------------------------------------------------

def test_evaluate_needs_only_the_paths_its_action_reads(mount, tmp_path):
    from fastgan_tf.cli.evaluate import _config_here, build_parser

    folder = str(write_images(tmp_path / "faces", count=2))
    cfg = TrainConfig(dataset="C:\\gone", inception_weights="C:\\gone.h5")

    def here(action, *argv):
        return _config_here(build_parser().parse_args(list(argv)), action, cfg)

    assert here("generate", "--generate", "1") == cfg
    with pytest.raises(UserError, match="the run's dataset C:\\\\gone"):
        here("nearest", "--nearest")
    assert here("nearest", "--nearest", "--dataset", folder).dataset == folder
    with pytest.raises(UserError, match="the run's inception_weights .* --inception-weights PATH"):
        here("metrics", "--fid", "--dataset", folder)
    assert here("metrics", "--fid", "--dataset", folder, "--inception-weights", "w.h5")
    assert here("metrics", "--fid", "--dataset", folder, "--backbone", "standard")
    with pytest.raises(UserError, match="--dataset applies to --fid, --kid, --pr and --nearest"):
        here("export", "--export", "x", "--dataset", folder)
