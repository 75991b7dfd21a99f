"""Named datasets: registry table, safe extraction, resolve_dataset and its downloads.

The downloader itself (resume, checksums) is tested in test_downloads.py, whose loopback
http.server on 127.0.0.1 these tests use too.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
import stat
import urllib.parse
import zipfile
from pathlib import PurePosixPath

import numpy as np
import pytest
from PIL import Image

from fastgan_tf import downloads
from fastgan_tf.data import registry
from fastgan_tf.data import resolve as resolve_mod
from fastgan_tf.data.__main__ import main as cli_main
from fastgan_tf.data.archive import (
    ArchiveError,
    UnsafeArchiveError,
    extract_parquet,
    output_name,
    portable_part,
    portable_paths,
    safe_extract_zip,
    safe_member_path,
    sniff_suffix,
)
from fastgan_tf.data.registry import DatasetInfo, Source
from fastgan_tf.data.resolve import MARKER, default_data_dir, resolve_dataset
from fastgan_tf.errors import UserError
from test_downloads import sha


# -- fixtures ---------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    for var in ("FASTGAN_DATA", "FASTGAN_DATA_MIRROR", "FASTGAN_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # never the real user cache


def png_bytes(seed: int, size=(16, 16)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def make_zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def dataset_zip(n: int = 5, folder: str = "100-shot-obama/img") -> bytes:
    return make_zip({f"{folder}/{i:03d}.png": png_bytes(i) for i in range(n)})


# -- registry ---------------------------------------------------------------------------------

def test_registry_table_is_consistent():
    names = registry.names()
    assert len(names) == len(set(names))
    expected = {"obama": 100, "grumpy_cat": 100, "panda": 100, "animalface_cat": 160,
                "animalface_dog": 389}
    for name, count in expected.items():
        info = registry.get(name)
        assert info.count == count and info.resolution == 256
        assert info.licence and info.citation
        assert any(s.kind == "parquet" for s in info.sources)
        assert any(s.kind == "zip" for s in info.sources)
    for info in registry.DATASETS:
        assert info.name == registry.normalise(info.name)
        assert info.sources, info.name
        for source in info.sources:
            assert source.kind in ("zip", "parquet")
            assert all(u.startswith("https://") for u in source.urls)
            assert all(h is None or re.fullmatch(r"[0-9a-f]{64}", h) for h in source.sha256)
    art = registry.get("art")
    assert len(art.sources[0].urls) == 2  # two parquet shards
    assert registry.get("Grumpy-Cat") is registry.get("grumpy_cat")
    assert registry.get("100-shot-obama").name == "obama"
    assert registry.get("demo") is None and registry.get("nope") is None


def test_default_data_dir(monkeypatch, tmp_path):
    assert default_data_dir() == tmp_path / "xdg" / "fastgan_tf" / "datasets"
    monkeypatch.setenv("FASTGAN_DATA", str(tmp_path / "mine"))
    assert default_data_dir() == tmp_path / "mine"


# -- resolve_dataset through the mirror -------------------------------------------------------

def test_named_datasets_download_through_the_one_download_function(tmp_path, monkeypatch):
    archive = dataset_zip(2, folder="pics")
    calls = []

    def fake_download(url, dest, checksum=None, **kwargs):
        calls.append((url, checksum))
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(archive)
        return dest

    url = "https://example.invalid/tiny.zip"
    entry = DatasetInfo("tiny", "t", 2, 64, (Source((url,), "zip", sha256=(sha(archive),)),),
                        "l", "c")
    monkeypatch.setattr(registry, "DATASETS", (entry,))
    monkeypatch.setattr(downloads, "download", fake_download)
    assert len(list(resolve_dataset("tiny", tmp_path, progress=False).root.iterdir())) == 2
    assert calls == [(url, sha(archive))]


def test_mirror_download_extracts_once_and_falls_through(server, tmp_path, monkeypatch):
    archive = dataset_zip(5)
    server.files["/good/obama.zip"] = archive
    server.cut_once.add("/good/obama.zip")  # resume also works inside resolve_dataset
    monkeypatch.setenv("FASTGAN_DATA_MIRROR", f"{server.url('/bad')} ; {server.url('/good')}")
    data_dir = tmp_path / "cache"

    ds = resolve_dataset("obama", data_dir, progress=False)
    assert ds.name == "obama" and ds.info is registry.get("obama") and ds.complete
    assert sorted(p.name for p in ds.root.glob("*.png")) == [f"{i:03d}.png" for i in range(5)]
    assert ds.root == (data_dir / "obama" / "100-shot-obama" / "img").resolve()
    marker = json.loads((data_dir / "obama" / MARKER).read_text())
    assert marker["files"] == 5 and marker["sha256"] == sha(archive)
    assert marker["source"] == server.url("/good/obama.zip")
    requested = server.paths_requested()
    assert "/bad/obama.zip" in requested  # the first mirror was tried and failed (404)
    assert [r for p, r, _ in server.requests if p == "/good/obama.zip"][-1] is not None
    assert not (data_dir / ".downloads").exists()  # downloads cleaned up after extraction
    assert not list(data_dir.glob(".obama.tmp-*"))

    before = len(server.requests)
    again = resolve_dataset("obama", data_dir, progress=False)
    assert again.root == ds.root and len(server.requests) == before  # cached: no network


def test_mirror_checksum_file_is_enforced(server, tmp_path, monkeypatch):
    archive = dataset_zip(3)
    server.files["/m1/obama.zip"] = archive
    server.files["/m1/obama.zip.sha256"] = b"f" * 64 + b"  obama.zip\n"  # wrong digest
    server.files["/m2/obama.zip"] = archive
    server.files["/m2/obama.zip.sha256"] = f"{sha(archive)}  obama.zip\n".encode()
    monkeypatch.setenv("FASTGAN_DATA_MIRROR", f"{server.url('/m1')};{server.url('/m2')}")
    ds = resolve_dataset("obama", tmp_path, progress=False)
    assert json.loads((tmp_path / "obama" / MARKER).read_text())["source"].endswith("/m2/obama.zip")
    assert len(list(ds.root.glob("*.png"))) == 3
    assert not list(tmp_path.rglob("*.part"))  # the mismatching file was not kept


def test_public_sources_fall_through_in_order(server, tmp_path, monkeypatch):
    archive = dataset_zip(4, folder="pics")
    server.errors["/first.zip"] = 503
    server.files["/second.zip"] = archive
    entry = DatasetInfo("tiny", "Tiny test set", 4, 64,
                        (Source((server.url("/first.zip"),), "zip"),
                         Source((server.url("/second.zip"),), "zip", sha256=(sha(archive),))),
                        "test licence", "test citation")
    monkeypatch.setattr(registry, "DATASETS", (entry,))
    ds = resolve_dataset("tiny", tmp_path, progress=False)
    assert server.paths_requested() == ["/first.zip", "/second.zip"]
    assert ds.root.name == "pics" and len(list(ds.root.iterdir())) == 4


def test_bundle_source_picks_one_dataset_from_a_nested_zip(server, tmp_path, monkeypatch):
    bundle = make_zip({
        "data-efficient-gans/datasets/100-shot-obama.zip": dataset_zip(2, folder="obama"),
        "data-efficient-gans/datasets/100-shot-panda.zip": dataset_zip(3, folder="panda"),
        "data-efficient-gans/README.md": b"hello",
    })
    server.files["/bundle.zip"] = bundle
    entry = DatasetInfo("obama", "test", 2, 256, (Source((server.url("/bundle.zip"),), "zip",
                                                         subdir=("100-shot-obama",)),), "l", "c")
    monkeypatch.setattr(registry, "DATASETS", (entry,))
    ds = resolve_dataset("obama", tmp_path, progress=False)
    assert sorted(p.name for p in ds.root.iterdir()) == ["000.png", "001.png"]


def test_offline_error_is_one_line_and_says_where_to_put_files(server, tmp_path, monkeypatch):
    monkeypatch.setenv("FASTGAN_DATA_MIRROR", server.url("/nothing"))
    with pytest.raises(UserError) as info:
        resolve_dataset("obama", tmp_path, progress=False)
    message = str(info.value)
    assert "\n" not in message
    assert "'obama'" in message and str(tmp_path / "obama") in message
    assert server.url("/nothing/obama.zip") in message and "HTTP 404" in message


def test_offline_uses_a_hand_filled_folder(server, tmp_path, monkeypatch):
    monkeypatch.setenv("FASTGAN_DATA_MIRROR", server.url("/nothing"))
    hand = tmp_path / "obama"
    hand.mkdir()
    for i in range(3):
        (hand / f"{i}.png").write_bytes(png_bytes(i))
    ds = resolve_dataset("obama", tmp_path, progress=False)
    assert ds.root == hand.resolve() and not ds.complete


def test_download_moves_a_hand_filled_folder_aside_never_deletes(server, tmp_path, monkeypatch):
    server.files["/m/obama.zip"] = dataset_zip(2)
    monkeypatch.setenv("FASTGAN_DATA_MIRROR", server.url("/m"))
    (tmp_path / "obama").mkdir()
    (tmp_path / "obama" / "mine.png").write_bytes(png_bytes(9))
    ds = resolve_dataset("obama", tmp_path, progress=False)
    assert ds.complete and len(list(ds.root.glob("*.png"))) == 2
    backups = list(tmp_path.glob("obama.backup-*"))
    assert len(backups) == 1 and (backups[0] / "mine.png").read_bytes() == png_bytes(9)


def test_corrupt_archive_leaves_nothing_that_looks_complete(server, tmp_path, monkeypatch):
    archive = bytearray(dataset_zip(3))
    local = archive.find(b"PK\x03\x04", 10)  # second member: corrupt its compressed bytes
    archive[local + 60: local + 90] = b"\x00" * 30
    server.files["/m/obama.zip"] = bytes(archive)
    monkeypatch.setenv("FASTGAN_DATA_MIRROR", server.url("/m"))
    with pytest.raises(UserError, match="corrupt archive member"):
        resolve_dataset("obama", tmp_path, progress=False)
    assert not (tmp_path / "obama").exists()
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # no tmp folder, no download


# -- sources checked for issue 12: the Hub's conversions, the DiffAugment bundle --------------

DIFFAUG_SETS = {"obama": "100-shot-obama", "grumpy_cat": "100-shot-grumpy_cat",
                "panda": "100-shot-panda", "animalface_cat": "AnimalFace-cat",
                "animalface_dog": "AnimalFace-dog"}


def local_path(url: str) -> str:
    """What the loopback server is asked for in place of `url`: its path and query."""
    parts = urllib.parse.urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def on_loopback(info: DatasetInfo, server) -> DatasetInfo:
    """`info` with every source moved to the loopback server (same paths and queries)."""
    def moved(source):
        return dataclasses.replace(source, urls=tuple(server.url(local_path(u))
                                                      for u in source.urls))

    return dataclasses.replace(info, sources=tuple(map(moved, info.sources)))


def diffaug_bundle(counts: dict[str, int]) -> bytes:
    """The Dropbox archive as we expect it: one zip per dataset (its layout is not known)."""
    return make_zip({f"data-efficient-gans/datasets/{archive}.zip": dataset_zip(n, folder=archive)
                     for archive, n in counts.items()})


def test_moongate_and_aurora_have_the_hub_conversion_and_moongate_its_count():
    for name in ("moongate", "aurora"):
        converted = registry.get(name).sources[-1]
        assert converted.urls == (f"{registry.HF_ROOT}/few-shot-{name}/resolve/"
                                  "refs%2Fconvert%2Fparquet/default/train/0000.parquet",)
    assert registry.get("moongate").count == 136


def test_the_dropbox_bundle_is_the_size_limited_last_resort():
    for name in DIFFAUG_SETS:
        sources = registry.get(name).sources
        assert sources[-1].urls == (registry.DIFFAUG_DROPBOX,)
        assert sources[-1].max_bytes == registry.BUNDLE_MAX_BYTES
        assert all(s.max_bytes is None for s in sources[:-1])
    assert 256 * 2**20 <= registry.BUNDLE_MAX_BYTES <= 2**30


def test_moongate_falls_back_to_the_converted_parquet(server, tmp_path, monkeypatch, caplog):
    info = on_loopback(registry.get("moongate"), server)
    monkeypatch.setattr(registry, "DATASETS", (info,))
    main, converted = (local_path(s.urls[0]) for s in info.sources)
    server.files[converted] = _parquet_bytes([png_bytes(i, (8, 8)) for i in range(136)])
    ds = resolve_dataset("moongate", tmp_path, progress=False)
    assert len(list(ds.root.glob("*.png"))) == 136
    assert "expected" not in caplog.text  # the recorded count is what the copy holds
    assert server.paths_requested() == [main, converted]  # the main file first (404 here)


def test_the_bundle_is_downloaded_once_for_all_five_datasets(server, tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "DATASETS",
                        tuple(on_loopback(registry.get(name), server) for name in DIFFAUG_SETS))
    monkeypatch.setattr(resolve_mod, "parquet_available", lambda: False)  # zip sources only
    bundle = local_path(registry.DIFFAUG_DROPBOX)
    server.files[bundle] = diffaug_bundle({archive: 2 for archive in DIFFAUG_SETS.values()})
    kept = tmp_path / ".downloads" / "bundles"
    for i, name in enumerate(DIFFAUG_SETS, 1):
        assert len(list(resolve_dataset(name, tmp_path, progress=False).root.iterdir())) == 2
        if i < len(DIFFAUG_SETS):  # kept while it serves a dataset not extracted yet
            assert [p.suffix for p in kept.iterdir()] == [".zip"]
    assert server.paths_requested().count(bundle) == 1
    assert not (tmp_path / ".downloads").exists()  # deleted with the last dataset extracted


def test_a_bundle_without_the_dataset_is_kept_for_the_others(server, tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "DATASETS",
                        tuple(on_loopback(registry.get(name), server) for name in DIFFAUG_SETS))
    monkeypatch.setattr(resolve_mod, "parquet_available", lambda: False)
    bundle = local_path(registry.DIFFAUG_DROPBOX)
    server.files[bundle] = diffaug_bundle({"100-shot-panda": 3})
    with pytest.raises(UserError, match=r"\(no images inside\)"):
        resolve_dataset("obama", tmp_path, progress=False)
    assert len(list((tmp_path / ".downloads" / "bundles").iterdir())) == 1
    assert len(list(resolve_dataset("panda", tmp_path, progress=False).root.iterdir())) == 3
    assert server.paths_requested().count(bundle) == 1


def test_a_download_larger_than_its_source_allows_is_refused(server, tmp_path, monkeypatch):
    server.files["/big.zip"] = dataset_zip(3)
    entry = DatasetInfo("big", "t", 3, 64, (Source((server.url("/big.zip"),), "zip",
                                                   max_bytes=100),), "l", "c")
    monkeypatch.setattr(registry, "DATASETS", (entry,))
    with pytest.raises(UserError, match="more than the 100 allowed"):
        resolve_dataset("big", tmp_path, progress=False)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


# -- paths and zips given by the user ---------------------------------------------------------

def test_folder_is_used_as_it_is(tmp_path):
    folder = tmp_path / "my_faces"
    folder.mkdir()
    ds = resolve_dataset(str(folder), tmp_path / "cache", progress=False)
    assert ds.root == folder.resolve() and ds.name == "my_faces" and ds.info is None
    assert not (tmp_path / "cache").exists()


def test_unknown_name_lists_known_names(tmp_path):
    with pytest.raises(UserError) as info:
        resolve_dataset("obamma", tmp_path, progress=False)
    assert "obama" in str(info.value) and "python -m fastgan_tf.data list" in str(info.value)
    with pytest.raises(UserError, match="no such folder"):
        resolve_dataset("some/where", tmp_path, progress=False)
    text = tmp_path / "notes.txt"
    text.write_text("x")
    with pytest.raises(UserError, match="not a .zip"):
        resolve_dataset(str(text), tmp_path, progress=False)


def test_zip_dataset_is_extracted_once_into_the_cache(tmp_path):
    zip_path = tmp_path / "cats.zip"
    zip_path.write_bytes(dataset_zip(3, folder="cats"))
    cache = tmp_path / "cache"
    ds = resolve_dataset(str(zip_path), cache, progress=False)
    assert ds.name == "cats" and ds.info is None
    assert ds.root.parent.parent == (cache / "zips").resolve()
    assert len(list(ds.root.glob("*.png"))) == 3
    marker = json.loads((ds.root.parent / MARKER).read_text())
    assert marker["sha256"] == sha(zip_path.read_bytes())
    (ds.root / "000.png").unlink()  # a second call reuses the cache (does not re-extract)
    assert resolve_dataset(str(zip_path), cache, progress=False).root == ds.root
    assert not (ds.root / "000.png").exists()


# -- safe extraction --------------------------------------------------------------------------

def _zip_with_link() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("ok.png", png_bytes(1))
        link = zipfile.ZipInfo("link.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    return buffer.getvalue()


@pytest.mark.parametrize("archive, message", [
    (make_zip({"ok.png": b"1", "../evil.png": b"2"}), "escapes"),
    (make_zip({"ok.png": b"1", "a/../../evil.png": b"2"}), "escapes"),
    (make_zip({"ok.png": b"1", "/tmp/evil.png": b"2"}), "absolute"),
    (make_zip({"ok.png": b"1", "C:/evil.png": b"2"}), "absolute"),
    (_zip_with_link(), "link"),
], ids=["dotdot", "nested-dotdot", "absolute", "drive-letter", "symlink"])
def test_malicious_archives_are_rejected_before_writing(tmp_path, archive, message):
    path = tmp_path / "bad.zip"
    path.write_bytes(archive)
    target = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError, match=message):
        safe_extract_zip(path, target)
    assert not target.exists() or not any(target.iterdir())
    assert not (tmp_path / "evil.png").exists()


def test_too_large_archives_are_rejected(tmp_path):
    path = tmp_path / "big.zip"
    path.write_bytes(make_zip({"a.bin": b"\0" * 600, "b.bin": b"\0" * 600}))  # compresses well
    with pytest.raises(UnsafeArchiveError, match="more than"):
        safe_extract_zip(path, tmp_path / "out", max_total_bytes=1000)
    with pytest.raises(UnsafeArchiveError, match="more than 1"):
        safe_extract_zip(path, tmp_path / "out", max_files=1)
    assert safe_extract_zip(path, tmp_path / "ok", max_total_bytes=1200) == 2


def test_malicious_user_zip_gives_a_user_error_and_no_cache_folder(tmp_path):
    path = tmp_path / "evil.zip"
    path.write_bytes(make_zip({"x.png": png_bytes(0), "../../escape.png": b"x"}))
    with pytest.raises(UserError, match="evil.zip.*escapes"):
        resolve_dataset(str(path), tmp_path / "cache", progress=False)
    zips = tmp_path / "cache" / "zips"
    assert not zips.exists() or not any(zips.iterdir())


def test_not_a_zip_is_reported_as_a_web_page(tmp_path):
    path = tmp_path / "page.zip"
    path.write_bytes(b"<!DOCTYPE html><html>Sign in</html>")
    with pytest.raises(ArchiveError, match="web page"):
        safe_extract_zip(path, tmp_path / "out")


def test_member_path_rules():
    assert safe_member_path("a/./b\\c.png").as_posix() == "a/b/c.png"
    for bad in ("../x", "/x", "\\x", "D:x", "a/../../x", "a\x00b", ""):
        with pytest.raises(UnsafeArchiveError):
            safe_member_path(bad)


@pytest.mark.parametrize("name, portable", [
    ("a:b.png", "a_b.png"), ('q?<>"|*.png', "q______.png"), ("x.png.", "x.png"),
    ("y.png  ", "y.png"), ("...", "_"), ("CON", "_CON"), ("con.png", "_con.png"),
    ("Nul.tar.gz", "_Nul.tar.gz"), ("COM1.png", "_COM1.png"), ("lpt9", "_lpt9"),
    ("LPT\u00b9.png", "_LPT\u00b9.png"), ("AUX .png", "_AUX .png"), ("console.png", "console.png"),
    ("COM10.png", "COM10.png"), ("ok.png", "ok.png"),
])
def test_names_windows_cannot_store_are_renamed(name, portable):
    assert portable_part(name) == portable


def test_windows_unsafe_zip_extracts_to_the_same_files_everywhere(tmp_path, caplog):
    names = ["imgs/a:b.png", "imgs/CON.png", "imgs/dot.png.", "imgs/Dup.png", "imgs/dup.png",
             "IMGS/more.png", "imgs/ok.png", "imgs/Sub/1.png", "imgs/sub/2.png"]
    path = tmp_path / "windows.zip"
    path.write_bytes(make_zip({name: png_bytes(i) for i, name in enumerate(names)}))
    with caplog.at_level("WARNING", logger="fastgan_tf.data.archive"):
        assert safe_extract_zip(path, tmp_path / "out") == len(names)
    found = sorted(p.relative_to(tmp_path / "out").as_posix()
                   for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert found == ["imgs/Dup.png", "imgs/Sub/1.png", "imgs/Sub/2.png", "imgs/_CON.png",
                     "imgs/a_b.png", "imgs/dot.png", "imgs/dup~1.png", "imgs/more.png",
                     "imgs/ok.png"]
    # no file overwrote another: every member's bytes are there
    assert (tmp_path / "out/imgs/dup~1.png").read_bytes() == png_bytes(names.index("imgs/dup.png"))
    assert "renamed 6 of 9 files" in caplog.text
    assert "'imgs/a:b.png' -> 'imgs/a_b.png'" in caplog.text


def test_portable_paths_keep_the_first_spelling_and_never_collide():
    paths = [PurePosixPath(p) for p in ("A/b.png", "a", "a/B.png", "x/y", "X/Y/z.png", "c.png",
                                        "C.PNG", "c~1.png")]
    assert [p.as_posix() for p in portable_paths(paths)] == [
        "A/b.png", "a~1", "A/B~1.png", "x/y~1", "x/Y/z.png", "c.png", "C~1.PNG", "c~1~1.png"]


def test_zip_without_unusual_names_logs_nothing(tmp_path, caplog):
    path = tmp_path / "plain.zip"
    path.write_bytes(dataset_zip(3, folder="cats"))
    with caplog.at_level("INFO", logger="fastgan_tf.data.archive"):
        safe_extract_zip(path, tmp_path / "out")
    assert caplog.text == ""


# -- parquet (Hugging Face) -------------------------------------------------------------------

def test_parquet_naming_helpers():
    png, jpg = png_bytes(0), b"\xff\xd8\xff\xe0" + b"0" * 20
    assert sniff_suffix(png) == ".png" and sniff_suffix(jpg) == ".jpg"
    assert sniff_suffix(b"RIFF1234WEBPxx") == ".webp" and sniff_suffix(b"??") == ".bin"
    assert output_name(3, png, "../../etc/x y.png") == "00003_x_y.png"
    assert output_name(12, jpg, "") == "00012.jpg"
    assert output_name(1, jpg, "photo.dat") == "00001_photo.jpg"


def test_parquet_extraction_writes_every_image(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    blobs = [png_bytes(i) for i in range(4)]
    images = pa.array([{"bytes": b, "path": f"img{i}.png"} for i, b in enumerate(blobs)] + [None],
                      type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    pq.write_table(pa.table({"image": images, "label": pa.array([0, 1, 0, 1, 0])}),
                   tmp_path / "train.parquet")
    assert extract_parquet([tmp_path / "train.parquet"], tmp_path / "out") == 4
    written = sorted((tmp_path / "out").iterdir())
    assert [p.name for p in written] == [f"{i:05d}_img{i}.png" for i in range(4)]
    assert [p.read_bytes() for p in written] == blobs


def _parquet_bytes(blobs: list[bytes]) -> bytes:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    images = pa.array([{"bytes": b, "path": f"{i}.png"} for i, b in enumerate(blobs)],
                      type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    buffer = io.BytesIO()
    pq.write_table(pa.table({"image": images}), buffer)
    return buffer.getvalue()


def test_sharded_parquet_source_through_resolve(server, tmp_path, monkeypatch):
    server.files["/d/train-0.parquet"] = _parquet_bytes([png_bytes(i) for i in range(3)])
    server.files["/d/train-1.parquet"] = _parquet_bytes([png_bytes(i) for i in range(3, 5)])
    entry = DatasetInfo("shards", "test", 5, 256, (Source(
        (server.url("/d/train-0.parquet"), server.url("/d/train-1.parquet")), "parquet"),), "l", "c")
    monkeypatch.setattr(registry, "DATASETS", (entry,))
    ds = resolve_dataset("shards", tmp_path, progress=False)
    assert len(list(ds.root.glob("*.png"))) == 5
    assert len(json.loads((tmp_path / "shards" / MARKER).read_text())["sha256"]) == 2


def test_parquet_sources_are_skipped_without_pyarrow(server, tmp_path, monkeypatch):
    server.files["/d.zip"] = dataset_zip(2)
    parquet = Source((server.url("/d.parquet"),), "parquet")
    monkeypatch.setattr(resolve_mod, "parquet_available", lambda: False)
    monkeypatch.setattr(registry, "DATASETS", (
        DatasetInfo("both", "t", 2, 256, (parquet, Source((server.url("/d.zip"),), "zip")), "l", "c"),
        DatasetInfo("only", "t", 2, 256, (parquet,), "l", "c"),
    ))
    assert len(list(resolve_dataset("both", tmp_path, progress=False).root.iterdir())) == 2
    with pytest.raises(UserError, match="pip install pyarrow"):
        resolve_dataset("only", tmp_path, progress=False)
    assert "/d.parquet" not in server.paths_requested()  # no wasted download


# -- CLI --------------------------------------------------------------------------------------

def test_cli_list_shows_registry_and_cache(server, tmp_path, monkeypatch, capsys):
    server.files["/m/panda.zip"] = dataset_zip(3, folder="panda")
    monkeypatch.setenv("FASTGAN_DATA_MIRROR", server.url("/m"))
    assert cli_main(["--data-dir", str(tmp_path), "download", "panda"]) == 0
    out = capsys.readouterr().out
    assert "licence: panda:" in out
    assert cli_main(["--data-dir", str(tmp_path), "list"]) == 0
    listing = capsys.readouterr().out
    assert re.search(r"panda\s+100\s+256\s+cached \(3\)", listing)
    assert re.search(r"obama\s+100\s+256\s+-", listing)
    assert cli_main(["--data-dir", str(tmp_path), "download", "nope"]) == 2
    assert "unknown dataset" in capsys.readouterr().err


def test_resolve_module_has_no_side_effects_at_import():
    assert resolve_mod.MARKER == ".complete.json"  # importing touched no network and no disk
