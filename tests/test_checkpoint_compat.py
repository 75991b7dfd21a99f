"""Runs written by earlier versions keep working: their checkpoints restore, evaluate and resume.

tests/fixtures/checkpoints/ holds, for checkpoints written by fastgan-tf at commit 06a93d3 (64 px,
ngf = ndf = 16), the saved keys with their dtypes and shapes, the object graph that maps Python
attributes to those keys, and the run's config.yaml (made with tools/checkpoint_manifest.py).
Each test writes a checkpoint with exactly those keys (tf.raw_ops.SaveV2, made-up values) and
loads it with today's code. A renamed attribute breaks these tests instead of users' runs.
"""

import gzip
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import yaml

from conftest import write_images

FIXTURES = Path(__file__).parent / "fixtures" / "checkpoints"
GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
TRAINING = ["fastgan-64", "fastgan-64-no-decoders", "fastgan-64-mixed-float16", "ssd-64"]
# Counters written into the checkpoints: a run at step 6 of epoch 1 (2 steps per epoch).
COUNTERS = {"step": 6, "epoch": 3, "batch_in_epoch": 0, "format_version": 1, "save_counter": 1}


def manifest(name: str) -> list[tuple[str, str, list[int]]]:
    rows = []
    for line in (FIXTURES / f"{name}.keys.txt").read_text(encoding="utf-8").splitlines():
        key, dtype, shape = line.split("\t")
        rows.append((key, dtype, [int(s) for s in shape.split(",") if s]))
    return rows


def made_up_value(key: str, dtype: str, shape: list[int]) -> np.ndarray:
    """A value that only this key has, of the recorded dtype and shape."""
    name = key.split("/.ATTRIBUTES")[0]
    if name in COUNTERS:
        return np.asarray(COUNTERS[name], dtype)
    rng = np.random.default_rng(zlib.crc32(key.encode()))
    if dtype.startswith("float"):
        value = 0.01 * np.abs(rng.standard_normal(shape))  # >= 0: Adam's second moments
        if name.endswith("dynamic_scale"):
            value = np.asarray(1024.0)
        return value.astype(dtype)
    return rng.integers(1, 1000, size=shape).astype(dtype)  # RNG and noise seeds, counters


def write_checkpoint(prefix: Path, name: str) -> dict[str, np.ndarray]:
    """Write `prefix` with the fixture's keys and object graph; returns the values written."""
    values = {key: made_up_value(key, dtype, shape) for key, dtype, shape in manifest(name)}
    graph = gzip.decompress((FIXTURES / f"{name}.graph.pb.gz").read_bytes())
    prefix.parent.mkdir(parents=True, exist_ok=True)
    keys = [*values, GRAPH_KEY]
    tensors = [tf.constant(v) for v in values.values()] + [tf.constant(graph)]
    tf.raw_ops.SaveV2(prefix=str(prefix), tensor_names=keys, shape_and_slices=[""] * len(keys),
                      tensors=tensors)
    return values


def old_run(tmp_path: Path, name: str, dataset: Path | None = None) -> Path:
    """A run folder as the old version left it: config.yaml, ckpt/ckpt-6 and the state file."""
    run = tmp_path / "runs" / name
    config = yaml.safe_load((FIXTURES / f"{name}.config.yaml").read_text(encoding="utf-8"))
    config.update(dataset=str(dataset or tmp_path / "gone"), out=str(run.parent), run_name=name)
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    write_checkpoint(run / "ckpt" / "ckpt-6", name)
    (run / "ckpt" / "checkpoint").write_text(
        'model_checkpoint_path: "ckpt-6"\nall_model_checkpoint_paths: "ckpt-6"\n', encoding="utf-8")
    return run


def saved_state(checkpoint, directory: Path) -> dict[str, np.ndarray]:
    """Every tensor `checkpoint` saves now, by key."""
    prefix = checkpoint.write(str(directory / "again"))
    reader = tf.train.load_checkpoint(prefix)
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
            if k != GRAPH_KEY}


@pytest.mark.parametrize("name", TRAINING)
def test_old_training_checkpoints_restore_every_variable(name, tmp_path):
    from fastgan_tf import config as config_lib
    from fastgan_tf.checkpoint_keys import BOOKKEEPING
    from fastgan_tf.checkpoints import Checkpoints
    from fastgan_tf.training import registry
    from fastgan_tf.training.compat import NEW_STATE, restore_objects
    from fastgan_tf.training.precision import set_policy

    written = write_checkpoint(tmp_path / "ckpt" / "ckpt-6", name)
    cfg = config_lib.load_saved(FIXTURES / f"{name}.config.yaml")
    mixed = cfg.mixed_precision == "on"
    set_policy(cfg.mixed_precision)
    gan = registry.get(cfg.model).make_gan(cfg, mixed=mixed)
    checkpoints = Checkpoints(tmp_path / "ckpt", adapt=restore_objects, **gan.trackables())
    restored = checkpoints.restore_latest()
    assert restored.path is not None and not restored.skipped, restored.skipped

    now = saved_state(checkpoints.checkpoint, tmp_path / "now")
    added = {k.split("/")[0] for k in set(now) - set(written)}
    assert set(written) <= set(now) and added <= set(NEW_STATE), "the checkpoint keys changed"
    different = [k for k in written if not np.array_equal(now[k], written[k])
                 and not k.startswith(BOOKKEEPING)]  # TensorFlow's save_counter: not ours
    assert different == []


@pytest.mark.parametrize("name, which", [("fastgan-64", "latest"), ("ssd-64", "latest"),
                                         ("fastgan-64-mixed-float16", "latest"),
                                         ("fastgan-64-best", "best")])
def test_evaluate_works_on_old_runs(name, which, tmp_path, capsys):
    from fastgan_tf.cli.evaluate import main

    if which == "best":
        run = old_run(tmp_path, "fastgan-64")
        write_checkpoint(run / "best" / "best-6", name)
        (run / "best" / "checkpoint").write_text(
            'model_checkpoint_path: "best-6"\nall_model_checkpoint_paths: "best-6"\n',
            encoding="utf-8")
        shutil.copyfile(FIXTURES / f"{name}.json", run / "best" / "best.json")
    else:
        run = old_run(tmp_path, name)
    code = main(["--run", str(run), "--checkpoint", which, "--generate", "2", "--batch-size", "2",
                 "--json"])
    assert code == 0, capsys.readouterr().err
    assert len(list((run / "generated").glob("*.png"))) == 2


@pytest.mark.slow
def test_old_run_resumes_and_trains_on(tmp_path, capsys):
    from fastgan_tf.cli.train import main

    data = write_images(tmp_path / "data", count=4)
    run = old_run(tmp_path, "fastgan-64", dataset=data)
    settings = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    code = main(["--config", str(run / "config.yaml"), "--epochs", "4"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert f"Resuming {run} from ckpt-6 (epoch 3, batch 0, step 6)" in err
    reader = tf.train.load_checkpoint(str(run / "ckpt" / "ckpt-8"))
    assert reader.get_tensor("epoch/.ATTRIBUTES/VARIABLE_VALUE") == 4
    assert settings["batch_size"] == 2  # 4 images: 2 steps per epoch, 6 -> 8
