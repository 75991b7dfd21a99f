"""`python -m fastgan_tf.data check`: the report on a fixture folder with good, duplicate and bad
files, compared with hand-counted values and with what the training loader itself skips."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from fastgan_tf.data.__main__ import main as cli_main
from fastgan_tf.data.check import check_folder, format_report, size_bucket
from fastgan_tf.data.images import load_images


def _image(mode: str, size: tuple[int, int], seed: int, fmt: str = "PNG") -> bytes:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    pixels = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    img = Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode)
    buffer = io.BytesIO()
    img.save(buffer, fmt)
    return buffer.getvalue()


@pytest.fixture
def messy(tmp_path):
    """8 image files (5 usable, 1 duplicate pair, 3 bad), 2 ignored files, 1 hidden file."""
    root = tmp_path / "messy"
    (root / "sub").mkdir(parents=True)
    a = _image("RGB", (64, 64), 0)
    (root / "a.png").write_bytes(a)
    (root / "a_copy.png").write_bytes(a)  # same content, different name
    (root / "sub" / "b.jpg").write_bytes(_image("RGB", (80, 40), 1, "JPEG"))  # non-square, small
    (root / "c.PNG").write_bytes(_image("L", (32, 32), 2))  # uppercase extension, greyscale
    (root / "d.png").write_bytes(_image("RGBA", (64, 64), 3))
    (root / "broken.png").write_bytes(_image("RGB", (64, 64), 4)[:100])  # truncated
    (root / "fake.jpg").write_text("this is not a picture")
    (root / "tiny.png").write_bytes(_image("RGB", (4, 4), 5))  # below min_size=8
    (root / "notes.txt").write_text("readme")
    (root / "anim.gif").write_bytes(_image("L", (16, 16), 6, "GIF"))
    (root / ".hidden.png").write_bytes(a)
    return root


def test_report_counts(messy):
    report = check_folder(messy, resolution=64)
    rel = report.rel
    assert len(report.files) == 8
    assert sorted(rel(p) for p in report.usable) == ["a.png", "a_copy.png", "c.PNG", "d.png",
                                                     "sub/b.jpg"]
    reasons = {rel(p): r for p, r in report.bad}
    assert set(reasons) == {"broken.png", "fake.jpg", "tiny.png"}
    assert "truncated" in reasons["broken.png"] and "too small" in reasons["tiny.png"]
    assert "not an image" in reasons["fake.jpg"]
    assert sorted(rel(p) for p in report.ignored) == ["anim.gif", "notes.txt"]
    assert dict(report.extensions) == {".png": 6, ".jpg": 2}
    assert dict(report.modes) == {"RGB": 3, "L": 1, "RGBA": 1}
    assert dict(report.sizes) == {"64-127": 3, "<64": 2}
    assert [rel(p) for p in report.non_square] == ["sub/b.jpg"]
    assert sorted(rel(p) for p in report.upscaled) == ["c.PNG", "sub/b.jpg"]
    assert [[rel(p) for p in g] for g in report.duplicates] == [["a.png", "a_copy.png"]]
    assert report.unique_usable == 4


def test_report_agrees_with_the_training_loader(messy):
    report = check_folder(messy, resolution=64)
    loaded = load_images(messy, 64, progress=False)
    assert sorted(loaded.files) == sorted(report.usable)
    assert sorted((p, r) for p, r in loaded.skipped) == sorted(report.bad)


def test_formatted_report_lists_problems(messy):
    text = format_report(check_folder(messy, resolution=64), expected=100)
    assert "usable      : 5   skipped: 3   ignored other files: 2" in text
    assert "duplicates  : 1 groups, 1 extra copies" in text
    assert "short side  : <64 x2, 64-127 x3" in text
    assert "duplicate content: a.png = a_copy.png" in text
    assert "broken.png: truncated" in text
    assert "2 files ignored" in text and ".gif x1" in text
    assert "2 images have a short side below 64 px" in text
    assert "1 images have transparency" in text
    assert "5 usable images, the registry expects 100" in text
    assert text.endswith("Training at 64x64 would use 5 images (4 distinct).")


def test_size_buckets():
    assert [size_bucket(s) for s in (1, 63, 64, 255, 256, 1023, 1024, 5000)] == [
        "<64", "<64", "64-127", "128-255", "256-511", "512-1023", ">=1024", ">=1024"]


def test_cli_check(messy, tmp_path, capsys):
    assert cli_main(["--data-dir", str(tmp_path / "cache"), "check", str(messy),
                     "--resolution", "64"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Dataset check: {messy.resolve()}")
    assert "would use 5 images (4 distinct)" in out

    only_bad = tmp_path / "only_bad"
    only_bad.mkdir()
    (only_bad / "x.png").write_text("nope")
    assert cli_main(["check", str(only_bad)]) == 1
    assert "no usable images" in capsys.readouterr().out

    assert cli_main(["check", str(tmp_path / "missing_dir")]) == 2
    assert "missing_dir" in capsys.readouterr().err
