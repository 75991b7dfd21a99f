"""The paper's ablations (--no-sle, --no-decoders) and the SSD baseline through the same trainer."""

import json

import pytest

from conftest import write_images
from fastgan_tf.cli.train import main
from fastgan_tf.runs import load_generator

# SLE parameters at 256 (ngf=64): conv4x4 C_small->C_big plus conv1x1 C_big->C_big, no bias.
SE_64 = 1024 * 128 * 16 + 128 * 128  # gated by feat_4
SE_128 = 512 * 64 * 16 + 64 * 64  # gated by feat_8
SE_256 = 256 * 32 * 16 + 32 * 32  # gated by feat_16
G_256, D_256_WITHOUT_DECODERS = 29_127_846, 8_386_672  # reference counts


def dry_run(capsys, *argv):
    assert main(["--recon-loss", "l1", "--dry-run", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_ablation_parameter_counts(image_folder, tmp_path, capsys):
    base = ["--dataset", str(image_folder), "--out", str(tmp_path)]
    params = dry_run(capsys, *base, "--no-sle", "--no-decoders")["params"]
    assert params["generator"] == G_256 - (SE_64 + SE_128 + SE_256) == 26_353_830
    assert params["discriminator"] == D_256_WITHOUT_DECODERS


def test_ssd_counts_and_presets(tmp_path, capsys):
    folder = write_images(tmp_path / "images", count=32)  # SSD's batch is 32
    report = dry_run(capsys, "--dataset", str(folder), "--model", "ssd", "--out", str(tmp_path))
    assert report["params"] == {"generator": 3_809_104, "discriminator": 2_765_568}
    cfg = report["config"]
    assert (cfg["resolution"], cfg["batch_size"], cfg["lr"], cfg["nz"]) == (64, 32, 5e-4, 100)
    assert cfg["ema_decay"] == 0.0


@pytest.mark.parametrize("flags, message", [
    (["--resolution", "256"], "64x64"),
    (["--no-sle"], "--no-sle applies to --model fastgan only"),
    (["--no-decoders"], "--no-decoders applies"),
])
def test_ssd_rejects_fastgan_only_options(image_folder, tmp_path, capsys, flags, message):
    code = main(["--dataset", str(image_folder), "--model", "ssd", "--batch-size", "4", *flags,
                 "--dry-run",
                 "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.parametrize("variant", [["--no-sle", "--no-decoders"], ["--model", "ssd"]])
def test_variants_train_checkpoint_and_load(image_folder, tmp_path, variant):
    out = tmp_path / "runs"
    argv = ["--dataset", str(image_folder), "--epochs", "1", "--resolution", "64", "--ngf", "16",
            "--ndf", "16", "--batch-size", "4", "--recon-loss", "lpips", "--fid-every", "0",
            "--out", str(out), "--run-name", "v", *variant]  # lpips is never needed here
    assert main(argv) == 0
    run = out / "v"
    assert (run / "samples" / "fakes_epoch00001.png").exists()
    assert not (run / "samples" / "recon_epoch00001.png").exists()  # no decoders to show
    loaded = load_generator(run)
    assert loaded.step == 4 and loaded.epoch == 1
    assert main(argv[:3] + ["2"] + argv[4:]) == 0  # resumes for a second epoch
    assert load_generator(run).step == 8
