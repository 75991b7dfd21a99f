"""FID during training: logged per epoch, best generator kept and surviving resume, never fatal."""

import json

import pytest

from support import PixelBackbone  # a fast stand-in for Inception
from fastgan_tf.cli.train import main
from fastgan_tf.errors import UserError
from fastgan_tf.runs import load_generator

pytestmark = pytest.mark.slow  # short training runs with FID every epoch


@pytest.fixture
def fake_backbone(monkeypatch, tmp_path):
    monkeypatch.setenv("FASTGAN_CACHE", str(tmp_path / "cache"))
    calls = []

    def load(name, weights="imagenet", **kw):
        calls.append((name, weights))
        return PixelBackbone()

    monkeypatch.setattr("fastgan_tf.metrics.load_backbone", load)
    return calls


ARGS = ["--resolution", "64", "--ngf", "16", "--ndf", "16", "--recon-loss", "l1",
        "--batch-size", "4", "--fid-every", "1", "--fid-samples", "8", "--run-name", "r"]


def fid_records(run):
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == "fid"]


def test_fid_each_epoch_and_best_survives_resume(image_folder, tmp_path, fake_backbone, capsys):
    out = tmp_path / "runs"
    assert main(["--dataset", str(image_folder), "--epochs", "2", "--out", str(out), *ARGS]) == 0
    run = out / "r"
    records = fid_records(run)
    assert [r["epoch"] for r in records] == [1, 2]
    assert all(r["fid"] >= 0 and r["num_fake"] == 8 and r["num_real"] == 16 for r in records)
    assert all(r["backbone"] == "pixels" for r in records)
    best = json.loads((run / "best" / "best.json").read_text())
    assert best["fid"] == min(r["fid"] for r in records)
    assert "FID" in capsys.readouterr().err
    loaded = load_generator(run, "best")
    assert loaded.epoch == best["epoch"] and loaded.step == best["step"]
    # Resume for one more epoch: the best record is read back, not forgotten.
    assert main(["--dataset", str(image_folder), "--epochs", "3", "--out", str(out), *ARGS]) == 0
    after = json.loads((run / "best" / "best.json").read_text())
    assert after["fid"] <= best["fid"]
    assert [r["epoch"] for r in fid_records(run)] == [1, 2, 3]
    assert len(fake_backbone) == 2  # loaded once per process


def test_missing_backbone_weights_warn_once_and_training_goes_on(image_folder, tmp_path,
                                                                 monkeypatch, capsys):
    def offline(name, weights="imagenet", **kw):
        raise UserError("Keras InceptionV3 weights not found: put inception_v3_weights.h5 in ~/.keras/models")

    monkeypatch.setattr("fastgan_tf.metrics.load_backbone", offline)
    out = tmp_path / "runs"
    assert main(["--dataset", str(image_folder), "--epochs", "2", "--out", str(out), *ARGS]) == 0
    err = capsys.readouterr().err
    assert err.count("FID disabled") == 1 and "inception_v3_weights.h5" in err
    assert fid_records(out / "r") == [] and not (out / "r" / "best").exists()
