"""Checkpoints: format version, fallback past broken files, run lock."""

import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from fastgan_tf.checkpoints import Checkpoints
from fastgan_tf.runlock import RunLock
from fastgan_tf.errors import UserError


def make(tmp_path, value):
    v = tf.Variable(np.full([64], value, np.float32))
    return v, Checkpoints(tmp_path / "ckpt", keep=3, weights=v)


def test_restore_latest_and_fall_back_past_a_corrupt_checkpoint(tmp_path):
    v, ck = make(tmp_path, 1.0)
    ck.save(10)
    v.assign(np.full([64], 2.0, np.float32))
    ck.save(20)
    data = next((tmp_path / "ckpt").glob("ckpt-20.data-*"))
    data.write_bytes(data.read_bytes()[:10])  # truncated by a crash or a full disk
    fresh, ck2 = make(tmp_path, 0.0)
    restored = ck2.restore_latest()
    assert restored.path.endswith("ckpt-10")
    assert [p for p, _ in restored.skipped] == [str(tmp_path / "ckpt" / "ckpt-20")]
    np.testing.assert_array_equal(fresh.numpy(), 1.0)
    assert data.exists()  # nothing is deleted


def test_empty_folder_restores_nothing(tmp_path):
    _, ck = make(tmp_path, 0.0)
    assert ck.restore_latest().path is None


def test_checkpoint_of_another_format_is_refused(tmp_path):
    v, ck = make(tmp_path, 1.0)
    ck.format_version.assign(99)
    ck.save(1)
    _, ck2 = make(tmp_path, 0.0)
    with pytest.raises(UserError, match="format 99"):
        ck2.restore_latest()


def test_write_failure_keeps_previous_and_says_so(tmp_path, monkeypatch):
    v, ck = make(tmp_path, 1.0)
    ck.save(1)

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ck.checkpoint, "write", full_disk)
    with pytest.raises(UserError, match="No space left on device.*ckpt-1.*intact"):
        ck.save(2)
    assert ck.latest.endswith("ckpt-1") and ck.restore_latest().path.endswith("ckpt-1")


def test_second_lock_is_refused_and_released_when_holder_dies(tmp_path):
    lock_path = tmp_path / "run.lock"
    code = ("import sys, time; from fastgan_tf.runlock import RunLock\n"
            f"l = RunLock(r'{lock_path}').__enter__(); print('locked', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match="held by pid"):
            RunLock(lock_path).__enter__()
    finally:
        holder.kill()  # a crash: the OS drops the lock
        holder.wait()
    with RunLock(lock_path):
        pass
