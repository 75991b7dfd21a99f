"""Checkpoints: format version, fallback past broken files, run lock."""

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from fastgan_tf import oscompat, runlock
from fastgan_tf.checkpoints import Checkpoints
from fastgan_tf.errors import UserError
from fastgan_tf.runlock import RunLock


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


# ----------------------------------------------------------------------------- Windows, simulated

@pytest.fixture
def windows(monkeypatch):
    """Windows as the package sees it (`oscompat.on_windows`), with short waits. `os.name` stays
    "posix": set to "nt", pathlib would build WindowsPath objects, which fail on Linux."""
    monkeypatch.setattr(oscompat, "on_windows", lambda: True)
    monkeypatch.setattr(oscompat, "RETRY_DELAYS", (0.0,) * len(oscompat.RETRY_DELAYS))
    monkeypatch.setattr(runlock, "WINDOWS_WAIT", 0.2)
    monkeypatch.setattr(runlock, "POLL", 0.01)


def fail_writes(monkeypatch, times, error):
    """Make tf.train.Checkpoint.write raise `error` its first `times` calls."""
    calls, real = [], tf.train.Checkpoint.write

    def write(self, file_prefix, options=None):
        calls.append(file_prefix)
        if len(calls) <= times:
            Path(f"{file_prefix}_temp").mkdir(parents=True, exist_ok=True)  # what TF leaves
            raise error
        return real(self, file_prefix, options=options)

    monkeypatch.setattr(tf.train.Checkpoint, "write", write)
    return calls


def windows_busy(kind=tf.errors.PermissionDeniedError):
    return kind(None, None, "ckpt-2_temp/part-00000-of-00001.data-00000-of-00001.tempstate1 : The "
                            "process cannot access the file because it is being used by another "
                            "process. ; Broken pipe")


@pytest.mark.parametrize("kind", [tf.errors.PermissionDeniedError, tf.errors.UnknownError])
def test_busy_checkpoint_write_is_retried_on_windows(tmp_path, monkeypatch, windows, kind):
    _, ck = make(tmp_path, 1.0)
    ck.save(1)
    calls = fail_writes(monkeypatch, 2, windows_busy(kind))
    assert ck.save(2).endswith("ckpt-2") and len(calls) == 3
    assert not list((tmp_path / "ckpt").glob("*_temp"))
    _, ck2 = make(tmp_path, 0.0)
    assert ck2.restore_latest().path.endswith("ckpt-2")


def test_checkpoint_write_busy_for_too_long_is_one_line(tmp_path, monkeypatch, windows):
    _, ck = make(tmp_path, 1.0)
    ck.save(1)
    calls = fail_writes(monkeypatch, 99, windows_busy())
    with pytest.raises(UserError) as info:
        ck.save(2)
    assert len(calls) == len(oscompat.RETRY_DELAYS) + 1
    message = str(info.value)
    assert "\n" not in message and "being used by another process" in message
    assert "(ckpt-1) is intact" in message and ck.latest.endswith("ckpt-1")
    assert not list((tmp_path / "ckpt").glob("ckpt-2*"))


def test_checkpoint_write_is_not_retried_on_posix(tmp_path, monkeypatch):
    _, ck = make(tmp_path, 1.0)
    calls = fail_writes(monkeypatch, 1, windows_busy())
    with pytest.raises(UserError):
        ck.save(1)
    assert len(calls) == 1


def test_busy_state_file_and_broken_renames_are_retried_on_windows(tmp_path, monkeypatch,
                                                                  windows):
    import fastgan_tf.io as fio

    _, ck = make(tmp_path, 1.0)
    ck.save(1)
    ck.save(2)
    real_replace, real_rename = fio.os.replace, Path.rename
    failures = {"replace": 2, "rename": 2}

    def flaky(kind, real):
        def call(*args):
            if failures[kind]:
                failures[kind] -= 1
                error = PermissionError(13, "Access is denied")
                error.winerror = oscompat.ERROR_ACCESS_DENIED
                raise error
            return real(*args)
        return call

    monkeypatch.setattr(fio.os, "replace", flaky("replace", real_replace))
    ck.save(3)  # the state file is replaced after two refusals
    assert [Path(p).name for p in ck.listed] == ["ckpt-1", "ckpt-2", "ckpt-3"]
    monkeypatch.setattr(Path, "rename", flaky("rename", real_rename))
    target = ck.set_aside([ck.prefix(3)])
    assert sorted(p.name for p in target.iterdir()) == ["ckpt-3.data-00000-of-00001",
                                                        "ckpt-3.index"]
    assert failures == {"replace": 0, "rename": 0}


# ----------------------------------------------------------------------------- the run lock
def lock_note(path, **fields):
    """Write a holder's note into the lock file as another trainer would."""
    note = {"pid": 4242, "host": "otherhost", "system": "otherhost (linux)",
            "since": time.time() - 3600, "heartbeat": time.time() - 5, **fields}
    path.write_bytes(json.dumps(note).encode().ljust(runlock.NOTE_SIZE - 1) + b"\n")


def read_note(path):
    return json.loads(path.read_bytes()[:runlock.NOTE_SIZE])


class FakeMsvcrt:
    """msvcrt.locking that records where it locks and raises the errors given, in turn."""

    LK_NBLCK, LK_UNLCK = 2, 0

    def __init__(self, *errors, forever=None):
        self.errors, self.forever, self.calls = list(errors), forever, []

    def locking(self, fd, mode, nbytes):
        self.calls.append((mode, os.lseek(fd, 0, os.SEEK_CUR), nbytes))
        if mode == self.LK_NBLCK and (self.errors or self.forever):
            raise self.errors.pop(0) if self.errors else self.forever


def os_error(code, text, winerror=None):
    error = OSError(code, text)
    if winerror is not None:
        error.winerror = winerror
    return error


def test_windows_locks_a_byte_past_the_note_and_the_note_names_the_holder(tmp_path, monkeypatch,
                                                                          windows):
    fake = FakeMsvcrt()
    monkeypatch.setattr(runlock, "msvcrt", fake)
    path = tmp_path / "run.lock"
    with RunLock(path):
        note = read_note(path)  # readable while locked: the lock is 1 MiB further
        assert note["pid"] == os.getpid() and note["system"].endswith("(windows)")
        assert abs(note["heartbeat"] - time.time()) < 5
    assert fake.calls == [(fake.LK_NBLCK, runlock.LOCK_OFFSET, 1),
                          (fake.LK_UNLCK, runlock.LOCK_OFFSET, 1)]
    assert read_note(path)["heartbeat"] is None  # released: nobody has to wait for it


@pytest.mark.parametrize("error", [os_error(errno.EACCES, "Permission denied"),
                                   os_error(36, "Resource deadlock avoided"),
                                   os_error(errno.EIO, "x", oscompat.ERROR_LOCK_VIOLATION)],
                         ids=["EACCES", "EDEADLOCK", "ERROR_LOCK_VIOLATION"])
def test_windows_lock_conflict_is_retried_then_refused_with_the_holder(tmp_path, monkeypatch,
                                                                       windows, error):
    fake = FakeMsvcrt(forever=error)
    monkeypatch.setattr(runlock, "msvcrt", fake)
    path = tmp_path / "run.lock"
    lock_note(path, system="DESKTOP (windows)")
    with pytest.raises(UserError) as info:
        RunLock(path).__enter__()
    message = str(info.value)
    assert "held by pid 4242 on DESKTOP (windows) since" in message and "\n" not in message
    assert "last heartbeat 5 s ago" in message and "--run-name" in message
    assert len(fake.calls) > 2  # retried while Windows may still be releasing a dead holder's lock
    assert read_note(path)["pid"] == 4242  # the holder's note is left alone


def test_windows_lock_released_late_by_a_dead_holder_is_taken(tmp_path, monkeypatch, windows):
    fake = FakeMsvcrt(os_error(errno.EACCES, "Permission denied"),
                      os_error(errno.EACCES, "Permission denied"))
    monkeypatch.setattr(runlock, "msvcrt", fake)
    path = tmp_path / "run.lock"
    lock_note(path, system=runlock._system(), pid=4242)  # died a moment ago on this system
    with RunLock(path):
        assert read_note(path)["pid"] == os.getpid()


@pytest.mark.parametrize("code", [errno.EINVAL, errno.ENOLCK, errno.EOPNOTSUPP])
def test_filesystem_without_locks_warns_and_goes_on(tmp_path, monkeypatch, windows, caplog,
                                                    code):
    fake = FakeMsvcrt(forever=os_error(code, os.strerror(code)))  # \\wsl$\... gives EINVAL
    monkeypatch.setattr(runlock, "msvcrt", fake)
    path = tmp_path / "run.lock"
    with caplog.at_level("WARNING", logger="fastgan_tf.runlock"), RunLock(path):
        assert read_note(path)["pid"] == os.getpid()  # the heartbeat still guards it
    assert len(fake.calls) == 1  # no unlock of a lock never taken
    assert "cannot lock" in caplog.text and "held by" not in caplog.text


def test_fresh_heartbeat_from_another_system_is_refused_even_with_the_os_lock(tmp_path):
    path = tmp_path / "run.lock"
    lock_note(path)  # a trainer on another computer, or across the WSL2/Windows boundary
    with pytest.raises(UserError) as info:
        RunLock(path).__enter__()
    message = str(info.value)
    assert "held by pid 4242 on otherhost (linux) since" in message
    assert "heartbeat" in message and "\n" not in message
    with open(path, "r+b") as f:  # the refused attempt let go of the OS lock it had taken
        runlock._lock_file(f)


def test_stale_heartbeat_does_not_block(tmp_path):
    path = tmp_path / "run.lock"
    lock_note(path, heartbeat=time.time() - 2 * runlock.HEARTBEAT_FRESH)
    with RunLock(path):
        assert read_note(path)["pid"] == os.getpid()


def test_heartbeat_is_refreshed_while_held(tmp_path, monkeypatch):
    monkeypatch.setattr(runlock, "HEARTBEAT_EVERY", 0.05)
    path = tmp_path / "run.lock"
    with RunLock(path):
        first = read_note(path)["heartbeat"]
        deadline = time.time() + 5
        while read_note(path)["heartbeat"] == first and time.time() < deadline:
            time.sleep(0.02)
        assert read_note(path)["heartbeat"] > first
        assert read_note(path)["since"] < read_note(path)["heartbeat"]


def test_old_style_note_is_still_shown(tmp_path, monkeypatch, windows):
    monkeypatch.setattr(runlock, "msvcrt", FakeMsvcrt(forever=os_error(errno.EACCES, "x")))
    path = tmp_path / "run.lock"
    path.write_bytes(b"pid 77 on vm")
    with pytest.raises(UserError, match="held by pid 77 on vm:"):
        RunLock(path).__enter__()
