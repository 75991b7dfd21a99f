"""fastgan_tf.downloads: the resumable downloader, checksums, the probe, and fetching weights.

Every network test talks to a loopback http.server on 127.0.0.1 (port 0, daemon thread) that
shuts itself down after at most 60 s; the server records each request so the tests can assert
what the client sent (Range headers, User-Agent). "Offline" is a closed local port.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import socket
import subprocess
import sys
import tarfile
import time
import types
from pathlib import Path

import numpy as np
import pytest

from fastgan_tf import downloads, paths
from fastgan_tf.downloads import (
    INCEPTION_2015,
    INCEPTION_GRAPH_FILE,
    INCEPTION_V3_NOTOP,
    VGG16_NOTOP,
    WEIGHTS,
    ChecksumError,
    DownloadError,
    download,
)
from fastgan_tf.errors import UserError


# -- fixtures ---------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def _private_caches(monkeypatch, tmp_path):
    """Weights go to this test's folders, never to the user's caches."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("FASTGAN_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def warnings_logged(monkeypatch, caplog):
    """The package's warnings, even after a CLI test stopped them reaching the root logger."""
    monkeypatch.setattr(logging.getLogger("fastgan_tf"), "propagate", True)
    caplog.set_level(logging.WARNING, logger="fastgan_tf.downloads")
    return caplog


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def payload(n: int = 200_000) -> bytes:
    return np.random.default_rng(7).integers(0, 256, n, dtype=np.uint8).tobytes()


def closed_port_url(path: str) -> str:
    """A URL nothing listens at: connections are refused at once, as on an offline machine."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


def stand_in_tgz(members: dict[str, bytes] | None = None) -> bytes:
    """A small .tgz laid out like inception-2015-12-05.tgz (its graph is not a real one)."""
    if members is None:
        members = {INCEPTION_GRAPH_FILE: b"graph", "LICENSE": b"stand-in"}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def served(weights, server, data: bytes):
    """`weights` as served by the loopback server, with the checksum of `data` if it has one."""
    server.files[f"/{weights.name}"] = data
    checksum = f"md5:{md5(data)}" if weights.checksum else None
    return dataclasses.replace(weights, url=server.url(f"/{weights.name}"), checksum=checksum)


# -- download ---------------------------------------------------------------------------------

def test_download_plain(server, tmp_path):
    data = payload()
    server.files["/f.bin"] = data
    out = download(server.url("/f.bin"), tmp_path / "f.bin", sha(data), progress=False)
    assert out.read_bytes() == data
    assert not (tmp_path / "f.bin.part").exists()
    (_, range_header, agent), = server.requests
    assert range_header is None and agent.startswith("fastgan-tf/")


def test_download_resumes_after_cut_connection(server, tmp_path):
    data = payload()
    server.files["/f.bin"] = data
    server.cut_once.add("/f.bin")
    out = download(server.url("/f.bin"), tmp_path / "f.bin", progress=False, timeout=5)
    assert out.read_bytes() == data  # byte-identical
    assert [r for _, r, _ in server.requests] == [None, f"bytes={len(data) // 2}-"]


def test_resume_survives_a_redirect(server, tmp_path):
    data = payload()
    server.files["/cdn/f.bin"] = data
    server.redirects["/resolve/f.bin"] = "/cdn/f.bin"
    server.cut_once.add("/cdn/f.bin")
    out = download(server.url("/resolve/f.bin"), tmp_path / "f.bin", sha(data), progress=False)
    assert out.read_bytes() == data
    assert [(p, r) for p, r, _ in server.requests][-2:] == [
        ("/resolve/f.bin", f"bytes={len(data) // 2}-"), ("/cdn/f.bin", f"bytes={len(data) // 2}-")]


def test_download_resumes_a_part_file_from_an_earlier_run(server, tmp_path):
    data = payload()
    server.files["/f.bin"] = data
    (tmp_path / "f.bin.part").write_bytes(data[:12345])
    out = download(server.url("/f.bin"), tmp_path / "f.bin", sha(data), progress=False)
    assert out.read_bytes() == data
    assert [r for _, r, _ in server.requests] == ["bytes=12345-"]


def test_server_ignoring_range_restarts_instead_of_appending(server, tmp_path):
    data = payload()
    server.files["/f.bin"] = data
    server.ignore_range.add("/f.bin")
    (tmp_path / "f.bin.part").write_bytes(b"x" * 999)  # stale bytes that must not survive
    out = download(server.url("/f.bin"), tmp_path / "f.bin", progress=False)
    assert out.read_bytes() == data


def test_checksum_mismatch_is_clear_and_discards_the_file(server, tmp_path):
    data = payload()
    server.files["/f.bin"] = data
    with pytest.raises(ChecksumError, match="checksum mismatch.*deleted"):
        download(server.url("/f.bin"), tmp_path / "f.bin", "0" * 64, progress=False)
    assert not (tmp_path / "f.bin").exists() and not (tmp_path / "f.bin.part").exists()


def test_http_errors_are_download_errors(server, tmp_path):
    server.errors["/broken"] = 500
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(server.url("/missing"), tmp_path / "a", progress=False)
    with pytest.raises(DownloadError, match="HTTP 500"):
        download(server.url("/broken"), tmp_path / "b", progress=False)


# -- checksums --------------------------------------------------------------------------------

@pytest.mark.parametrize("form", ["sha256:{sha}", "md5:{md5}", "{sha}", "{md5}", "MD5:{MD5}"])
def test_md5_and_sha256_checksums_are_accepted(server, tmp_path, form):
    data = payload(5000)
    server.files["/f.bin"] = data
    checksum = form.format(sha=sha(data), md5=md5(data), MD5=md5(data).upper())
    out = download(server.url("/f.bin"), tmp_path / "f.bin", checksum, progress=False)
    assert out.read_bytes() == data
    assert downloads.checksum_mismatch(out, checksum) is None


def test_wrong_md5_deletes_the_partial_file(server, tmp_path):
    server.files["/f.bin"] = payload(5000)
    with pytest.raises(ChecksumError, match="expected md5 0{32}, got .*deleted"):
        download(server.url("/f.bin"), tmp_path / "f.bin", "md5:" + "0" * 32, progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bad", ["md5:" + "a" * 64, "sha1:" + "a" * 40, "a" * 40, "x:" + "a" * 32])
def test_a_malformed_checksum_fails_before_any_request(server, tmp_path, bad):
    with pytest.raises(ValueError, match="not a checksum"):
        download(server.url("/f.bin"), tmp_path / "f.bin", bad, progress=False)
    assert server.requests == []


# -- probe ------------------------------------------------------------------------------------

def test_probe_gives_up_quickly_on_a_silent_server():
    """A local socket that accepts connections but never answers: the probe returns a reason."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        start = time.monotonic()
        reason = downloads.probe(f"http://127.0.0.1:{silent.getsockname()[1]}/x.h5", timeout=0.5)
        assert reason and "\n" not in reason and time.monotonic() - start < 2
    assert downloads.probe(closed_port_url("/x.h5"), timeout=2.0)


def test_probe_counts_any_http_answer(server):
    assert downloads.probe(server.url("/missing"), timeout=5) is None  # the download says 404


# -- the weights table ------------------------------------------------------------------------

def test_table_folders_follow_the_environment(tmp_path, monkeypatch):
    assert VGG16_NOTOP.path == tmp_path / "keras" / "models" / VGG16_NOTOP.name  # KERAS_HOME
    assert INCEPTION_V3_NOTOP.path.parent == paths.keras_cache_dir()
    assert INCEPTION_2015.path == tmp_path / "cache" / INCEPTION_2015.name  # FASTGAN_CACHE
    monkeypatch.delenv("FASTGAN_CACHE")
    monkeypatch.setattr(paths, "os", types.SimpleNamespace(name="posix", environ=paths.os.environ))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert INCEPTION_2015.path == tmp_path / "xdg" / "fastgan_tf" / INCEPTION_2015.name
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "local"))
    monkeypatch.setattr(paths, "os", types.SimpleNamespace(name="nt", environ=paths.os.environ))
    assert INCEPTION_2015.path == tmp_path / "local" / "fastgan_tf" / INCEPTION_2015.name


def test_table_entries():
    assert [w.checksum for w in WEIGHTS] == ["md5:6d6bbae143d832006294945121d1f1fc",
                                             "md5:bcbd6486424b2319ff4ef7d526e38f63", None]
    assert all(w.url.endswith("/" + w.name) and w.purpose and w.without for w in WEIGHTS)
    with pytest.raises(ValueError, match="checksum or a content check"):
        dataclasses.replace(VGG16_NOTOP, checksum=None)


def test_every_weights_file_is_fetched_through_download(monkeypatch):
    calls = []

    def fake_download(url, dest, checksum=None, **kwargs):
        calls.append((url, dest, checksum))
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(stand_in_tgz() if dest.suffix == ".tgz" else b"weights")
        return dest

    monkeypatch.setattr(downloads, "download", fake_download)
    monkeypatch.setattr(downloads, "probe", lambda url, timeout: None)
    assert [downloads.fetch(w) for w in WEIGHTS] == [w.path for w in WEIGHTS]
    assert calls == [(w.url, w.path, w.checksum) for w in WEIGHTS]
    assert [downloads.fetch(w) for w in WEIGHTS[2:]] == [INCEPTION_2015.path]  # cached now
    assert len(calls) == 3


def test_weights_are_downloaded_verified_and_then_cached(server):
    data = payload(5000)
    weights = served(VGG16_NOTOP, server, data)
    assert downloads.cached(weights) is None
    assert downloads.fetch(weights) == weights.path and weights.path.read_bytes() == data
    assert downloads.cached(weights) == weights.path
    requests = len(server.requests)
    assert downloads.fetch(weights) == weights.path and len(server.requests) == requests


def test_a_cached_file_with_a_wrong_checksum_is_reported_and_fetched_again(server,
                                                                           warnings_logged):
    data = payload(5000)
    weights = served(INCEPTION_V3_NOTOP, server, data)
    weights.path.parent.mkdir(parents=True)
    weights.path.write_bytes(b"an older or damaged copy")
    assert downloads.cached(weights) is None
    assert downloads.fetch(weights).read_bytes() == data
    assert f"{weights.path} is not used: its checksum is wrong" in warnings_logged.text


def _assert_unavailable(error, weights, *more):
    message = str(error.value)
    assert "\n" not in message
    for part in (weights.name, weights.url, str(weights.path.parent), weights.without, *more):
        assert part in message, f"{part!r} not in {message!r}"


@pytest.mark.parametrize("weights", WEIGHTS, ids=lambda w: w.name)
def test_offline_error_names_file_url_folder_and_how_to_do_without(weights):
    weights = dataclasses.replace(weights, url=closed_port_url(f"/{weights.name}"))
    start = time.monotonic()
    with pytest.raises(UserError) as error:
        downloads.fetch(weights, timeout=2)
    assert time.monotonic() - start < 3
    _assert_unavailable(error, weights, "could not be downloaded")
    assert not weights.path.parent.exists()  # nothing written


def test_offline_with_a_damaged_cached_copy_says_both(warnings_logged):
    weights = dataclasses.replace(VGG16_NOTOP, url=closed_port_url(f"/{VGG16_NOTOP.name}"))
    weights.path.parent.mkdir(parents=True)
    weights.path.write_bytes(b"damaged")
    with pytest.raises(UserError) as error:
        downloads.fetch(weights, timeout=2)
    _assert_unavailable(error, weights, "is not usable (its checksum is wrong (expected md5")
    assert weights.path.read_bytes() == b"damaged"  # kept: only a verified copy replaces it
    assert "is not used" in warnings_logged.text


def test_a_failing_download_after_the_probe_is_a_user_error(server):
    weights = served(VGG16_NOTOP, server, b"x")
    server.errors[f"/{weights.name}"] = 404
    with pytest.raises(UserError) as error:
        downloads.fetch(weights)
    _assert_unavailable(error, weights, "HTTP 404")


# -- the standard Inception archive: content check, then trust on first use --------------------

def test_content_check_accepts_the_layout_and_rejects_the_rest(tmp_path):
    check = downloads.holds_inception_graph
    cases = {"good.tgz": stand_in_tgz(), "garbage.tgz": b"<html>not found</html>",
             "other.tgz": stand_in_tgz({"README": b"x"}), "cut.tgz": stand_in_tgz()[:-40]}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    assert check(tmp_path / "good.tgz") is None
    assert "not a readable tar" in check(tmp_path / "garbage.tgz")
    assert f"holds no {INCEPTION_GRAPH_FILE}" in check(tmp_path / "other.tgz")
    assert check(tmp_path / "cut.tgz") is not None


def test_first_copy_is_recorded_and_a_later_change_is_caught(server, warnings_logged):
    original = stand_in_tgz()
    weights = served(INCEPTION_2015, server, original)
    record = downloads.recorded_checksum_path(weights)
    assert downloads.fetch(weights) == weights.path
    assert record.read_text().split() == [sha(original), weights.name]
    weights.path.write_bytes(stand_in_tgz({INCEPTION_GRAPH_FILE: b"tampered"}))  # still valid
    assert downloads.cached(weights) is None
    assert downloads.fetch(weights).read_bytes() == original  # fetched again, matches the record
    assert "is not the copy first checked here" in warnings_logged.text
    weights.path.unlink()
    server.files[f"/{weights.name}"] = stand_in_tgz({INCEPTION_GRAPH_FILE: b"new upstream"})
    with pytest.raises(UserError) as error:
        downloads.fetch(weights)
    _assert_unavailable(error, weights, str(record))
    assert not weights.path.exists() and not list(weights.path.parent.glob("*.part"))


def test_a_download_that_fails_the_content_check_is_not_kept(server):
    weights = served(INCEPTION_2015, server, b"<html>moved</html>")
    with pytest.raises(UserError) as error:
        downloads.fetch(weights)
    _assert_unavailable(error, weights, "not a readable tar")
    assert list(weights.path.parent.iterdir()) == []


def test_an_extracted_graph_beside_the_archive_is_accepted():
    folder = INCEPTION_2015.path.parent
    folder.mkdir(parents=True)
    (folder / INCEPTION_GRAPH_FILE).write_bytes(b"graph")
    assert downloads.fetch(INCEPTION_2015) == folder / INCEPTION_GRAPH_FILE


def test_importing_downloads_nothing(tmp_path):
    code = ("import urllib.request\n"
            "def refuse(*a, **k): raise AssertionError('network used at import')\n"
            "urllib.request.urlopen = refuse\n"
            "import fastgan_tf.downloads, fastgan_tf.data.resolve\n")
    env = {"FASTGAN_CACHE": str(tmp_path / "c"), "KERAS_HOME": str(tmp_path / "k"),
           "HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=Path(__file__).parents[1])
    assert list(tmp_path.iterdir()) == []
