"""--channels 1 (greyscale models end to end), --crop and --background: loader, config, CLI."""

import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import write_images
from fastgan_tf import config
from fastgan_tf.augment import adjust_saturation, diff_augment
from fastgan_tf.cli.evaluate import main as evaluate_main
from fastgan_tf.cli.train import main as train_main
from fastgan_tf.data.__main__ import main as data_main
from fastgan_tf.errors import UserError
from fastgan_tf.models import Discriminator, Generator, count_params
from fastgan_tf.models.ssd import SSDDiscriminator, SSDGenerator
from fastgan_tf.training.dataset import load_training_images
from fastgan_tf.visualize import save_image_grid

TINY = ["--resolution", "64", "--ngf", "16", "--ndf", "16", "--recon-loss", "l1",
        "--batch-size", "4", "--fid-every", "0"]
RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTGAN_CACHE", str(tmp_path / "cache"))


def _one_line_error(capsys, code, *needles):
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


# ------------------------------------------------------------------------------ models
def test_greyscale_models_output_one_channel():
    g = Generator(64, ngf=16, nz=32, channels=1, seed=0)
    big, small = g(tf.random.normal([2, 32]), training=False)
    assert big.shape == (2, 64, 64, 1) and small.shape == (2, 32, 32, 1)
    d = Discriminator(64, ndf=16, channels=1)
    logits, recs = d(tf.zeros([2, 64, 64, 1]), part=1, training=False)
    assert logits.shape == (2 * 50,) and [r.shape for r in recs] == [(2, 64, 64, 1)] * 3
    assert d([big, small], training=False).shape == (100,)
    assert g.get_config()["channels"] == 1


def test_parameter_counts_differ_only_by_the_image_convs():
    # Default 3 is the reference (counts asserted in test_models.py, repeated here at 64px).
    assert count_params(Generator(64).build_for_restore()) == 28_211_460
    assert count_params(Discriminator(64).build_for_restore()) == 10_923_520
    grey_g = count_params(Generator(64, ngf=16, channels=1).build_for_restore())
    rgb_g = count_params(Generator(64, ngf=16).build_for_restore())
    # to_big: 3x3 conv from feat_64 (32 channels); to_small: 1x1 from feat_32 (32): 2 outputs fewer
    assert rgb_g - grey_g == 2 * (3 * 3 * 32 + 32)
    grey_d = count_params(Discriminator(64, ndf=16, channels=1).build_for_restore())
    rgb_d = count_params(Discriminator(64, ndf=16).build_for_restore())
    # 3 decoder heads 3x3 from 64 channels (x2 fewer outputs); stem 3x3 -> 16 and small-path
    # 4x4 -> 32 (x2 fewer inputs)
    assert rgb_d - grey_d == 2 * (3 * 3 * 3 * 64 + 3 * 3 * 16 + 4 * 4 * 32)


def test_ssd_supports_one_channel():
    g = SSDGenerator(nz=16, ngf=8, channels=1).build_for_restore()
    assert g(tf.zeros([2, 16]), training=False)[0].shape == (2, 64, 64, 1)
    d = SSDDiscriminator(ndf=8).build_for_restore(channels=1)
    assert d(tf.zeros([2, 64, 64, 1]), training=False).shape == (2,)


# ------------------------------------------------------------------------------ augment, LPIPS, grids
def test_saturation_is_a_no_op_on_one_channel(rng):
    x = tf.constant(rng.uniform(-1, 1, (3, 8, 8, 1)).astype(np.float32))
    np.testing.assert_array_equal(adjust_saturation(x, tf.constant([0.0, 0.7, 2.0])), x)
    out = diff_augment(x, "color,translation,cutout", tf.random.Generator.from_seed(1))
    assert out.shape == x.shape and np.isfinite(out.numpy()).all()


def test_lpips_tiles_greyscale_to_rgb(rng):
    from fastgan_tf.lpips import LPIPS

    lpips = LPIPS(vgg_weights=None)  # random VGG: enough to compare two ways of feeding it
    a, b = (tf.constant(rng.uniform(-1, 1, (2, 16, 16, 1)).astype(np.float32)) for _ in "ab")
    tiled = lpips(tf.tile(a, [1, 1, 1, 3]), tf.tile(b, [1, 1, 1, 3]))
    np.testing.assert_allclose(lpips(a, b), tiled, rtol=1e-6)


def test_greyscale_grid_is_a_greyscale_png(tmp_path):
    images = np.full((2, 4, 4, 1), -1.0, np.float32)
    images[1] = 1.0
    with Image.open(save_image_grid(images, tmp_path / "g.png", nrow=2)) as png:
        assert png.mode == "L" and png.size == (2 * 6 + 2, 6 + 2)
        grid = np.array(png)
    assert (grid[2:6, 2:6] == 0).all() and (grid[2:6, 8:12] == 255).all()


# ------------------------------------------------------------------------------ training end to end
@pytest.fixture(scope="module")
def grey_run(tmp_path_factory):
    """One tiny 1-channel run (1 epoch, 4 steps) through train.py's main."""
    root = tmp_path_factory.mktemp("grey")
    folder = write_images(root / "images", count=16)
    argv = ["--dataset", str(folder), "--epochs", "1", "--out", str(root / "runs"),
            "--run-name", "grey", "--channels", "1", "--sample-every", "1", *TINY]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FASTGAN_CACHE", str(root / "cache"))
        assert train_main(argv) == 0
    return root / "runs" / "grey", argv, root / "cache"


@pytest.mark.slow
def test_greyscale_run_writes_greyscale_samples_and_a_checkpoint(grey_run):
    run, _, _ = grey_run
    assert config.load_saved(run / "config.yaml").channels == 1
    assert list((run / "ckpt").glob("ckpt-4.index"))
    for name in ("fakes_epoch00001.png", "recon_epoch00001.png"):
        with Image.open(run / "samples" / name) as png:
            assert png.mode == "L"


@pytest.mark.slow
def test_evaluate_greyscale_run(grey_run, tmp_path, capsys):
    run, _, _ = grey_run
    out = tmp_path / "gen"
    common = ["--run", str(run), "--output-dir", str(out), "--batch-size", "4", "--json"]
    assert evaluate_main(["--generate", "4", *common]) == 0
    files = json.loads(capsys.readouterr().out)["files"]
    for name in files:
        with Image.open(out / name) as png:
            assert png.mode == "L" and png.size == (64, 64)
    assert evaluate_main(["--generate", "4", "--grid", *common]) == 0
    assert evaluate_main(["--nearest", "2", "--neighbours", "2", *common]) == 0
    assert evaluate_main(["--interpolate", "2", "--frames", "2", *common]) == 0
    capsys.readouterr()
    for png in ("grid_seed0.png", "nearest_seed0.png", "seed0_walk/frame_00003.png"):
        with Image.open(out / png) as image:
            assert image.mode == "L", png


@pytest.mark.slow
def test_resume_with_other_channels_is_refused(grey_run, capsys, monkeypatch):
    run, argv, cache = grey_run
    monkeypatch.setenv("FASTGAN_CACHE", str(cache))
    code = train_main([*argv[:argv.index("--channels")], *argv[argv.index("--channels") + 2:],
                       "--epochs", "2"])
    _one_line_error(capsys, code, "cannot resume", "channels: run has 1, you asked for 3")
    assert not list((run / "ckpt").glob("ckpt-8.index"))


# ------------------------------------------------------------------------------ crop
def _bands(path, size=64, tall=True):
    """A size x 3*size image: red, green and blue bands of size px each, across the long side."""
    pixels = np.repeat(np.array([RED, GREEN, BLUE], np.uint8), size, axis=0)[:, None]
    pixels = np.repeat(pixels, size, axis=1)  # (3*size, size, 3): bands from top to bottom
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels if tall else pixels.transpose(1, 0, 2)).save(path)
    return path.parent


def _load(folder, **settings):
    cfg = config.resolve({"dataset": str(folder), "resolution": 64, **settings})
    return load_training_images(cfg, progress=False)


@pytest.mark.parametrize("tall", [True, False])
def test_crop_center_keeps_the_middle_and_none_squashes(tmp_path, tall):
    folder = _bands(tmp_path / "bands" / "b.png", tall=tall)
    center, squashed = _load(folder, crop="center"), _load(folder, crop="none")
    # center: the middle 64x64 square, no resampling: all green.
    assert (center.images[0] == GREEN).all()
    # none: the whole 64x192 squashed 3x along the long side; LANCZOS reaches 3 output pixels
    # (9 input pixels) around each, so output lines 0-15 see only red and 48-63 only blue.
    lines = squashed.images[0] if tall else squashed.images[0].transpose(1, 0, 2)
    assert (lines[:16] == RED).all() and (lines[48:] == BLUE).all()
    assert center.fingerprint != squashed.fingerprint
    grey = _load(folder, crop="center", channels=1)
    assert grey.images.shape == (1, 64, 64, 1) and (grey.images == 150).all()  # 0.587 * 255
    assert len(list((tmp_path / "cache" / "decoded").glob("*.npy"))) == 3  # one cache each


# ------------------------------------------------------------------------------ background
def _rgba(folder):
    """64x64, colour (200, 100, 50): left half alpha 0, right half alpha 128."""
    pixels = np.zeros((64, 64, 4), np.uint8)
    pixels[..., :3] = (200, 100, 50)
    pixels[:, 32:, 3] = 128
    folder.mkdir(parents=True)
    Image.fromarray(pixels, "RGBA").save(folder / "a.png")
    return folder


# out = (rgb * a + bg * (255 - a) + 127) // 255 with a = 128, e.g. white R: (25600 + 32385 + 127)
# // 255 = 227; #102030 B: (6400 + 48 * 127 + 127) // 255 = 49.
@pytest.mark.parametrize("background, bg, half", [
    (None, (255, 255, 255), (227, 177, 152)),
    ("black", (0, 0, 0), (100, 50, 25)),
    ("#102030", (16, 32, 48), (108, 66, 49)),
    ("16, 32, 48", (16, 32, 48), (108, 66, 49)),
])
def test_background_composites_transparent_pixels(tmp_path, background, bg, half):
    folder = _rgba(tmp_path / "rgba")
    image = _load(folder, **({"background": background} if background else {})).images[0]
    assert (image[:, :32] == bg).all() and (image[:, 32:] == half).all()


def test_background_in_config_and_fingerprint(tmp_path):
    folder = _rgba(tmp_path / "rgba")
    assert config.resolve({"dataset": "demo", "background": "16,32,48"}).background == "#102030"
    white, black = _load(folder), _load(folder, background="black")
    assert white.fingerprint != black.fingerprint
    assert len(list((tmp_path / "cache" / "decoded").glob("*.npy"))) == 2
    (tmp_path / "c.yaml").write_text("background: #ffffff\n")  # YAML reads an unquoted # as a comment
    with pytest.raises(UserError, match="quote"):
        config.resolve({}, config_file=tmp_path / "c.yaml")


@pytest.mark.parametrize("value", ["pink", "#12345", "1,2", "256,0,0", "1,2,3,4"])
def test_bad_background_is_one_line_and_exit_2(value, image_folder, tmp_path, capsys):
    code = train_main(["--dataset", str(image_folder), "--background", value, "--dry-run",
                       "--out", str(tmp_path)])
    _one_line_error(capsys, code, "--background", "#RRGGBB", "R,G,B")


def test_data_check_takes_crop_and_background(tmp_path, capsys):
    folder = _bands(tmp_path / "bands" / "b.png")
    assert data_main(["check", str(folder), "--crop", "center", "--background", "black"]) == 0
    assert "centre square is kept" in capsys.readouterr().out
    assert data_main(["check", str(folder), "--background", "nope"]) == 2
    assert "--background" in capsys.readouterr().err


def test_demo_dataset_in_greyscale():
    rgb = load_training_images(config.resolve({"dataset": "demo", "resolution": 64}), False)
    grey = load_training_images(
        config.resolve({"dataset": "demo", "resolution": 64, "channels": 1}), False)
    assert grey.images.shape == (*rgb.images.shape[:3], 1) and grey.fingerprint != rgb.fingerprint
    expect = np.asarray(Image.fromarray(rgb.images[3]).convert("L"))
    np.testing.assert_array_equal(grey.images[3, ..., 0], expect)
