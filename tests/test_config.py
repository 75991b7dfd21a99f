"""Configuration: precedence, unknown keys, types, ranges, resume compatibility."""

from pathlib import Path

import pytest

from fastgan_tf import config
from fastgan_tf.errors import UserError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_reproduce_the_reference():
    cfg = config.resolve({"dataset": "x"})
    assert (cfg.resolution, cfg.batch_size, cfg.ngf, cfg.ndf, cfg.nz) == (256, 8, 64, 64, 256)
    assert (cfg.lr, cfg.beta1, cfg.beta2, cfg.ema_decay) == (2e-4, 0.5, 0.999, 0.999)
    assert cfg.recon_loss == "lpips" and cfg.augment == "color,translation"
    assert cfg.output_tanh is None


def test_precedence_defaults_presets_yaml_cli(tmp_path):
    def presets(model, dataset):
        return {"resolution": 64, "ngf": 16, "batch_size": 4} if dataset == "demo" else {}

    path = write(tmp_path, "ngf: 32\nbatch-size: 6\n")
    cfg = config.resolve({"dataset": "demo", "batch_size": 2}, config_file=path, presets=presets)
    assert cfg.resolution == 64  # preset
    assert cfg.ngf == 32  # YAML beats preset
    assert cfg.batch_size == 2  # CLI beats YAML
    assert config.resolve({"dataset": "other"}, presets=presets).resolution == 256


def test_model_and_dataset_presets_and_model_checks(tmp_path):
    from fastgan_tf.training.options import resolve_config

    ssd = resolve_config({"dataset": "x", "model": "ssd"})
    assert (ssd.batch_size, ssd.lr, ssd.nz, ssd.ema_decay) == (32, 5e-4, 100, 0.0)  # SSD's
    demo = resolve_config({"dataset": "demo", "model": "ssd"})  # the dataset's presets win
    assert (demo.batch_size, demo.ema_decay, demo.lr, demo.ngf) == (8, 0.99, 5e-4, 16)
    with pytest.raises(UserError, match="--no-sle applies to --model fastgan only"):
        resolve_config({"dataset": "x", "model": "ssd", "sle": False})
    with pytest.raises(UserError, match="--model 'stylegan' is not supported; choose one of "
                                        "fastgan, ssd"):
        resolve_config({"dataset": "x"}, config_file=write(tmp_path, "model: stylegan\n"))


def test_unknown_yaml_key_is_an_error_with_a_suggestion(tmp_path):
    path = write(tmp_path, "dataset: x\nbatch_szie: 4\n")
    with pytest.raises(UserError, match=r"unknown key 'batch_szie' \(did you mean 'batch_size'\?\)"):
        config.resolve({}, config_file=path)


@pytest.mark.parametrize("text, match", [
    ("resolution: yes\n", "resolution"),
    ("lr: fast\n", "lr"),
    ("- a\n- b\n", "mapping"),
    ("dataset: [unclosed\n", "not valid YAML"),
])
def test_bad_yaml_is_a_one_line_error(tmp_path, text, match):
    with pytest.raises(UserError, match=match) as info:
        config.resolve({"dataset": "x"}, config_file=write(tmp_path, text))
    assert "\n" not in str(info.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(UserError, match="cannot read config file"):
        config.resolve({"dataset": "x"}, config_file=tmp_path / "nope.yaml")


@pytest.mark.parametrize("override, match", [
    ({"resolution": 300}, "not supported"),
    ({"recon_loss": "ssim"}, "recon-loss"),
    ({"augment": "color,blur"}, "unknown operation 'blur'"),
    ({"batch_size": 0}, "batch_size must be at least 1"),
    ({"ngf": 12}, "multiple of 8"),
    ({"beta1": 1.5}, r"beta1 must be in \[0, 1\)"),
    ({"mixed_precision": "maybe"}, "mixed-precision"),
])
def test_out_of_range_values(override, match):
    with pytest.raises(UserError, match=match):
        config.resolve({"dataset": "x", **override})


def test_dataset_is_required():
    with pytest.raises(UserError, match="--dataset"):
        config.resolve({})


def test_save_and_load_round_trip_and_state_mismatches(tmp_path):
    cfg = config.resolve({"dataset": "x", "resolution": 64, "ngf": 16, "epochs": 5})
    config.save(cfg, tmp_path / "config.yaml")
    back = config.load_saved(tmp_path / "config.yaml")
    assert back == cfg
    longer = config.resolve({"dataset": "y", "resolution": 64, "ngf": 16, "epochs": 50})
    assert config.state_mismatches(back, longer) == []  # epochs and dataset string may change
    wider = config.resolve({"dataset": "x", "resolution": 64, "ngf": 32})
    assert config.state_mismatches(back, wider) == ["ngf: run has 16, you asked for 32"]
