"""Windows file-system behaviour, simulated on Linux: busy files, long paths, full disks, LF."""

import ast
import errno
import sys
import types
from pathlib import Path

import pytest

from fastgan_tf import io as fio
from fastgan_tf import oscompat
from fastgan_tf.errors import DISK_FULL, UserError, reason_of

PACKAGE = Path(__file__).resolve().parents[1] / "fastgan_tf"


@pytest.fixture
def windows(monkeypatch):
    """Windows as the package sees it (`oscompat.on_windows`), without waiting between retries.

    `os.name` itself is left alone: with it set to "nt", pathlib builds WindowsPath objects,
    which cannot be made on Linux."""
    monkeypatch.setattr(oscompat, "on_windows", lambda: True)
    monkeypatch.setattr(oscompat, "RETRY_DELAYS", (0.0,) * len(oscompat.RETRY_DELAYS))


def busy(winerror=oscompat.ERROR_SHARING_VIOLATION):
    """The PermissionError Windows raises for a file another program holds."""
    error = PermissionError(errno.EACCES, "The process cannot access the file because it is "
                                          "being used by another process")
    error.winerror = winerror
    return error


def failing(times, error, then=None):
    """A callable that raises `error` its first `times` calls, then returns `then`."""
    calls = []

    def action(*args, **kwargs):
        calls.append(args)
        if len(calls) <= times:
            raise error
        return then

    action.calls = calls
    return action


# ----------------------------------------------------------------------------- busy files
@pytest.mark.parametrize("winerror", [oscompat.ERROR_ACCESS_DENIED,
                                      oscompat.ERROR_SHARING_VIOLATION])
def test_busy_file_is_retried_on_windows_until_it_works(windows, winerror):
    action = failing(3, busy(winerror), then="done")
    assert oscompat.retry_while_busy(action, "a", "b") == "done"
    assert action.calls == [("a", "b")] * 4


def test_retries_give_up_with_the_original_error(windows):
    error = busy()
    action = failing(99, error)
    with pytest.raises(PermissionError) as info:
        oscompat.retry_while_busy(action)
    assert info.value is error and len(action.calls) == len(oscompat.RETRY_DELAYS) + 1


def test_no_retry_on_posix_nor_for_other_errors(windows, monkeypatch):
    action = failing(1, OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(OSError):
        oscompat.retry_while_busy(action)
    assert len(action.calls) == 1  # not a busy file: at once
    monkeypatch.setattr(oscompat, "on_windows", lambda: False)
    action = failing(1, busy())
    with pytest.raises(PermissionError):
        oscompat.retry_while_busy(action)
    assert len(action.calls) == 1


def test_tensorflow_messages_without_codes_count_as_busy():
    assert oscompat.is_busy_error(RuntimeError("ckpt-4_temp/part-00000-of-00001 : Access is "
                                               "denied. ; Input/output error"))
    assert not oscompat.is_busy_error(OSError(errno.EACCES, "Permission denied"))


def test_atomic_write_retries_a_busy_rename_on_windows(windows, tmp_path, monkeypatch):
    real = fio.os.replace
    calls = []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) <= 2:
            raise busy()
        real(src, dst)

    monkeypatch.setattr(fio.os, "replace", replace)
    fio.atomic_write_text(tmp_path / "config.yaml", "a: 1\n")
    assert (tmp_path / "config.yaml").read_bytes() == b"a: 1\n" and len(calls) == 3
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]  # no temporary file left


def test_atomic_write_fails_at_once_on_posix(tmp_path, monkeypatch):
    monkeypatch.setattr(fio.os, "replace", failing(1, busy()))
    with pytest.raises(PermissionError):
        fio.atomic_write_text(tmp_path / "config.yaml", "a: 1\n")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- long paths
def fake_winreg(value=None, error=None):
    """A stand-in for Windows' winreg module holding LongPathsEnabled (or failing)."""
    class Key:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    def open_key(root, path):
        assert (root, path) == ("HKLM", oscompat.LONG_PATHS_KEY)
        if error:
            raise error
        return Key()

    def query(key, name):
        if value is None:
            raise FileNotFoundError(2, "The system cannot find the file specified")
        return value, 4

    return types.SimpleNamespace(HKEY_LOCAL_MACHINE="HKLM", OpenKey=open_key,
                                 QueryValueEx=query)


def deep_folder(tmp_path, length):
    folder = tmp_path / "r"
    return folder.parent / ("r" * (length - len(str(folder)) + 1))


def test_the_limit_leaves_room_for_tensorflows_deepest_file(monkeypatch):
    monkeypatch.setattr(oscompat.socket, "gethostname", lambda: "DESKTOP-ABC1234")
    deepest = oscompat.deepest_run_file()
    assert deepest.startswith("ckpt/ckpt-99999999_temp/part-00000-of-00001.data-00000-of-00001")
    assert oscompat.path_length_limit() + 1 + len(deepest) == 259
    assert 160 <= oscompat.path_length_limit() <= 170  # "about 165"
    monkeypatch.setattr(oscompat.socket, "gethostname", lambda: "h" * 63)
    assert oscompat.deepest_run_file().startswith("tensorboard/events.out.tfevents.")


@pytest.mark.parametrize("registry", [None, 0, "error"], ids=["no-value", "disabled", "no-key"])
def test_too_deep_run_folder_is_refused_on_windows_without_long_paths(windows, tmp_path,
                                                                      monkeypatch, registry):
    error = PermissionError(5, "Access is denied") if registry == "error" else None
    monkeypatch.setitem(sys.modules, "winreg", fake_winreg(
        None if registry == "error" else registry, error))
    limit = oscompat.path_length_limit()
    oscompat.check_path_length(deep_folder(tmp_path, limit))  # at the limit: fine
    with pytest.raises(UserError) as info:
        oscompat.check_path_length(deep_folder(tmp_path, limit + 1))
    message = str(info.value)
    assert "\n" not in message and f"is {limit + 1} characters long" in message
    assert f"at most {limit}" in message and "--out" in message
    assert "LongPathsEnabled" in message and "Enable Win32 long paths" in message


def test_long_paths_enabled_or_posix_allow_any_depth(windows, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "winreg", fake_winreg(1))
    oscompat.check_path_length(deep_folder(tmp_path, 400))
    monkeypatch.setattr(oscompat, "on_windows", lambda: False)
    monkeypatch.setitem(sys.modules, "winreg", fake_winreg(0))
    oscompat.check_path_length(deep_folder(tmp_path, 400))


def test_missing_winreg_counts_as_long_paths_disabled(monkeypatch):
    monkeypatch.setitem(sys.modules, "winreg", None)  # import fails, as on Linux
    assert oscompat.long_paths_enabled() is False


# ----------------------------------------------------------------------------- full disk
def test_full_disk_is_named_by_its_code_not_by_the_platforms_text():
    quota = OSError(errno.EDQUOT, "Unknown error")  # Windows' strerror of its EDQUOT
    assert reason_of(quota) == DISK_FULL
    windows_full = PermissionError(errno.EACCES, "Unknown error")
    windows_full.winerror = 112  # ERROR_DISK_FULL
    assert reason_of(windows_full) == DISK_FULL
    handle_full = OSError(errno.EIO, "The disk is full")
    handle_full.winerror = 39  # ERROR_HANDLE_DISK_FULL
    assert reason_of(handle_full) == DISK_FULL
    assert reason_of(OSError(errno.ENOSPC, "No space left on device")) == DISK_FULL
    assert reason_of(RuntimeError("part-0.tempstate1 : There is not enough space on the disk. "
                                  "[Op:SaveV2]")) == DISK_FULL


def test_unknown_errors_are_not_mistaken_for_a_known_reason():
    assert reason_of(OSError(errno.EIO, "Input/output error")) == "Input/output error"
    assert reason_of(RuntimeError("Unknown error: something else")) == \
        "Unknown error: something else"
    assert reason_of(OSError(errno.EACCES, "Permission denied")) == "Permission denied"


# ----------------------------------------------------------------------------- line endings
_TEXT_WRITERS = {"open", "fdopen"}


def _modes(node: ast.Call, position: int) -> list[str]:
    """The string constants the mode argument of an open-like call can be."""
    mode = next((k.value for k in node.keywords if k.arg == "mode"), None)
    if mode is None and len(node.args) > position:
        mode = node.args[position]
    return [n.value for n in ast.walk(mode) if isinstance(n, ast.Constant)
            and isinstance(n.value, str)] if mode is not None else ["r"]


def text_writes_without_newline(source: str) -> list[int]:
    """Lines that write text without newline=, which turns "\\n" into "\\r\\n" on Windows."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or any(k.arg == "newline" for k in node.keywords):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
        if name == "write_text":
            lines.append(node.lineno)
        elif name in _TEXT_WRITERS:
            position = 0 if isinstance(func, ast.Attribute) and func.attr == "open" else 1
            if any(set(m) & set("wax+") and "b" not in m for m in _modes(node, position)):
                lines.append(node.lineno)
    return lines


def test_the_scan_finds_text_writes_without_newline():
    assert text_writes_without_newline(
        "open(p, 'a', encoding='utf-8')\nPath(p).open('w')\np.write_text('x')\n"
        "open(p, mode='wt')\nopen(p, 'ab' if x else 'w')\n") == [1, 2, 3, 4, 5]
    assert text_writes_without_newline(
        "open(p)\nopen(p, 'rb')\nopen(p, 'a', newline='\\n')\nopen(p, 'ab' if x else 'wb')\n"
        "p.write_text('x', newline='\\n')\nos.fdopen(fd, 'r+b')\n") == []


def test_the_package_writes_lf_on_every_os():
    found = {str(path.relative_to(PACKAGE)): lines for path in sorted(PACKAGE.rglob("*.py"))
             if (lines := text_writes_without_newline(path.read_text(encoding="utf-8")))}
    assert found == {}


def test_metrics_lines_end_in_lf(tmp_path):
    pytest.importorskip("tensorflow")
    from fastgan_tf.training.logs import RunLog, read_records

    log = RunLog(tmp_path)
    for step in (1, 2, 3):
        log.write({"step": step, "loss": 0.5})
    log.forget_after(2)
    log.write({"step": 3, "loss": 0.25})
    log.close()
    data = (tmp_path / "metrics.jsonl").read_bytes()
    assert b"\r" not in data and data.count(b"\n") == 3
    assert [r["step"] for r in read_records(tmp_path / "metrics.jsonl")] == [1, 2, 3]
