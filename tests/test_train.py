"""End to end: dry run, a short training run, and bit-for-bit resume after SIGKILL and Ctrl-C."""

import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from conftest import write_images
from fastgan_tf.checkpoint_keys import NOT_STATE
from fastgan_tf.cli.train import main

REPO = Path(__file__).resolve().parents[1]
TINY = ["--resolution", "64", "--ngf", "16", "--ndf", "16", "--recon-loss", "l1",
        "--batch-size", "4"]


def test_dry_run_prints_config_params_and_dataset(image_folder, tmp_path, capsys):
    (image_folder / "broken.png").write_bytes(b"not a png")
    code = main(["--dataset", str(image_folder), "--epochs", "3", "--out", str(tmp_path / "runs"),
                 "--dry-run", *TINY])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["config"]["resolution"] == 64 and report["config"]["epochs"] == 3
    assert report["config"]["mixed_precision"] == "off"  # auto on a CPU
    assert report["params"]["generator"] > 0 and report["params"]["discriminator"] > 0
    assert report["dataset"]["images"] == 16 and report["dataset"]["skipped"] == 1
    assert not (tmp_path / "runs").exists()  # a dry run writes no run folder


@pytest.mark.slow
def test_reference_parameter_counts_in_dry_run(image_folder, tmp_path, capsys):
    main(["--dataset", str(image_folder), "--recon-loss", "l1", "--dry-run",
          "--out", str(tmp_path)])
    params = json.loads(capsys.readouterr().out)["params"]
    assert params == {"generator": 29_127_846, "discriminator": 11_526_160}


def test_demo_brings_its_own_defaults_and_flags_still_win(tmp_path, capsys):
    main(["--dataset", "demo", "--dry-run", "--ngf", "32", "--out", str(tmp_path)])
    cfg = json.loads(capsys.readouterr().out)["config"]
    assert (cfg["resolution"], cfg["recon_loss"], cfg["ngf"]) == (64, "l1", 32)


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "/no/such/folder"], "/no/such/folder"),
    (["--dataset", "demo", "--resolution", "100"], "invalid choice: 100"),
    (["--dataset", "demo", "--epochs", "ten"], "invalid int value"),
    (["--dataset", "demo", "--batch-size", "1000"], "larger than the dataset"),
    (["--dataset", "demo", "--recon-loss", "lpips", "--vgg-weights", "/nope.h5"], "/nope.h5"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, tmp_path, capsys):
    code = main([*argv, "--dry-run", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # keras h5 saver
def test_lpips_in_bfloat16_trains_and_warns_where_it_is_slow(image_folder, tmp_path, capsys):
    """--lpips-precision bf16 end to end, on a CPU taken for one without native bfloat16 (conftest
    pins that): the run trains, and says once that float32 would be faster here."""
    import keras

    vgg = keras.applications.VGG16(include_top=False, weights=None, input_shape=(None, None, 3))
    vgg.save(tmp_path / "vgg16.h5")  # Keras's legacy layout, as its ImageNet file
    tiny = [a if a != "l1" else "lpips" for a in TINY]
    code = main(["--dataset", str(image_folder), "--steps", "2", "--out", str(tmp_path / "runs"),
                 "--run-name", "r", "--lpips-precision", "bf16", "--vgg-weights",
                 str(tmp_path / "vgg16.h5"), "--fid-every", "0", *tiny])
    assert code == 0
    err = capsys.readouterr().err
    assert err.count("warning: --lpips-precision bf16 on a CPU without AMX or AVX512_BF16") == 1
    saved = (tmp_path / "runs" / "r" / "config.yaml").read_text(encoding="utf-8")
    assert "lpips_precision: bf16" in saved


@pytest.mark.slow
def test_short_training_run_writes_everything(image_folder, tmp_path):
    out = tmp_path / "runs"
    argv = ["--dataset", str(image_folder), "--epochs", "2", "--out", str(out), "--run-name", "r",
            "--sample-every", "1", "--log-every", "1", *TINY]
    assert main(argv) == 0
    run = out / "r"
    assert (run / "config.yaml").exists() and (run / "dataset.json").exists()
    assert sorted(p.name for p in (run / "samples").iterdir()) == [
        "fakes_epoch00001.png", "fakes_epoch00002.png", "recon_epoch00001.png",
        "recon_epoch00002.png"]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["kind"] == "step"]
    assert [r["step"] for r in steps] == list(range(1, 9))  # 16 images / batch 4 = 4 steps x 2
    assert all(np.isfinite(r[k]) for r in steps for k in ("d_loss", "g_loss", "recon"))
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    reader = tf.train.load_checkpoint(str(run / "ckpt" / "ckpt-8"))
    assert reader.get_tensor("epoch/.ATTRIBUTES/VARIABLE_VALUE") == 2
    # Running the same command again has nothing left to do, and says so.
    assert main(argv) == 0


# ------------------------------------------------------------------------ bit-exact resume
def _command(dataset, out, name):
    """45 steps: 3 epochs of 12 batches and 9 batches into the fourth (a mid-epoch end)."""
    return [sys.executable, str(REPO / "train.py"), "--dataset", str(dataset), "--steps", "45",
            "--out", str(out), "--run-name", name, "--deterministic", "--seed", "3",
            "--checkpoint-every", "1", "--sample-every", "2", "--batch-size", "2",
            "--resolution", "64", "--ngf", "16", "--ndf", "16", "--recon-loss", "l1"]


def _env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="-1",
                PYTHONPATH=str(REPO))


def _checkpoints(folder: Path) -> list[int]:
    return sorted(int(p.name[5:-6]) for p in folder.glob("ckpt-*.index"))


def _start_and_wait(cmd, ckpt_dir: Path, beyond: int):
    """Start training, wait until it has written a checkpoint past step `beyond`."""
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=REPO)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if any(n > beyond for n in _checkpoints(ckpt_dir)):
            return proc
        time.sleep(0.01)
    raise AssertionError(f"no checkpoint past {beyond}: {proc.communicate()[1][-2000:]}")


def _final_state(prefix: str) -> dict:
    reader = tf.train.load_checkpoint(prefix)
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
            if not k.startswith(NOT_STATE)}


@pytest.mark.slow
@pytest.mark.skipif(os.name == "nt", reason="sends SIGINT to a child, which Windows cannot")
def test_resume_after_sigkill_and_ctrl_c_is_bit_exact(tmp_path):
    data = write_images(tmp_path / "data", count=24)
    out = tmp_path / "runs"
    subprocess.run(_command(data, out, "straight"), env=_env(), cwd=REPO, check=True,
                   capture_output=True)

    cmd = _command(data, out, "interrupted")
    ckpt_dir = out / "interrupted" / "ckpt"
    proc = _start_and_wait(cmd, ckpt_dir, beyond=0)
    proc.kill()  # SIGKILL right after the first checkpoint: mid-way through epoch 2
    proc.communicate()
    first = max(_checkpoints(ckpt_dir))
    proc = _start_and_wait(cmd, ckpt_dir, beyond=first)
    proc.send_signal(signal.SIGINT)  # Ctrl-C: save and exit
    _, err = proc.communicate(timeout=120)
    assert "Resuming" in err
    assert proc.returncode in (0, 130), err
    finished = subprocess.run(cmd, env=_env(), cwd=REPO, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr

    a = _final_state(str(out / "straight" / "ckpt" / "ckpt-45"))
    b = _final_state(str(out / "interrupted" / "ckpt" / "ckpt-45"))
    assert a["batch_in_epoch/.ATTRIBUTES/VARIABLE_VALUE"] == 9  # it ended mid-epoch
    assert a.keys() == b.keys() and len(a) > 50
    different = [k for k in a if not np.array_equal(a[k], b[k])]
    assert different == []


@pytest.mark.slow
def test_tensorflow_start_up_chatter_is_hidden_unless_verbose(tmp_path):
    """absl, oneDNN and CPU-feature lines from TensorFlow's C++ side must not precede ours."""
    env = {k: v for k, v in _env().items() if k not in ("TF_CPP_MIN_LOG_LEVEL",
                                                         "TF_ENABLE_ONEDNN_OPTS")}

    def chatter(*extra):
        done = subprocess.run([sys.executable, str(REPO / "train.py"), "--dataset", "demo",
                               "--dry-run", "--out", str(tmp_path), *extra], env=env, cwd=REPO,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return [line for line in done.stderr.splitlines()
                if re.match(r"[IWEF]\d{4} ", line) or "absl::" in line or "oneDNN" in line]

    assert chatter() == []
    if platform.machine().lower() in ("x86_64", "amd64"):  # TensorFlow announces oneDNN there
        assert chatter("--verbose")
