"""Runs that move between machines: another precision, another device count, and the ways a run
is stopped on Windows or from a thread (issue 12)."""

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import write_images
from fastgan_tf import config as config_lib
from fastgan_tf.checkpoints import Checkpoints
from fastgan_tf.cli.train import main
from fastgan_tf.training import precision, registry
from fastgan_tf.training.loop import Trainer
from fastgan_tf.training.compat import restore_objects
from fastgan_tf.training.precision import loss_scaling, set_policy

REPO = Path(__file__).resolve().parents[1]
TINY = ["--resolution", "64", "--ngf", "16", "--ndf", "16", "--recon-loss", "l1",
        "--batch-size", "4", "--fid-every", "0", "--checkpoint-every", "1", "--run-name", "r",
        "--sample-every", "100"]


def tensor(prefix, key):
    return tf.train.load_checkpoint(str(prefix)).get_tensor(f"{key}/.ATTRIBUTES/VARIABLE_VALUE")


def gan_for(mode: str):
    cfg = config_lib.TrainConfig(dataset="x", resolution=64, ngf=16, ndf=16, recon_loss="l1",
                                 batch_size=4)
    set_policy(mode)
    return registry.get("fastgan").make_gan(cfg, mixed=loss_scaling(mode))


def adam_state(optimizer) -> list[np.ndarray]:
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    return [v.numpy() for v in inner.variables]


@pytest.mark.parametrize("saved, now", [("on", "off"), ("off", "on"), ("bf16", "on"),
                                        ("on", "bf16")])
def test_a_checkpoint_restores_into_any_precision(saved, now, tmp_path):
    """Weights and Adam's moments carry over exactly; a loss scale only where there is one."""
    keras.utils.set_random_seed(1)
    saved_mode, saved = saved, gan_for(saved)
    for opt in (saved.g_opt, saved.d_opt):  # distinct moments, so a mix-up would show
        for v in getattr(opt, "inner_optimizer", opt).variables:
            floating = "float" in str(v.dtype)
            v.assign(tf.random.uniform(v.shape, 0, 1, seed=7) if floating
                     else tf.cast(v + 5, v.dtype))
    Checkpoints(tmp_path / "ckpt", **saved.trackables()).save(6)

    keras.utils.set_random_seed(2)  # other initial weights, replaced by the restore
    resumed = gan_for(now)
    checkpoints = Checkpoints(tmp_path / "ckpt", adapt=restore_objects, **resumed.trackables())
    restored = checkpoints.restore_latest()
    assert restored.path is not None and not restored.skipped, restored.skipped
    for a, b in zip(saved.generator.variables + saved.discriminator.variables,
                    resumed.generator.variables + resumed.discriminator.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for name in ("g_opt", "d_opt"):
        for a, b in zip(adam_state(getattr(saved, name)), adam_state(getattr(resumed, name))):
            np.testing.assert_array_equal(a, b)
    if now == "on" and saved_mode != "on":  # float16 now, not before: a fresh loss scale
        assert float(resumed.g_opt.dynamic_scale.numpy()) == float(
            gan_for("on").g_opt.dynamic_scale.numpy())
    set_policy("off")


@pytest.mark.slow
def test_training_moves_from_float16_to_float32_and_back(tmp_path, capsys):
    data = write_images(tmp_path / "data", count=8)
    out = tmp_path / "runs"

    def train(epochs, precision):
        code = main(["--dataset", str(data), "--epochs", str(epochs), "--out", str(out),
                     "--mixed-precision", precision, *TINY])
        return code, capsys.readouterr().err

    assert train(1, "on")[0] == 0  # 2 steps in float16
    code, err = train(2, "off")
    assert code == 0 and "Resuming with changed settings: mixed_precision on -> off" in err
    ckpt = out / "r" / "ckpt"
    assert tensor(ckpt / "ckpt-4", "g_opt/_iterations") == 4  # Adam went on from step 2
    assert not tf.train.load_checkpoint(str(ckpt / "ckpt-4")).has_tensor(
        "g_opt/dynamic_scale/.ATTRIBUTES/VARIABLE_VALUE")
    code, err = train(3, "on")
    assert code == 0 and "mixed_precision off -> on" in err
    assert tensor(ckpt / "ckpt-6", "g_opt/inner_optimizer/_iterations") == 6
    assert tensor(ckpt / "ckpt-6", "step") == 6
    reader = tf.train.load_checkpoint(str(ckpt / "ckpt-6"))
    floats = [reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
              if reader.get_variable_to_dtype_map()[k].is_floating]
    assert all(np.isfinite(f).all() for f in floats)


@pytest.mark.slow
def test_auto_trains_in_bfloat16_on_a_bfloat16_cpu_and_resumes_in_float32(tmp_path, capsys,
                                                                          monkeypatch):
    """A run started on a CPU with AMX (auto: bfloat16) moves to one without (auto: float32)."""
    data = write_images(tmp_path / "data", count=8)
    out = tmp_path / "runs"
    monkeypatch.setattr(precision, "cpu_bfloat16_pays", lambda: True)
    assert main(["--dataset", str(data), "--epochs", "1", "--out", str(out), *TINY]) == 0
    err = capsys.readouterr().err
    assert "--mixed-precision auto: bfloat16 on this CPU" in err and "mixed precision bf16" in err
    monkeypatch.setattr(precision, "cpu_bfloat16_pays", lambda: False)
    assert main(["--dataset", str(data), "--epochs", "2", "--out", str(out), *TINY]) == 0
    err = capsys.readouterr().err
    assert "mixed_precision bf16 -> off" in err and "mixed precision off" in err
    assert tensor(out / "r" / "ckpt" / "ckpt-4", "step") == 4


@pytest.mark.slow
def test_a_run_moves_between_device_counts(tmp_path):
    """Two replicas (two logical CPUs), then one device, then two again: each resumes."""
    data = write_images(tmp_path / "data", count=8)
    out = tmp_path / "runs"
    for epochs, strategy in ((1, "mirrored"), (2, "one"), (3, "mirrored")):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="-1",
                   PYTHONPATH=str(REPO), FASTGAN_VIRTUAL_DEVICES="2")
        done = subprocess.run([sys.executable, str(REPO / "train.py"), "--dataset", str(data),
                               "--epochs", str(epochs), "--out", str(out), "--strategy", strategy,
                               "--mixed-precision", "off", *TINY], env=env, cwd=REPO, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stderr
        if epochs > 1:
            assert f"strategy {'mirrored' if strategy == 'one' else 'one'} -> {strategy}" \
                in done.stderr
    assert tensor(out / "r" / "ckpt" / "ckpt-6", "epoch") == 3


def test_ctrl_break_on_windows_saves_like_ctrl_c(tmp_path, monkeypatch, capsys):
    """Windows raises SIGBREAK for Ctrl-Break; simulated with SIGUSR1 standing in for it."""
    if not hasattr(signal, "SIGUSR1"):
        pytest.skip("needs a signal to stand in for SIGBREAK (POSIX)")
    monkeypatch.setattr(signal, "SIGBREAK", signal.SIGUSR1, raising=False)
    original = Trainer._step_losses

    def step_then_break(self, real):
        stats = original(self, real)
        os.kill(os.getpid(), signal.SIGUSR1)
        return stats

    monkeypatch.setattr(Trainer, "_step_losses", step_then_break)
    data = write_images(tmp_path / "data", count=8)
    code = main(["--dataset", str(data), "--epochs", "3", "--out", str(tmp_path / "runs"), *TINY])
    err = capsys.readouterr().err
    assert code == 130 and "Stopping: saving a checkpoint" in err and "Saved;" in err
    assert tensor(tmp_path / "runs" / "r" / "ckpt" / "ckpt-1", "step") == 1


def test_training_from_another_thread_runs_and_can_be_stopped(tmp_path, capsys):
    from fastgan_tf.training.loop import train
    from fastgan_tf.training.options import resolve_config
    from fastgan_tf.training.signals import GracefulStop

    data = write_images(tmp_path / "data", count=8)
    cfg = resolve_config({"dataset": str(data), "epochs": 50, "out": str(tmp_path / "runs"),
                          "resolution": 64, "ngf": 16, "ndf": 16, "recon_loss": "l1",
                          "batch_size": 4, "fid_every": 0, "run_name": "r",
                          "sample_every": 100})
    stop, result = GracefulStop(), {}
    original = Trainer._step_losses

    def step_then_ask_to_stop(self, real):
        stats = original(self, real)
        if int(self.gan.step.numpy()) == 3:
            stop.request()
        return stats

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Trainer, "_step_losses", step_then_ask_to_stop)
        thread = threading.Thread(target=lambda: result.update(code=train(cfg, stop=stop)))
        thread.start()
        thread.join(timeout=300)
    assert result.get("code") == 130  # stopped and saved, no traceback from signal handling
    assert tensor(tmp_path / "runs" / "r" / "ckpt" / "ckpt-3", "step") == 3
