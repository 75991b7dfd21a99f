"""Image-folder loading, decode cache, tf.data epoch pipeline, demo set, progress bar, grids."""

import io
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from fastgan_tf.data import images as images_mod
from fastgan_tf.data.demo import DEMO_DEFAULTS, make_demo_images
from fastgan_tf.data.images import (
    BadImageError,
    discover_images,
    fingerprint,
    legacy_fingerprint,
    load_image,
    load_images,
    open_rgb,
    same_dataset,
)
from fastgan_tf.data.pipeline import (
    epoch_plan,
    images_variable,
    make_epoch_dataset,
    steps_per_epoch,
)
from fastgan_tf.errors import UserError
from fastgan_tf.progress import progress
from fastgan_tf.visualize import make_grid, save_image_grid

RED, BLUE = (255, 0, 0), (0, 0, 255)


def _solid(mode, size, value):
    return Image.new(mode, size, value)


def _save(img, path, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kwargs)
    return path


def _exif_rotated_jpeg(path):
    """20x10 stored image, left half red / right half blue, EXIF orientation 6 (rotate 90 CW)."""
    img = Image.new("RGB", (20, 10), BLUE)
    img.paste(RED, (0, 0, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6
    return _save(img, path, quality=95, exif=exif.tobytes())


@pytest.fixture
def folder(tmp_path):
    """A messy dataset folder: nested, mixed case, every mode, some broken files and junk."""
    root = tmp_path / "data"
    _save(_solid("RGB", (16, 16), RED), root / "a" / "red.PNG")
    _save(_solid("RGB", (24, 16), (0, 128, 0)), root / "b" / "c" / "green.JpG", quality=95)
    _save(_solid("RGB", (16, 16), BLUE), root / "blue.webp", lossless=True)
    _save(_solid("RGB", (16, 16), (10, 20, 30)), root / "dark.bmp")
    _save(_solid("RGBA", (16, 16), (201, 100, 0, 128)), root / "rgba.png")
    _save(_solid("LA", (16, 16), (0, 51)), root / "la.png")
    _save(_solid("L", (16, 16), 77), root / "grey.png")
    _save(_solid("CMYK", (16, 16), (0, 255, 255, 0)), root / "cmyk.jpg", quality=95)
    _save(Image.fromarray(np.full((16, 16), 25700, np.uint16)), root / "i16.png")
    p = Image.new("P", (16, 16), 1)
    p.putpalette([10, 20, 30, 200, 0, 0] + [0] * 762)
    p.paste(0, (0, 0, 8, 16))  # left half: palette index 0, declared transparent
    _save(p, root / "palette.png", transparency=0)
    _exif_rotated_jpeg(root / "rotated.jpeg")
    # broken or unusable
    (root / "zero.jpg").write_bytes(b"")
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    buf = io.BytesIO()
    noise.save(buf, format="PNG")
    (root / "truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (root / "text.jpg").write_text("this is not a jpeg")
    _save(_solid("RGB", (4, 4), RED), root / "tiny.png")
    # ignored: hidden files/folders, macOS junk, non-image extensions
    _save(_solid("RGB", (16, 16), RED), root / ".hidden" / "x.png")
    _save(_solid("RGB", (16, 16), RED), root / "._red.PNG")
    (root / "notes.txt").write_text("hello")
    return root


GOOD = [
    "a/red.PNG", "b/c/green.JpG", "blue.webp", "cmyk.jpg", "dark.bmp", "grey.png", "i16.png",
    "la.png", "palette.png", "rgba.png", "rotated.jpeg",
]
BAD = {
    "text.jpg": "not an image",
    "tiny.png": "too small",
    "truncated.png": "truncated",
    "zero.jpg": "empty",
}


# --------------------------------------------------------------------------------------------
# discovery and decoding
# --------------------------------------------------------------------------------------------
def test_discover_is_recursive_sorted_case_insensitive_and_skips_hidden(folder):
    found = [p.relative_to(folder).as_posix() for p in discover_images(folder)]
    assert found == sorted(GOOD + list(BAD))


def test_modes_are_converted_and_composited(folder):
    px = lambda name, **kw: load_image(folder / name, 16, **kw)[8, 12]  # noqa: E731 (right half)
    # 201*128/255 + 255*127/255 = 227.9, 100*128/255 + 127 = 177.2, 0 + 127 = 127 (rounded)
    assert tuple(px("rgba.png")) == (228, 177, 127)
    assert tuple(px("rgba.png", background=(0, 0, 0))) == (101, 50, 0)  # 100.9, 50.2, 0
    assert tuple(px("la.png")) == (204, 204, 204)  # 0*51/255 + 255*204/255
    assert tuple(px("grey.png")) == (77, 77, 77)
    assert tuple(px("dark.bmp")) == (10, 20, 30)
    assert tuple(px("blue.webp")) == BLUE
    assert tuple(px("i16.png")) == (100, 100, 100)  # 25700 / 257, not clipped to 255
    assert np.abs(px("cmyk.jpg").astype(int) - RED).max() <= 4
    palette = load_image(folder / "palette.png", 16, background=(0, 0, 255))
    assert tuple(palette[8, 2]) == (0, 0, 255)  # transparent index -> background
    assert tuple(palette[8, 12]) == (200, 0, 0)


def test_sixteen_bit_scaling_keeps_full_range(tmp_path):
    ramp = np.array([[0, 257 * 100, 65535, 65535]], dtype=np.uint16).repeat(4, axis=0)
    path = _save(Image.fromarray(ramp), tmp_path / "ramp.png")
    assert Image.open(path).mode.startswith("I")
    assert np.array(open_rgb(path))[0, :, 0].tolist() == [0, 100, 255, 255]
    # 32-bit int and float modes (not produced by our formats, but handled by the same rule)
    as_i = Image.fromarray(np.array([[0, 25700, 65535]], np.int32), "I")
    assert np.array(images_mod.to_rgb(as_i))[0, :, 1].tolist() == [0, 100, 255]
    unit_f = Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32), "F")
    assert np.array(images_mod.to_rgb(unit_f))[0, :, 2].tolist() == [0, 128, 255]
    odd_f = Image.fromarray(np.array([[-5.0, 0.0, 5.0]], np.float32), "F")
    assert np.array(images_mod.to_rgb(odd_f))[0, :, 0].tolist() == [0, 128, 255]  # stretched


def test_exif_orientation_is_applied_before_resize(folder):
    img = open_rgb(folder / "rotated.jpeg")
    assert img.size == (10, 20)  # width 10, height 20: taller than wide
    out = load_image(folder / "rotated.jpeg", 16).astype(int)
    # orientation 6 = rotate 90 degrees clockwise: the stored left half (red) ends up on top
    assert np.abs(out[2, 8] - RED).max() < 30 and np.abs(out[13, 8] - BLUE).max() < 30


def test_center_crop_vs_squash(tmp_path):
    img = Image.new("RGB", (30, 10), BLUE)
    img.paste(RED, (10, 0, 20, 10))  # red square in the middle third
    path = _save(img, tmp_path / "wide.png")
    assert (load_image(path, 10, crop="center") == RED).all()
    squashed = load_image(path, 10, crop="none")
    assert tuple(squashed[5, 0]) == BLUE and tuple(squashed[5, 5]) == RED


def test_resize_output_shape_and_antialiasing(tmp_path):
    stripes = np.zeros((64, 64, 3), np.uint8)
    stripes[:, ::2] = 255  # 1-px stripes: aliasing would give pure black/white, antialiasing grey
    path = _save(Image.fromarray(stripes), tmp_path / "stripes.png")
    out = load_image(path, 16)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    assert 100 < out[4:12, 4:12].mean() < 155


@pytest.mark.parametrize("name,reason", sorted(BAD.items()))
def test_bad_files_raise_bad_image_error(folder, name, reason):
    with pytest.raises(BadImageError, match=reason) as info:
        load_image(folder / name, 16, min_size=8)
    assert info.value.path == folder / name
    assert isinstance(info.value, UserError)


def test_load_images_keeps_good_and_reports_bad(folder):
    result = load_images(folder, 16, progress=False)
    assert [p.relative_to(folder).as_posix() for p in result.files] == GOOD
    assert result.images.shape == (len(GOOD), 16, 16, 3) and result.images.dtype == np.uint8
    skipped = {p.name: reason for p, reason in result.skipped}
    assert set(skipped) == set(BAD)
    for name, fragment in BAD.items():
        assert fragment in skipped[name] and "\n" not in skipped[name]
    # rows line up with files after the bad ones were compacted out
    assert tuple(result.images[GOOD.index("blue.webp"), 8, 8]) == BLUE
    assert tuple(result.images[GOOD.index("rgba.png"), 8, 8]) == (228, 177, 127)
    summary = result.summary()
    assert summary["root"] == str(folder) and summary["images"] == len(GOOD)
    assert summary["skipped"] == len(BAD) and len(summary["skipped_examples"]) == 4
    assert summary["skipped_examples"][0].startswith("text.jpg: ")


def test_load_images_from_a_file_list(folder):
    files = [folder / "a" / "red.PNG", folder / "zero.jpg"]
    result = load_images(files, 8, progress=False)
    assert result.files == files[:1] and len(result.skipped) == 1


def test_all_bad_missing_and_empty_folders_raise_user_error(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_bytes(b"")
    (bad / "b.jpg").write_text("nope")
    with pytest.raises(UserError, match="No usable images in .*bad.*all 2"):
        load_images(bad, 16, progress=False)
    with pytest.raises(UserError, match="not found: .*missing"):
        load_images(tmp_path / "missing", 16)
    other = tmp_path / "other"
    other.mkdir()
    (other / "x.tif").write_bytes(b"II*")
    with pytest.raises(UserError, match=r"No images in .*other.*1 other files \(\.tif x1\)"):
        load_images(other, 16)
    with pytest.raises(UserError, match="not a folder"):
        load_images(other / "x.tif", 16)


def test_progress_bar_shown_for_many_files(tmp_path, capsys, cli_logging):
    for i in range(51):
        _save(_solid("RGB", (8, 8), (i, 0, 0)), tmp_path / f"{i:02d}.png")
    result = load_images(tmp_path, 8)
    assert len(result) == 51 and result.images[50, 0, 0, 0] == 50
    err = capsys.readouterr().err
    assert "51/51" in err and err.count("\n") == 1


# --------------------------------------------------------------------------------------------
# decode cache
# --------------------------------------------------------------------------------------------
def test_cache_hit_skips_decoding_and_change_invalidates(folder, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    calls = []
    real = images_mod.load_image
    counting = lambda *a, **k: calls.append(a[0]) or real(*a, **k)  # noqa: E731
    monkeypatch.setattr(images_mod, "load_image", counting)

    first = load_images(folder, 16, cache_dir=cache, progress=False)
    assert len(calls) == len(GOOD) + len(BAD) and not first.from_cache
    second = load_images(folder, 16, cache_dir=cache, progress=False)
    assert len(calls) == len(GOOD) + len(BAD)  # nothing decoded the second time
    assert second.from_cache
    np.testing.assert_array_equal(second.images, first.images)
    assert second.files == first.files and second.skipped == first.skipped
    assert not [p for p in cache.iterdir() if p.suffix == ".tmp"]

    _save(_solid("RGB", (16, 16), (1, 2, 3)), folder / "dark.bmp")
    os.utime(folder / "dark.bmp", ns=(1, 1))
    third = load_images(folder, 16, cache_dir=cache, progress=False)
    assert len(calls) == 2 * (len(GOOD) + len(BAD)) and not third.from_cache
    assert tuple(third.images[GOOD.index("dark.bmp"), 0, 0]) == (1, 2, 3)
    # other settings are separate cache entries
    assert load_images(folder, 8, cache_dir=cache, progress=False).images.shape[1] == 8


def test_fingerprint_depends_on_files_and_params(folder):
    files = discover_images(folder)
    base = fingerprint(files, folder, resolution=16)
    assert base == fingerprint(list(reversed(files)), folder, resolution=16)
    assert base != fingerprint(files, folder, resolution=32)
    assert base != fingerprint(files[1:], folder, resolution=16)
    (folder / "grey.png").write_bytes((folder / "grey.png").read_bytes() + b"\0")
    assert base != fingerprint(files, folder, resolution=16)


def _copy_with_new_times(folder, target):
    """A copy as another OS or a backup makes it: same bytes, other modification times."""
    shutil.copytree(folder, target)
    for i, path in enumerate(sorted(target.rglob("*"))):
        os.utime(path, ns=(10**18 + i, 10**18 + i))
    return discover_images(target)


def test_fingerprint_follows_the_contents_not_the_times(folder, tmp_path):
    files = discover_images(folder)
    base = fingerprint(files, folder, resolution=16)
    copy = _copy_with_new_times(folder, tmp_path / "copied")
    assert fingerprint(copy, tmp_path / "copied", resolution=16) == base
    assert legacy_fingerprint(copy, tmp_path / "copied", resolution=16) != \
        legacy_fingerprint(files, folder, resolution=16)  # the old one changed with the times

    target = tmp_path / "copied" / "dark.bmp"
    stat = target.stat()
    data = bytearray(target.read_bytes())
    data[-1] ^= 1  # one byte, same size, same modification time
    target.write_bytes(bytes(data))
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert fingerprint(copy, tmp_path / "copied", resolution=16) != base

    renamed = tmp_path / "renamed"
    shutil.copytree(folder, renamed)
    (renamed / "grey.png").rename(renamed / "gray.png")
    assert fingerprint(discover_images(renamed), renamed, resolution=16) != base


def test_fingerprint_samples_both_ends_of_large_files(tmp_path):
    path = tmp_path / "big.png"
    data = bytearray(np.random.default_rng(0).integers(0, 256, 3 * images_mod.SAMPLE_BYTES,
                                                       dtype=np.uint8).tobytes())
    path.write_bytes(bytes(data))
    base = fingerprint([path], tmp_path)
    for where in (0, len(data) - 1):
        changed = bytearray(data)
        changed[where] ^= 1
        path.write_bytes(bytes(changed))
        assert fingerprint([path], tmp_path) != base
    path.write_bytes(bytes(data))
    assert fingerprint([path], tmp_path) == base


def test_fingerprints_recorded_by_older_versions_are_recognised(folder, tmp_path):
    files = discover_images(folder)
    params = {"resolution": 16, "crop": "center"}
    old = legacy_fingerprint(files, folder, **params)
    assert old != fingerprint(files, folder, **params)
    assert same_dataset(old, files, folder, **params)
    assert same_dataset(fingerprint(files, folder, **params), files, folder, **params)
    assert not same_dataset(old, files, folder, resolution=32, crop="center")
    assert not same_dataset(None, files, folder, **params)
    copy = _copy_with_new_times(folder, tmp_path / "copied")
    assert not same_dataset(old, copy, tmp_path / "copied", **params)  # as before: times differ
    assert same_dataset(fingerprint(files, folder, **params), copy, tmp_path / "copied", **params)


def test_decode_cache_of_an_older_version_is_still_used(folder, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    with monkeypatch.context() as m:  # an older version keyed its cache by the mtime fingerprint
        m.setattr(images_mod, "fingerprint", images_mod.legacy_fingerprint)
        assert not load_images(folder, 16, cache_dir=cache, progress=False).from_cache
    assert load_images(folder, 16, cache_dir=cache, progress=False).from_cache


# --------------------------------------------------------------------------------------------
# tf.data pipeline
# --------------------------------------------------------------------------------------------
def _numbered_images(n, size=4):
    """Image i has value i (mod 256) in the left column and 255 - that on the right."""
    images = np.zeros((n, size, size, 3), np.uint8)
    images[:, :, 0] = (np.arange(n) % 256)[:, None, None]
    images[:, :, -1] = 255 - images[:, :, 0]
    return images


def _batches(ds):
    return [b.numpy() for b in ds]


def test_epoch_dataset_shapes_range_and_contents():
    images = _numbered_images(22)
    batches = _batches(make_epoch_dataset(images, 4, seed=3, epoch=0))
    assert len(batches) == 5 == steps_per_epoch(22, 4)  # drop_remainder: 2 images left out
    for b in batches:
        assert b.shape == (4, 4, 4, 3) and b.dtype == np.float32
        assert b.min() >= -1.0 and b.max() <= 1.0
    indices, flips = epoch_plan(22, 4, seed=3, epoch=0)
    expected = images[indices].astype(np.float32)
    expected[flips] = expected[flips][:, :, ::-1]
    np.testing.assert_allclose(np.stack(batches), expected / 127.5 - 1.0, atol=1e-6)
    assert len(set(indices.ravel())) == 20  # a permutation: no image twice in an epoch


def test_extreme_values_map_to_minus_one_and_one():
    images = np.zeros((2, 2, 2, 3), np.uint8)
    images[1] = 255
    batch = _batches(make_epoch_dataset(images, 2, seed=0, epoch=0, flip=False))[0]
    assert sorted(batch.reshape(2, -1)[:, 0].tolist()) == [-1.0, 1.0]


def test_epoch_dataset_is_deterministic_per_seed_and_epoch():
    images = _numbered_images(40)
    a = _batches(make_epoch_dataset(images, 8, seed=7, epoch=2))
    b = _batches(make_epoch_dataset(images, 8, seed=7, epoch=2))
    c = _batches(make_epoch_dataset(images, 8, seed=7, epoch=3))
    d = _batches(make_epoch_dataset(images, 8, seed=8, epoch=2))
    np.testing.assert_array_equal(np.stack(a), np.stack(b))
    assert not np.array_equal(np.stack(a), np.stack(c))
    assert not np.array_equal(np.stack(a), np.stack(d))


@pytest.mark.parametrize("skip", [0, 1, 3, 5])
def test_skip_batches_equals_dropping_batches(skip):
    images = _numbered_images(43)
    full = _batches(make_epoch_dataset(images, 8, seed=1, epoch=4))
    resumed = _batches(make_epoch_dataset(images, 8, seed=1, epoch=4, skip_batches=skip))
    assert len(resumed) == 5 - skip
    for x, y in zip(full[skip:], resumed):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(ValueError):
        make_epoch_dataset(images, 8, seed=1, epoch=4, skip_batches=6)


def test_about_half_the_images_are_flipped_deterministically():
    n = 400
    images = _numbered_images(n)  # left column i % 256, right column 255 - i % 256
    indices, flips = epoch_plan(n, 8, seed=5, epoch=0)
    values = indices.ravel() % 256
    out = np.concatenate(_batches(make_epoch_dataset(images, 8, seed=5, epoch=0)))
    left = np.rint((out[:, 0, 0, 0] + 1) * 127.5)
    observed = left != values
    assert 0.42 < observed.mean() < 0.58
    np.testing.assert_array_equal(observed, flips.ravel())
    again = np.concatenate(_batches(make_epoch_dataset(images, 8, seed=5, epoch=0)))
    np.testing.assert_array_equal(out, again)
    no_flip = np.concatenate(_batches(make_epoch_dataset(images, 8, seed=5, epoch=0, flip=False)))
    np.testing.assert_array_equal(np.rint((no_flip[:, 0, 0, 0] + 1) * 127.5), values)


def test_images_variable_is_created_once_on_cpu():
    images = _numbered_images(16)
    variable = images_variable(images)
    assert images_variable(images) is variable and "CPU" in variable.device
    make_epoch_dataset(images, 4, seed=0, epoch=0)
    make_epoch_dataset(images, 4, seed=0, epoch=1)
    assert images_variable(images) is variable


def test_steps_per_epoch_and_batch_larger_than_dataset():
    assert steps_per_epoch(10, 3) == 3
    message = r"Batch size 8 is larger than the dataset \(5 images\).*--batch-size 5"
    with pytest.raises(UserError, match=message):
        steps_per_epoch(5, 8)
    with pytest.raises(UserError):
        make_epoch_dataset(_numbered_images(5), 8, seed=0, epoch=0)


def test_pipeline_accepts_an_image_set(folder):
    result = load_images(folder, 8, progress=False)
    batch = next(iter(make_epoch_dataset(result, 2, seed=0, epoch=0)))
    assert batch.shape == (2, 8, 8, 3)


# --------------------------------------------------------------------------------------------
# demo set, progress bar, image grid
# --------------------------------------------------------------------------------------------
def test_demo_images_shape_determinism_and_look():
    a = make_demo_images(12, 32, seed=0)
    assert a.shape == (12, 32, 32, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, make_demo_images(12, 32, seed=0))
    assert not np.array_equal(a, make_demo_images(12, 32, seed=1))
    corners = a[:, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert corners.min() > 180  # plain light background
    assert a.reshape(12, -1, 3).min(axis=1).max() < 80  # every face has dark eyes/mouth pixels
    assert DEMO_DEFAULTS["resolution"] == 64 and DEMO_DEFAULTS["batch_size"] == 8


class _FakeTTY(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_off_a_terminal_logs_only_its_final_line(capsys, cli_logging):
    bar = progress(range(100), desc="epoch 1")
    for i in bar:
        bar.set_postfix(d_loss=0.123456, g_loss=np.float32(2.0), step=i)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "\r" not in err
    assert err.startswith("epoch 1: 100%|") and "100/100" in err
    assert "d_loss=0.123" in err and "g_loss=2" in err and "step=99" in err and "it/s" in err


def test_progress_bar_on_a_terminal_redraws(monkeypatch, cli_logging):
    tty = _FakeTTY()
    monkeypatch.setattr("sys.stderr", tty)
    for _ in progress(range(5), desc="x", mininterval=0):
        pass
    drawn = tty.getvalue()
    assert drawn.count("\r") >= 5 and drawn.endswith("\n") and "5/5" in drawn


def test_progress_bar_is_quiet_where_logging_is_not_configured(capsys):
    """A notebook or a program that imports the package sees nothing unless it asks."""
    bar = progress(range(7), desc="quiet")
    assert list(bar) == list(range(7))
    bar.update(3)  # a hidden bar still takes updates
    assert capsys.readouterr().err == ""


def test_save_image_grid_layout(tmp_path):
    images = np.zeros((5, 4, 4, 3), np.float32) - 1.0
    images[4] = 1.0
    path = save_image_grid(images, tmp_path / "sub" / "grid.png", nrow=3)
    grid = np.array(Image.open(path))
    assert grid.shape == (2 * (4 + 2) + 2, 3 * (4 + 2) + 2, 3)
    assert (grid[8:12, 8:12] == 255).all()  # image 4: second row, second column
    assert (grid[2:6, 2:6] == 0).all()
    assert make_grid(np.zeros((16, 4, 4, 3), np.uint8)).shape == (4 * 6 + 2,) * 2 + (3,)
    assert not list((tmp_path / "sub").glob("*.tmp"))
