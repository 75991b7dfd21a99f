"""evaluate.py end to end on a tiny run trained once through the real trainer (CPU, offline)."""

import json
import os
import re
import shutil
import warnings

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import write_images
from support import PixelBackbone
from fastgan_tf import generation
from fastgan_tf.cli import evaluate as evaluate_cli
from fastgan_tf.cli.evaluate import main
from fastgan_tf.cli.train import main as train_main
from fastgan_tf.metrics import (
    FeatureStats,
    kernel_inception_distance,
    precision_recall_density_coverage,
)
from fastgan_tf.runs import load_generator
from fastgan_tf.training.dataset import load_training_images

pytestmark = pytest.mark.slow  # one 64px training run (~40 s on 2 busy cores) shared by all tests

INCEPTION_SIZE = 75  # Keras's smallest InceptionV3 input: keeps the random backbone fast


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """checkpoints-like folder with one run `tiny`: 8 images, 1 epoch, best/ from FID tracking."""
    root = tmp_path_factory.mktemp("evaluate")
    folder = write_images(root / "images", count=8)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FASTGAN_CACHE", str(root / "train-cache"))
        mp.setattr("fastgan_tf.metrics.load_backbone", lambda *a, **k: PixelBackbone())
        code = train_main(["--dataset", str(folder), "--epochs", "1", "--resolution", "64",
                           "--ngf", "16", "--ndf", "16", "--recon-loss", "l1", "--batch-size", "4",
                           "--out", str(root / "runs"), "--run-name", "tiny",
                           "--fid-every", "1", "--fid-samples", "8"])
    assert code == 0
    run = root / "runs" / "tiny"
    assert (run / "best" / "best.json").exists()
    return run


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    """A randomly initialised Keras InceptionV3 saved as a weights file (no download)."""
    import keras

    path = tmp_path_factory.mktemp("weights") / "random_inception.weights.h5"
    model = keras.applications.InceptionV3(include_top=False, weights=None, pooling="avg",
                                           input_shape=(INCEPTION_SIZE, INCEPTION_SIZE, 3))
    model.save_weights(str(path))
    return path


@pytest.fixture(scope="module")
def reuse_backbones():
    """load_backbone giving a small InceptionV3 (INCEPTION_SIZE px input) built once per
    (name, weights, batch size): tracing Inception takes seconds."""
    from fastgan_tf import metrics

    real, built, calls = metrics.load_backbone, {}, []

    def load(name="keras", weights="imagenet", batch_size=32):
        calls.append((name, str(weights), batch_size))
        if calls[-1] not in built:
            built[calls[-1]] = real(name, weights, batch_size, input_size=INCEPTION_SIZE)
        return built[calls[-1]]

    load.calls = calls
    return load


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTGAN_CACHE", str(tmp_path / "cache"))


def run_json(capsys, *argv):
    code = main([*map(str, argv), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def run_error(capsys, *argv):
    code = main(list(map(str, argv)))
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


# --------------------------------------------------------------------------- metrics


def test_fid_kid_json_cache_and_readable_line(trained, inception_file, reuse_backbones, tmp_path,
                                              monkeypatch, capsys):
    monkeypatch.setattr("fastgan_tf.metrics.load_backbone", reuse_backbones)
    argv = ["--fid", "--kid", "--out", trained.parent, "--num-samples", "8", "--batch-size", "4",
            "--inception-weights", inception_file, "--kid-subsets", "5"]
    first = run_json(capsys, *argv)
    assert reuse_backbones.calls[-1] == ("keras", str(inception_file), 4)
    assert first["run"] == str(trained) and first["checkpoint"] == "ckpt-2"
    assert (first["epoch"], first["step"]) == (1, 2)
    assert first["backbone"] == "keras" and first["backbone_variant"] == "keras-75px"
    assert (first["num_fake"], first["num_real"], first["kid_subset_size"]) == (8, 8, 8)
    assert first["fid"] >= 0 and np.isfinite(first["kid_mean"]) and first["kid_std"] >= 0
    assert first["real_stats_cached"] is False
    cache_files = list((tmp_path / "cache" / "fid").glob("real_keras-75px_64px_*.npz"))
    assert len(cache_files) == 1

    # The cache holds the whole training set through the same backbone, and the scores are those
    # of the first 8 images of the seed-0 sample stream (KID checked: FID costs ~30 s here).
    backbone = reuse_backbones(*reuse_backbones.calls[-1])
    cfg = load_generator(trained).config
    images = load_training_images(cfg).images
    real = FeatureStats.load(cache_files[0])
    assert real.count == len(images) == 8
    np.testing.assert_allclose(real.mean(), backbone.features(images).mean(0), rtol=1e-5,
                               atol=1e-6)
    g = load_generator(trained).generator
    fake = backbone.features(generation.generate(g, 8, seed=0, batch_size=4))
    kid, _ = kernel_inception_distance(real.features, fake, num_subsets=5, subset_size=1000)
    assert first["kid_mean"] == pytest.approx(kid, rel=1e-6, abs=1e-12)

    def no_recompute(*args, **kwargs):  # computed real statistics are always saved to the cache
        raise AssertionError("the real statistics should come from the cache")

    monkeypatch.setattr(FeatureStats, "save", no_recompute)
    kid_argv = [a for a in argv if a != "--fid"]  # KID only from here: FID's eigh is the slow part
    second = run_json(capsys, *kid_argv)
    assert second["real_stats_cached"] is True and "fid" not in second
    assert second["kid_mean"] == first["kid_mean"]  # same seed, same samples, same score

    assert main(list(map(str, kid_argv))) == 0
    line = capsys.readouterr().out.strip()
    assert re.fullmatch(r"KID \S+ ± \S+ \(keras InceptionV3 \[keras-75px\], 8 generated vs 8 real, "
                        r"checkpoint ckpt-2, epoch 1\)", line), line
    assert re.fullmatch(r"FID \d+\.\d\d, KID \S+ ± \S+ \(keras InceptionV3 \[keras-75px\], .*",
                        evaluate_cli.metrics_line(first))
    logged = [json.loads(x) for x in (trained / "evaluations.jsonl").read_text().splitlines()]
    assert logged[-3:-1] == [first, second]


def test_pr_shares_the_generated_features_with_kid(trained, inception_file, reuse_backbones,
                                                  monkeypatch, capsys):
    monkeypatch.setattr("fastgan_tf.metrics.load_backbone", reuse_backbones)
    argv = ["--kid", "--pr", "--out", trained.parent, "--num-samples", "8", "--batch-size", "4",
            "--inception-weights", inception_file, "--kid-subsets", "5"]
    backbone = reuse_backbones("keras", str(inception_file), 4)
    embedded = []
    features = backbone.features
    monkeypatch.setattr(backbone, "features", lambda images: (embedded.append(len(images)),
                                                              features(images))[1])
    result = run_json(capsys, *argv)
    assert sum(embedded) == 8 + 8  # the training set once (for the cache), the samples once
    assert (result["prdc_num_real"], result["prdc_num_fake"], result["pr_k"], result["dc_k"]) \
        == (8, 8, 3, 5)

    # The scores of the first 8 images of the seed-0 stream, like KID in the test above.
    g = load_generator(trained).generator
    fake = features(generation.generate(g, 8, seed=0, batch_size=4))
    real = features(load_training_images(load_generator(trained).config).images)
    expected = precision_recall_density_coverage(real, fake)
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, abs=1e-12), key
    kid, _ = kernel_inception_distance(real, fake, num_subsets=5, subset_size=1000)
    assert result["kid_mean"] == pytest.approx(kid, rel=1e-6, abs=1e-12)

    assert main(list(map(str, argv))) == 0
    line = capsys.readouterr().out.strip()
    assert re.fullmatch(r"KID \S+ ± \S+, precision \d\.\d{3}, recall \d\.\d{3}, "
                        r"density \d+\.\d{3}, coverage \d\.\d{3} \(keras InceptionV3 "
                        r"\[keras-75px\], 8 generated vs 8 real, checkpoint ckpt-2, epoch 1\)",
                        line), line


def test_kid_subsets_is_documented_and_the_test_only_flag_is_gone(capsys):
    assert main(["--help"]) == 0
    usage = " ".join(capsys.readouterr().out.split())
    assert "--kid-subsets N KID: average over N random subsets" in usage and "default 100" in usage
    assert "--backbone-input-size" not in usage
    assert "unrecognized arguments: --backbone-input-size" in run_error(
        capsys, "--fid", "--backbone-input-size", "75")


def test_readable_metrics_line():
    record = {"fid": 41.049, "backbone": "keras", "backbone_variant": "keras", "num_fake": 5000,
              "num_real": 100, "checkpoint": "ckpt-20400", "epoch": 1700}
    assert evaluate_cli.metrics_line(record) == (
        "FID 41.05 (keras InceptionV3, 5000 generated vs 100 real, checkpoint ckpt-20400, "
        "epoch 1700)")
    record.update(precision=0.71234, recall=0.3051, density=1.0476, coverage=0.81)
    assert evaluate_cli.metrics_line(record) == (
        "FID 41.05, precision 0.712, recall 0.305, density 1.048, coverage 0.810 (keras "
        "InceptionV3, 5000 generated vs 100 real, checkpoint ckpt-20400, epoch 1700)")


def test_offline_backbone_errors_are_one_line(trained, tmp_path, monkeypatch, capsys):
    err = run_error(capsys, "--fid", "--out", trained.parent, "--inception-weights",
                    tmp_path / "missing.h5")
    assert "missing.h5" in err and "not found" in err

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr("fastgan_tf.downloads.probe",
                        lambda url, timeout: "[Errno -2] Name or service not known")
    err = run_error(capsys, "--fid", "--kid", "--out", trained.parent)
    assert "could not be downloaded" in err and "--inception-weights PATH" in err


# --------------------------------------------------------------------------- run and checkpoint


def test_default_run_is_the_most_recently_active(trained, tmp_path, capsys):
    out = tmp_path / "runs"
    for name, stamp in (("older", 1_000_000_000), ("newer", 1_000_100_000)):
        shutil.copytree(trained, out / name)
        for path in (out / name).rglob("*"):
            os.utime(path, (stamp, stamp))
    assert run_json(capsys, "--generate", 1, "--out", out)["run"] == str(out / "newer")
    os.utime(out / "older" / "metrics.jsonl", (1_000_200_000, 1_000_200_000))
    assert run_json(capsys, "--generate", 1, "--out", out)["run"] == str(out / "older")
    # --run accepts a folder or a run name under --out
    assert run_json(capsys, "--generate", 1, "--out", out, "--run", "newer")["run"] \
        == str(out / "newer")


def test_checkpoint_best_and_a_clear_error_without_it(trained, tmp_path, capsys):
    best = json.loads((trained / "best" / "best.json").read_text())
    result = run_json(capsys, "--generate", 1, "--run", trained, "--checkpoint", "best",
                      "--output-dir", tmp_path / "g")
    assert result["checkpoint"].startswith("best/") and result["epoch"] == best["epoch"]

    shutil.copytree(trained, tmp_path / "nobest")
    shutil.rmtree(tmp_path / "nobest" / "best")
    err = run_error(capsys, "--fid", "--run", tmp_path / "nobest", "--checkpoint", "best")
    assert "no best model" in err and "--checkpoint latest" in err


@pytest.mark.parametrize("argv, message", [
    ([], "no action given: pass one of --fid, --kid, --pr, --generate N"),
    (["--fid", "--generate", "2"], "one action per call"),
    (["--pr", "--nearest"], "got --fid/--kid/--pr and --nearest (only --fid, --kid and --pr go"),
    (["--pr", "--truncation", "0.7"], "--truncation does not apply to --fid/--kid/--pr"),
    (["--kid", "--pr", "--num-samples", "5"], "at least 6 for --pr (k = 5 nearest neighbours)"),
    (["--generate", "2", "--tflite"], "--tflite goes with --export DIR"),
    (["--fid", "--truncation", "0.7"], "--truncation does not apply"),
    (["--generate", "2", "--truncation", "-1"], "must be positive"),
    (["--style-mix"], "needs a FastGAN generator of 256px"),
    (["--generate", "0"], "expected a positive integer"),
    (["--kid", "--num-samples", "1"], "at least 2"),
])
def test_usage_errors_are_one_line(trained, argv, message, capsys):
    err = run_error(capsys, *argv, "--out", trained.parent)
    assert message in err


def test_no_runs_is_a_clear_error(tmp_path, capsys):
    assert "no training runs found" in run_error(capsys, "--generate", 1, "--out", tmp_path)


# --------------------------------------------------------------------------- pictures


def test_generate_files_are_deterministic_and_seeded(trained, tmp_path, capsys):
    def files(seed, folder, *extra):
        result = run_json(capsys, "--generate", 3, "--seed", seed, "--run", trained,
                          "--output-dir", tmp_path / folder, "--batch-size", 2, *extra)
        return [tmp_path / folder / name for name in result["files"]]

    first, again, other = files(1, "a"), files(1, "b"), files(2, "c")
    psi = files(1, "d", "--truncation", "0.5")
    assert [p.name for p in first] == ["seed1_00000.png", "seed1_00001.png", "seed1_00002.png"]
    assert all(Image.open(p).size == (64, 64) for p in first)
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in again]
    assert all(p.read_bytes() != q.read_bytes() for p, q in zip(first, other))
    assert all(p.read_bytes() != q.read_bytes() for p, q in zip(first, psi))

    main(["--generate", "3", "--run", str(trained), "--output-dir", str(tmp_path / "e")])
    assert capsys.readouterr().out.startswith(f"Wrote 3 samples to {tmp_path / 'e'}")
    assert len(list((tmp_path / "e").glob("seed0_*.png"))) == 3


def test_grid_interpolation_and_nearest(trained, tmp_path, capsys):
    grid = run_json(capsys, "--generate", 4, "--grid", "--run", trained)
    assert grid["file"] == str(trained / "generated" / "grid_seed0.png")
    assert Image.open(grid["file"]).size == (2 * 66 + 2, 2 * 66 + 2)

    walk = run_json(capsys, "--interpolate", 3, "--frames", 2, "--batch-size", 2, "--run",
                    trained, "--output-dir", tmp_path)
    assert walk["frames"] == 6 and len(list((tmp_path / "seed0_walk").glob("*.png"))) == 6
    with Image.open(walk["gif"]) as gif:
        assert gif.n_frames == 6

    near = run_json(capsys, "--nearest", 2, "--neighbours", 3, "--run", trained,
                    "--output-dir", tmp_path)
    idx, dist = np.array(near["indices"]), np.array(near["distances"])
    assert idx.shape == dist.shape == (2, 3) and idx.min() >= 0 and idx.max() < 8
    assert (np.diff(dist, axis=1) >= 0).all()
    assert Image.open(near["file"]).size == (4 * 66 + 2, 2 * 66 + 2)


def test_export_matches_the_loaded_generator(trained, tmp_path, capsys):
    result = run_json(capsys, "--export", tmp_path / "export", "--run", trained)
    assert result["generator"]["resolution"] == 64 and result["checkpoint"] == "ckpt-2"
    assert "ckpt-2" in (tmp_path / "export" / "README.txt").read_text()
    assert (tmp_path / "export" / "generator.keras").is_file()
    model = tf.saved_model.load(str(tmp_path / "export"))
    z = np.random.default_rng(0).standard_normal((4, 256)).astype(np.float32)
    got = model.signatures["serving_default"](z=tf.constant(z))["images_float"].numpy()
    g = load_generator(trained).generator
    expect = g(tf.constant(z), training=False, noise_seed=tf.constant([0, 0], tf.int64))[0]
    np.testing.assert_allclose(got, np.clip(expect.numpy(), -1, 1), atol=1e-5)


def test_export_with_tflite_and_again_without(trained, tmp_path, capsys):
    out = tmp_path / "export"
    result = run_json(capsys, "--export", out, "--tflite", "--batch-size", 4, "--run", trained)
    assert result["tflite"]["batch_size"] == 4
    assert result["tflite"]["inputs"] == {"z": ["float32", [4, 256]]}
    assert json.loads((out / "generator.json").read_text())["tflite"] == result["tflite"]
    assert "generator_fp16.tflite" in (out / "README.txt").read_text()
    z = np.random.default_rng(0).standard_normal((4, 256)).astype(np.float32)
    served = tf.saved_model.load(str(out)).signatures["serving_default"](z=tf.constant(z))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # tf.lite.Interpreter's deprecation notice
        interpreter = tf.lite.Interpreter(model_path=str(out / "generator.tflite"))
    got = interpreter.get_signature_runner("serving_default")(z=z)
    np.testing.assert_allclose(got["images_float"], served["images_float"].numpy(), atol=1e-5)

    main(["--export", str(out), "--run", str(trained)])  # re-export: no stale TFLite models
    assert "Exported the EMA generator" in capsys.readouterr().out
    assert not list(out.glob("*.tflite"))
    assert "tflite" not in json.loads((out / "generator.json").read_text())


# --------------------------------------------------------------------------- moved runs (issue 12)


def moved_copy(trained, tmp_path, dataset: str):
    """A copy of the run whose config.yaml records `dataset`, as a run trained elsewhere does."""
    import yaml

    run = tmp_path / "moved"
    shutil.copytree(trained, run)
    path = run / "config.yaml"
    values = yaml.safe_load(path.read_text(encoding="utf-8"))
    path.write_text(yaml.safe_dump({**values, "dataset": dataset}, sort_keys=False),
                    encoding="utf-8")
    return run


def test_a_run_moved_from_windows_finds_its_images_under_the_wsl_mount(trained, tmp_path,
                                                                        monkeypatch, capsys):
    from fastgan_tf.data import resolve as resolve_mod

    monkeypatch.setattr(resolve_mod, "WSL_MOUNT_ROOT", tmp_path / "mnt")
    images = load_generator(trained).config.dataset
    shutil.copytree(images, tmp_path / "mnt" / "c" / "data" / "faces")
    run = moved_copy(trained, tmp_path, "C:\\data\\faces")
    near = run_json(capsys, "--nearest", 1, "--neighbours", 1, "--run", run,
                    "--output-dir", tmp_path / "out")
    assert near["num_real"] == 8


def test_a_moved_run_takes_dataset_when_its_images_are_not_found(trained, tmp_path, monkeypatch,
                                                                 capsys):
    from fastgan_tf.data import resolve as resolve_mod

    monkeypatch.setattr(resolve_mod, "WSL_MOUNT_ROOT", tmp_path / "mnt")
    images = load_generator(trained).config.dataset
    run = moved_copy(trained, tmp_path, "C:\\data\\faces")
    err = run_error(capsys, "--nearest", 1, "--run", run)
    assert (f"the run's dataset C:\\data\\faces is not on this machine: tried C:\\data\\faces and "
            f"{tmp_path / 'mnt' / 'c' / 'data' / 'faces'}; pass --dataset PATH") in err
    near = run_json(capsys, "--nearest", 1, "--neighbours", 1, "--run", run, "--dataset", images,
                    "--output-dir", tmp_path / "out")
    assert near["num_real"] == 8
    err = run_error(capsys, "--generate", 1, "--run", run, "--dataset", images)
    assert "--dataset applies to --fid, --kid, --pr and --nearest" in err


def test_best_without_tensorflows_state_file(trained, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    (run / "best" / "checkpoint").unlink()  # a kill inside Windows' delete-then-move rename
    best = json.loads((run / "best" / "best.json").read_text(encoding="utf-8"))
    result = run_json(capsys, "--generate", 1, "--run", run, "--checkpoint", "best",
                      "--output-dir", tmp_path / "out")
    assert result["checkpoint"] == f"best/{best['checkpoint']}"
    assert result["epoch"] == best["epoch"]
