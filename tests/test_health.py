"""Is my run healthy? (issue 14): the signals, their thresholds, one warning per condition, early
stopping, and choosing best/ by KID. Each condition is forced on purpose."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import write_images
from fastgan_tf.cli.train import main
from fastgan_tf.config import TrainConfig
from fastgan_tf.metrics.diversity import Reference, pixel_features
from fastgan_tf.training import registry
from fastgan_tf.training.fid import FidTracker
from fastgan_tf.training.health import HealthMonitor
from fastgan_tf.training.state import fake_logit_stats, real_logit_stats

TINY = ["--resolution", "64", "--ngf", "16", "--ndf", "16", "--recon-loss", "l1",
        "--batch-size", "4", "--run-name", "r", "--sample-every", "100"]


# ------------------------------------------------------------------------------ the signals
def test_logit_signals_by_hand():
    real = real_logit_stats(tf.constant([2.0, 0.5, -1.0, 3.0]))
    assert float(real["r_t"]) == pytest.approx((1 + 1 - 1 + 1) / 4)
    assert float(real["d_acc_real"]) == 0.75 and float(real["logits_real"]) == 1.125
    assert float(fake_logit_stats(tf.constant([-1.0, -2.0, 0.5, -0.1]))["d_acc_fake"]) == 0.75


def test_diversity_and_memorisation_by_hand():
    real = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # spacing 1, spread ~1.14
    reference = Reference.of(real)
    assert reference.spacing == 1.0
    assert reference.spread == pytest.approx((4 * 1 + 2 * 2 ** 0.5) / 6)
    copies = reference.compare(real[:2] + 0.01)  # next to two training points
    assert copies["memorisation"] == 1.0
    assert copies["diversity"] == pytest.approx(1.0 / reference.spread, abs=1e-3)
    collapsed = reference.compare(np.full((5, 2), 0.5))  # all samples the same, between points
    assert collapsed == {"diversity": 0.0, "memorisation": 0.0}


def test_a_generator_that_outputs_one_image_reads_as_collapsed(tmp_path):
    images = (np.random.default_rng(0).uniform(0, 255, (40, 64, 64, 3))).astype(np.uint8)
    reference = Reference.of_images(images)
    constant = np.zeros((16, 64, 64, 3), np.float32)  # what a collapsed G draws, 16 times
    assert reference.compare(pixel_features(constant))["diversity"] == 0.0
    assert reference.compare(pixel_features(images[:16]))["diversity"] == pytest.approx(1, abs=0.2)


@pytest.mark.slow
def test_a_discriminator_trained_far_ahead_reads_as_overfitting(tmp_path, caplog):
    """G frozen, D trained on one batch: it soon tells every real from every fake."""
    keras.utils.set_random_seed(0)
    cfg = TrainConfig(dataset="x", resolution=64, ngf=8, ndf=8, nz=32, batch_size=8,
                      recon_loss="l1", augment="")
    gan = registry.get("fastgan").make_gan(cfg)
    gan.g_opt.learning_rate.assign(0.0)
    gan.d_opt.learning_rate.assign(1e-3)
    real = tf.constant(np.random.default_rng(0).uniform(-1, 1, (8, 64, 64, 3)), tf.float32)
    for _ in range(30):
        stats = {k: float(v) for k, v in gan.train_on_batch(real).items()}
    assert stats["r_t"] > 0.9 and stats["d_acc_real"] > 0.9 and stats["d_acc_fake"] > 0.9
    monitor = HealthMonitor(tmp_path)
    assert monitor.check(stats) == ["d_overfits"]


# ------------------------------------------------------------------------------ warnings
def test_each_condition_warns_once_per_run_even_across_resumes(tmp_path, capsys, cli_logging):
    record = {"r_t": 0.97, "d_acc_real": 0.99, "d_acc_fake": 0.96, "diversity": 0.05,
              "memorisation": 0.8, "fid_evals_since_best": 4, "best_fid": 41.2}
    assert HealthMonitor(tmp_path).check(record) == [
        "d_overfits", "collapse", "memorisation", "fid_stalls"]
    err = capsys.readouterr().err
    assert "warning: the discriminator is overfitting (r_t 0.97: it calls 99% of real images " \
           "real and 96% of fakes fake)" in err
    assert "warning: samples are collapsing (diversity 0.05 of the training images')" in err
    assert "80% of samples sit next to one" in err
    assert "FID has not improved for 4 evaluations (best 41.20)" in err
    assert HealthMonitor(tmp_path).check(record) == []  # a resumed run: warned already
    healthy = {"r_t": 0.3, "d_acc_real": 0.6, "d_acc_fake": 0.6, "diversity": 0.9,
               "memorisation": 0.0, "fid_evals_since_best": 0}
    assert HealthMonitor(tmp_path / "other").check(healthy) == []


# ------------------------------------------------------------------------------ FID series
def scores(monkeypatch, fids, kids=None):
    """Make FID tracking return the given series (and KIDs), with a stand-in backbone."""
    from support import PixelBackbone

    series = iter(zip(fids, kids or [0.0] * len(fids)))

    def score(*args, **kwargs):
        fid, kid = next(series)
        return {"backbone": "pixels", "num_fake": 8, "num_real": 8, "fid": fid,
                "kid_mean": kid, "kid_std": 0.0, "backbone_variant": "pixels"}

    monkeypatch.setattr("fastgan_tf.training.fid.score_generator", score)
    monkeypatch.setattr("fastgan_tf.metrics.load_backbone", lambda *a, **k: PixelBackbone())


def records(run, kind):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
            if json.loads(line)["kind"] == kind]


@pytest.mark.slow
def test_a_rising_fid_warns_and_early_stop_ends_training(tmp_path, monkeypatch, capsys):
    scores(monkeypatch, [50.0, 40.0, 45.0, 47.0, 52.0, 60.0, 70.0])
    monkeypatch.setenv("FASTGAN_CACHE", str(tmp_path / "cache"))
    data = write_images(tmp_path / "data", count=8)
    code = main(["--dataset", str(data), "--epochs", "10", "--out", str(tmp_path / "runs"),
                 "--fid-every", "1", "--early-stop", "3", *TINY])
    err = capsys.readouterr().err
    assert code == 0, err
    fid = records(tmp_path / "runs" / "r", "fid")
    assert [r["fid"] for r in fid] == [50.0, 40.0, 45.0, 47.0, 52.0]
    assert [r["fid_evals_since_best"] for r in fid] == [0, 0, 1, 2, 3]
    assert "warning: FID has not improved for 3 evaluations (best 40.00)" in err
    assert "Early stop at step 10 (epoch 5): FID has not improved for 3 evaluations" in err
    best = json.loads((tmp_path / "runs" / "r" / "best" / "best.json").read_text())
    assert (best["fid"], best["epoch"]) == (40.0, 2)


def test_best_by_kid_keeps_the_lowest_kid(tmp_path, monkeypatch):
    scores(monkeypatch, [50.0, 40.0, 30.0], kids=[0.10, 0.20, 0.05])
    cfg = TrainConfig(dataset="x", resolution=64, ngf=8, ndf=8, nz=32, recon_loss="l1")
    gan = registry.get("fastgan").make_gan(cfg)
    images = np.zeros((8, 64, 64, 3), np.uint8)
    tracker = FidTracker(tmp_path, gan, images, "f", 8, best_by="kid")
    kept = [tracker.evaluate(epoch, epoch).get("best", False) for epoch in (1, 2, 3)]
    assert kept == [True, False, True]
    assert json.loads((tmp_path / "best" / "best.json").read_text())["kid_mean"] == 0.05
    assert tracker.evals_since_best() == 0


def test_diversity_is_a_registered_metric_on_the_fid_features():
    """At each FID evaluation the same signals come from the Inception features."""
    from fastgan_tf.metrics import FeatureStats
    from fastgan_tf.metrics.registry import calc_metric

    rng = np.random.default_rng(0)
    real, varied, collapsed = (FeatureStats(keep_features=True) for _ in range(3))
    real.update(rng.normal(size=(50, 8)))
    varied.update(rng.normal(size=(50, 8)))
    collapsed.update(np.ones((50, 8)))
    assert calc_metric("diversity", real, varied)["diversity"] == pytest.approx(1, abs=0.15)
    assert calc_metric("diversity", real, collapsed) == {"diversity": 0.0, "memorisation": 0.0}
