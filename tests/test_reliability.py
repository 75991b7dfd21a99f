"""Training survives faults (issue 6): NaN rollback, broken checkpoints, full disks, locks,
incompatible checkpoints, kills at any instant and Ctrl-C twice.

Faults are injected with tests/faults.py (monkeypatching, no hooks in the trainer);
benchmarks/fault_injection.py runs the long version of these and writes RELIABILITY.md.
"""

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pytest
import tensorflow as tf

import faults
from conftest import write_images
from faults import logged_steps
from fastgan_tf.checkpoint_keys import NOT_STATE
from fastgan_tf.checkpoints import Checkpoints, verify
from fastgan_tf.cli.train import main
from fastgan_tf.errors import UserError
from fastgan_tf.runlock import RunLock
from fastgan_tf.training.recovery import Recovery, retry_seed, vary

REPO = Path(__file__).resolve().parents[1]
# 16 images, batch 4: 4 steps per epoch, a checkpoint after each epoch (plus ckpt-0 at the start).
TINY = ["--resolution", "64", "--ngf", "16", "--ndf", "16", "--recon-loss", "l1",
        "--batch-size", "4", "--checkpoint-every", "1", "--log-every", "1", "--fid-every", "0",
        "--sample-every", "1", "--run-name", "r"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("data") / "images")


def trainer(data, out: Path, monkeypatch, capsys):
    """run(epochs, *extra_args, faults_=[...]) -> (exit code, stderr); the run is out/r."""
    def run(epochs, *extra, faults_=()):
        with monkeypatch.context() as m:
            faults.install(list(faults_), patch=lambda o, n, v: m.setattr(o, n, v, raising=False))
            code = main(["--dataset", str(data), "--epochs", str(epochs), "--out", str(out),
                         *TINY, *extra])
        return code, capsys.readouterr().err

    run.dir = out / "r"
    return run


@pytest.fixture
def train(data, tmp_path, monkeypatch, capsys):
    return trainer(data, tmp_path / "runs", monkeypatch, capsys)


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """A run trained for 2 epochs (ckpt-4, ckpt-8), made once; tests get a copy."""
    out = tmp_path_factory.mktemp("trained")
    assert main(["--dataset", str(data), "--epochs", "2", "--out", str(out), *TINY]) == 0
    return out / "r"


@pytest.fixture
def resume(trained, data, tmp_path, monkeypatch, capsys):
    """Like `train`, on a copy of the 2-epoch run."""
    shutil.copytree(trained, tmp_path / "runs" / "r")
    return trainer(data, tmp_path / "runs", monkeypatch, capsys)


def listed_numbers(run_dir):
    return [int(Path(p).name[5:]) for p in Checkpoints(run_dir / "ckpt").listed]


def all_listed_readable(run_dir):
    listed = Checkpoints(run_dir / "ckpt").listed
    return bool(listed) and all(verify(p) is None for p in listed)


def error_line(err):
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def read_tensor(prefix, name):
    return tf.train.load_checkpoint(str(prefix)).get_tensor(f"{name}/.ATTRIBUTES/VARIABLE_VALUE")


# ------------------------------------------------------------------------------- NaN / Inf
@pytest.mark.slow
def test_nan_and_inf_roll_back_retry_differently_and_finish(train):
    # An Inf in the weights (losses still finite) after step 4: caught before ckpt-4 is written,
    # back to ckpt-0. Then a NaN loss in step 6 (epoch 2, batch 1): back to ckpt-4, that batch
    # skipped: batch 0 (step 5), batches 2-3 (steps 6-7) -> ckpt-7 at the end.
    code, err = train(2, faults_=["nan:weights:4", "nan:batch:1:1"])
    assert code == 0, err
    assert "non-finite weights at step 4 (epoch 1); rolled back to ckpt-0 (attempt 1 of 3)" in err
    assert re.search(r"warning: non-finite [a-z_, ]*d_loss[a-z_, ]* at step 6 \(epoch 2, batch 2\); "
                     r"rolled back to ckpt-4 \(attempt 1 of 3\): skipping that batch, reseeded "
                     r"the noise", err), err
    assert listed_numbers(train.dir) == [4, 7]
    final = train.dir / "ckpt" / "ckpt-7"
    assert read_tensor(final, "epoch") == 2 and read_tensor(final, "batch_in_epoch") == 0
    reader = tf.train.load_checkpoint(str(final))
    tensors = [np.asarray(reader.get_tensor(k)) for k in reader.get_variable_to_shape_map()]
    floats = [t for t in tensors if t.dtype.kind == "f"]
    assert len(floats) > 50 and all(np.isfinite(t).all() for t in floats)
    recovery = json.loads((train.dir / "recovery.json").read_text())
    assert recovery["skip"] == [[1, 1]] and recovery["attempts"] == 1
    assert recovery["checkpoint"] == 4
    assert [(e["step"], e["checkpoint"]) for e in recovery["events"]] == [(4, 0), (6, 4)]
    steps = [r["step"] for r in map(json.loads, (train.dir / "metrics.jsonl").open())
             if r["kind"] == "step"]
    assert steps == list(range(1, 8))  # the lines of abandoned tries were dropped


@pytest.mark.slow
def test_nan_that_keeps_coming_back_stops_after_the_bound(resume):
    code, err = resume(3, "--max-nan-retries", "2", faults_=["nan:from:9"])
    assert code == 2
    line = error_line(err)
    assert "at step 9" in line and "after 2 rollbacks (the last to ckpt-8)" in line
    assert "--lr" in line and "recovery.json" in line
    assert err.count("rolled back to ckpt-8") == 2
    assert listed_numbers(resume.dir) == [4, 8] and all_listed_readable(resume.dir)
    # The bound survives a restart: the same command stops at once, before training.
    code, err = resume(3, "--max-nan-retries", "2")
    assert code == 2 and "after 2 rollbacks (the last to ckpt-8)" in error_line(err)
    assert "epoch 3/3" not in err


def test_retry_count_resets_only_when_training_got_past_the_failure(tmp_path):
    recovery = Recovery.load(tmp_path)
    # Step 6 keeps failing; skipping batches lets epoch 2 end at ckpt-5, still short of step 6.
    attempts = [recovery.record(back_to, dict(step=6, epoch=1, batch=b))
                for back_to, b in ((4, 1), (4, 2), (4, 3), (5, 0))]
    assert attempts == [1, 2, 3, 4]
    assert recovery.record(8, dict(step=10, epoch=2, batch=1)) == 1  # got past step 6
    recovery.save()
    again = Recovery.load(tmp_path)
    assert (again.checkpoint, again.failed_at, again.attempts) == (8, 10, 1)
    assert again.pending_for(8) == 1 and again.pending_for(4) == 0


def test_retry_changes_are_a_function_of_checkpoint_and_attempt():
    def fake_gan():
        opts = [keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam()) for _ in range(2)]
        for opt in opts:
            opt.build([keras.Variable(np.zeros(3, np.float32))])
        return SimpleNamespace(rng=tf.random.Generator.from_seed(5), g_opt=opts[0], d_opt=opts[1])

    gan = fake_gan()
    changes = vary(gan, seed=3, checkpoint_step=40, attempt=2)
    assert changes == ["reseeded the noise", "divided the loss scale by 4"]
    expected = tf.random.Generator.from_seed(retry_seed(3, 40, 2))
    np.testing.assert_array_equal(gan.rng.state.numpy(), expected.state.numpy())
    assert float(gan.g_opt.dynamic_scale.numpy()) == 32768.0 / 4
    assert retry_seed(3, 40, 2) != retry_seed(3, 40, 1) != retry_seed(3, 41, 1)


# ------------------------------------------------------------------------------- checkpoints
@pytest.mark.slow
def test_broken_latest_checkpoint_falls_back_says_so_and_is_kept(resume):
    index = resume.dir / "ckpt" / "ckpt-8.index"
    index.write_bytes(index.read_bytes()[:40])  # garbled by a crash or a bad disk
    code, err = resume(3)
    assert code == 0, err
    assert "checkpoint ckpt-8 could not be restored" in err and "ckpt-4 is used instead" in err
    assert "from ckpt-4" in err
    broken = resume.dir / "ckpt" / "broken"
    assert sorted(p.name for p in broken.iterdir()) == [
        "ckpt-8.data-00000-of-00001", "ckpt-8.index"]
    assert listed_numbers(resume.dir) == [8, 12] and all_listed_readable(resume.dir)


@pytest.mark.parametrize("damage", ["truncate-data", "empty-index", "garble-data", "no-data"])
def test_every_kind_of_damage_is_detected_and_skipped(tmp_path, damage):
    v = tf.Variable(np.arange(4096, dtype=np.float32))
    ck = Checkpoints(tmp_path / "ckpt", keep=3, weights=v)
    ck.save(1)
    v.assign(v * 2)
    ck.save(2)
    data = tmp_path / "ckpt" / "ckpt-2.data-00000-of-00001"
    if damage == "truncate-data":
        data.write_bytes(data.read_bytes()[:100])
    elif damage == "empty-index":
        (tmp_path / "ckpt" / "ckpt-2.index").write_bytes(b"")
    elif damage == "garble-data":
        raw = bytearray(data.read_bytes())
        raw[200:260] = os.urandom(60)
        data.write_bytes(bytes(raw))
    else:
        data.unlink()
    assert verify(str(tmp_path / "ckpt" / "ckpt-2")) is not None
    w = tf.Variable(np.zeros(4096, np.float32))
    restored = Checkpoints(tmp_path / "ckpt", keep=3, weights=w).restore_latest()
    assert restored.path.endswith("ckpt-1") and len(restored.skipped) == 1
    np.testing.assert_array_equal(w.numpy(), np.arange(4096, dtype=np.float32))


def test_rotation_never_lists_a_checkpoint_it_is_deleting(tmp_path, monkeypatch):
    """Dying after the state update but before the old files are gone leaves a clean list."""
    v = tf.Variable(np.ones(16, np.float32))
    ck = Checkpoints(tmp_path / "ckpt", keep=2, weights=v)
    ck.save(1)
    ck.save(2)

    def die(self, path):
        raise SystemExit("killed")

    monkeypatch.setattr(Checkpoints, "_delete", die)
    with pytest.raises(SystemExit):
        ck.save(3)
    assert [Path(p).name for p in ck.listed] == ["ckpt-2", "ckpt-3"]
    assert all(verify(p) is None for p in ck.listed)
    assert (tmp_path / "ckpt" / "ckpt-1.index").exists()  # unlisted: harmless, never tried first
    monkeypatch.undo()
    ck.save(4)  # the next rotation also removes what the interrupted one left
    assert sorted(p.name for p in (tmp_path / "ckpt").glob("*.index")) == [
        "ckpt-3.index", "ckpt-4.index"]
    # Leftovers of interrupted writes are tidied: temp folders and data without an index.
    (tmp_path / "ckpt" / "ckpt-9_temp").mkdir()
    (tmp_path / "ckpt" / "ckpt-7.data-00000-of-00001").write_bytes(b"x")
    assert ck.tidy() == ["ckpt-7.data-00000-of-00001", "ckpt-9_temp"]


def test_kill_while_setting_a_broken_checkpoint_aside_deletes_nothing(tmp_path, monkeypatch):
    """Killed between moving a broken checkpoint's files into broken/, the next start must not
    tidy away what was left behind: all of its files end up in broken/."""
    v = tf.Variable(np.arange(4096, dtype=np.float32))
    ck = Checkpoints(tmp_path / "ckpt", keep=3, weights=v)
    ck.save(1)
    ck.save(2)
    data = tmp_path / "ckpt" / "ckpt-2.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[200:260] = os.urandom(60)
    data.write_bytes(bytes(raw))
    restored = ck.restore_latest()
    assert restored.path.endswith("ckpt-1") and len(restored.skipped) == 1
    original, moved = Path.rename, []

    def rename_then_die(self, target):
        if moved:
            raise SystemExit("killed")
        moved.append(self.name)
        return original(self, target)

    monkeypatch.setattr(Path, "rename", rename_then_die)
    with pytest.raises(SystemExit):
        ck.set_aside([path for path, _ in restored.skipped])
    monkeypatch.undo()
    again = Checkpoints(tmp_path / "ckpt", keep=3, weights=tf.Variable(np.zeros(4096, np.float32)))
    assert again.tidy() == []
    restored = again.restore_latest()
    assert restored.path.endswith("ckpt-1") and [Path(p).name for p, _ in restored.skipped] == [
        "ckpt-2"]
    again.set_aside([path for path, _ in restored.skipped])
    assert sorted(p.name for p in (tmp_path / "ckpt" / "broken").iterdir()) == [
        "ckpt-2.data-00000-of-00001", "ckpt-2.index"]
    assert [Path(p).name for p in again.listed] == ["ckpt-1"]


@pytest.mark.slow
def test_incompatible_checkpoint_names_the_mismatch(resume):
    code, err = resume(3, "--ngf", "32")
    line = error_line(err)
    assert code == 2 and "ngf: run has 16, you asked for 32" in line and "--fresh" in line
    # Without config.yaml (deleted or edited) the checkpoint itself tells the shapes apart.
    (resume.dir / "config.yaml").unlink()
    code, err = resume(3, "--ngf", "32")
    line = error_line(err)
    assert code == 2 and "ckpt-8 does not fit the model these settings build" in line
    assert "has shape" in line and "in the checkpoint but" in line and "--fresh" in line
    assert listed_numbers(resume.dir) == [4, 8] and all_listed_readable(resume.dir)


# ------------------------------------------------------------------------------- full disk
@pytest.mark.slow
def test_full_disk_warns_for_samples_and_metrics_and_stops_at_the_checkpoint(resume):
    """Samples (EACCES) and metrics (ENOSPC) fail from epoch 3 on: warnings, training goes on;
    then ckpt-12 cannot be written: one-line error, ckpt-8 intact, partial write removed."""
    code, err = resume(3, faults_=["fail:samples:1+:EACCES", "fail:metrics:1+:ENOSPC",
                                   "fail:checkpoint:1:ENOSPC"])
    assert code == 2
    assert err.count("warning: could not write the sample grids") == 1
    assert err.count("warning: could not write metrics.jsonl") == 1
    line = error_line(err)
    assert "could not write checkpoint ckpt-12" in line and "No space left on device" in line
    assert "(ckpt-8) is intact" in line
    assert listed_numbers(resume.dir) == [4, 8] and all_listed_readable(resume.dir)
    assert not list((resume.dir / "ckpt").glob("*_temp"))
    assert not list((resume.dir / "ckpt").glob("ckpt-12*"))


@pytest.mark.parametrize("fault, message", [
    ("fail:config:1:EACCES", "config.yaml: Permission denied"),
    ("fail:state:1:ENOSPC", "could not update"),
])
def test_failed_setup_writes_are_one_line_errors(train, fault, message):
    code, err = train(1, faults_=[fault])
    assert code == 2 and message in error_line(err)


# ------------------------------------------------------------------------------- locks
def test_second_trainer_on_the_same_run_is_refused(train, tmp_path):
    with RunLock(tmp_path / "runs" / ".r.lock"):
        code, err = train(1)
    line = error_line(err)
    assert code == 2 and "another training uses this run folder" in line
    assert f"pid {os.getpid()}" in line


def test_unwritable_out_folder_is_a_one_line_error(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(UserError, match="cannot create the run lock"):
        RunLock(tmp_path / "file" / "runs" / ".r.lock").__enter__()


# ------------------------------------------------------------------------------- kills
def _env(tmp_path):
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="-1",
                PYTHONPATH=str(REPO), FASTGAN_CACHE=str(tmp_path / "cache"))


def _command(data, out, name, *fault_specs):
    """3 epochs of 4 steps with samples, FID (pixel backbone) and checkpoints after each."""
    args = ["--dataset", str(data), "--epochs", "3", "--out", str(out), "--run-name", name,
            "--deterministic", "--seed", "5", "--checkpoint-every", "1", "--sample-every", "1",
            "--fid-every", "1", "--fid-samples", "8", "--batch-size", "4", "--resolution", "64",
            "--ngf", "16", "--ndf", "16", "--recon-loss", "l1", "--log-every", "1"]
    return [sys.executable, str(REPO / "tests" / "faults.py"), "fake-fid", *fault_specs, "--",
            *args]


def _final_state(prefix):
    reader = tf.train.load_checkpoint(str(prefix))
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
            if not k.startswith(NOT_STATE)}


def _wait_for(proc, condition, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"condition not reached: {proc.communicate()[1][-3000:]}")


@pytest.mark.slow
@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
@pytest.mark.parametrize("how", ["raised", "returned"])
def test_ctrl_c_during_shutdown_cannot_turn_exit_130_into_a_signal_death(how):
    """After a Ctrl-C the process is quitting; a second press while TensorFlow shuts down is
    ignored instead of killing the process by SIGINT (exit -2 instead of 130)."""
    from fastgan_tf.cli.common import ArgumentParser, EXIT_INTERRUPTED, run_cli

    def run(args):
        if how == "raised":
            raise KeyboardInterrupt
        return EXIT_INTERRUPTED

    before = signal.getsignal(signal.SIGINT)
    try:
        assert run_cli(ArgumentParser(prog="train.py"), run, []) == EXIT_INTERRUPTED
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)


@pytest.mark.slow
@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
def test_ctrl_c_while_a_finished_run_shuts_down_keeps_exit_0(tmp_path):
    """A Ctrl-C that lands after training finished, while TensorFlow's exit handlers run, must
    not turn exit 0 into a death by SIGINT (seen by benchmarks/fault_injection.py: exit -2)."""
    program = tmp_path / "program.py"
    program.write_text(
        "import os, signal, sys\n"
        "from fastgan_tf.cli.common import ArgumentParser, run_cli\n"
        "code = run_cli(ArgumentParser(prog='train.py'), lambda args: 0)\n"
        "os.kill(os.getpid(), signal.SIGINT)  # pressed while the program shuts down\n"
        "sys.exit(code)\n")
    done = subprocess.run([sys.executable, str(program)], env=_env(tmp_path), cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr


@pytest.mark.slow
@pytest.mark.skipif(os.name == "nt", reason="sends SIGINT to a child, which Windows cannot")
def test_kills_at_any_instant_and_ctrl_c_twice_keep_checkpoints_and_bit_exact(data, tmp_path):
    """SIGKILL inside a checkpoint write, then at a random moment, then Ctrl-C twice: after
    each, every listed checkpoint reads; finished, the run equals an uninterrupted one bit for
    bit. (The long version: benchmarks/fault_injection.py.)"""
    out, env = tmp_path / "runs", _env(tmp_path)
    popen = dict(env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    straight = subprocess.Popen(_command(data, out, "straight"), **popen)  # alongside
    run = out / "killed"
    # While TensorFlow writes ckpt-4 (the 2nd save of a fresh process: ckpt-0 is the 1st).
    proc = subprocess.run(_command(data, out, "killed", "kill:save-write:2"), env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert listed_numbers(run) == [0] and all_listed_readable(run)
    # At a random moment of epoch 2 or its end (sample grids, FID, checkpoint), from outside.
    proc = subprocess.Popen(_command(data, out, "killed"), **popen)
    _wait_for(proc, lambda: any(s >= 5 for s in logged_steps(run)))
    time.sleep(random.Random(6).uniform(0.0, 3.0))
    proc.kill()
    proc.communicate()
    assert all_listed_readable(run)
    # Ctrl-C twice once training is under way: exit 130 at once. The second press comes after
    # the first was acknowledged: two signals that arrive while the process is inside one
    # TensorFlow op reach Python as one.
    resumed_from = listed_numbers(run)[-1]
    if resumed_from < 12:
        proc = subprocess.Popen(_command(data, out, "killed"), **popen)
        lines = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
        reader.start()
        # "Training ..." comes after the resume trimmed metrics.jsonl to the checkpoint's step.
        _wait_for(proc, lambda: any(line.startswith("Training") for line in lines)
                  and any(s > resumed_from for s in logged_steps(run)))
        proc.send_signal(signal.SIGINT)
        _wait_for(proc, lambda: any(line.startswith("Stopping") for line in lines))
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
        reader.join(timeout=10)
        err = "".join(lines)
        assert proc.returncode == 130, err[-2000:]
        assert "interrupted; the last saved checkpoint is intact" in err
        assert "Traceback" not in err and all_listed_readable(run)
    finished = subprocess.run(_command(data, out, "killed"), env=env, cwd=REPO,
                              capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert straight.wait(timeout=600) == 0, straight.communicate()[1][-2000:]
    a = _final_state(out / "straight" / "ckpt" / "ckpt-12")
    b = _final_state(run / "ckpt" / "ckpt-12")
    assert a.keys() == b.keys() and len(a) > 50
    assert [k for k in a if not np.array_equal(a[k], b[k])] == []
