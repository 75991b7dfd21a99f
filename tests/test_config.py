"""Configuration: precedence, unknown keys, types, ranges, resume compatibility."""

import codecs
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


def test_lpips_precision_steers_training_and_old_runs_read_as_float32(tmp_path):
    cfg = config.resolve({"dataset": "x", "resolution": 64})
    bf16 = config.resolve({"dataset": "x", "resolution": 64, "lpips_precision": "bf16"})
    assert config.state_mismatches(cfg, bf16) == []  # VGG16 is not part of the trained state
    assert config.training_changes(cfg, bf16) == ["lpips_precision float32 -> bf16"]
    with pytest.raises(UserError, match="--lpips-precision .float16. is not supported"):
        config.resolve({"dataset": "x", "lpips_precision": "float16"})
    config.save(cfg, tmp_path / "config.yaml")  # a run of a version without the option:
    saved = tmp_path / "config.yaml"
    saved.write_text("".join(line for line in saved.read_text(encoding="utf-8").splitlines(True)
                             if not line.startswith("lpips_precision")), encoding="utf-8")
    assert "lpips_precision" not in saved.read_text(encoding="utf-8")
    assert config.load_saved(saved).lpips_precision == "float32"


# -- config files written on Windows: encodings and backslashes (issue 12) ---------------------

YAML_TEXT = 'dataset: "größe"\nbatch-size: 4\n'


def write_bytes(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "run.yaml"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("encoded", [
    YAML_TEXT.encode("utf-8"),
    codecs.BOM_UTF8 + YAML_TEXT.encode("utf-8"),  # Notepad's "UTF-8 with BOM"
    YAML_TEXT.encode("utf-16"),  # Windows PowerShell 5.1 `>` and Out-File: UTF-16 LE with a BOM
    codecs.BOM_UTF16_BE + YAML_TEXT.encode("utf-16-be"),
    YAML_TEXT.encode("utf-32"),
    codecs.BOM_UTF32_BE + YAML_TEXT.encode("utf-32-be"),
    YAML_TEXT.replace("\n", "\r\n").encode("utf-16"),
], ids=["utf8", "utf8-bom", "utf16le-bom", "utf16be-bom", "utf32le-bom", "utf32be-bom",
        "utf16-crlf"])
def test_yaml_in_any_unicode_encoding_with_its_mark(tmp_path, encoded, caplog):
    assert config.load_yaml(write_bytes(tmp_path, encoded)) == {"dataset": "größe", "batch_size": 4}
    assert caplog.text == ""


def test_ansi_yaml_is_read_as_cp1252_with_a_warning(tmp_path, caplog):
    path = write_bytes(tmp_path, ("# Set-Content writes ANSI\n" + YAML_TEXT).encode("cp1252"))
    assert config.load_yaml(path) == {"dataset": "größe", "batch_size": 4}
    assert f"{path}, line 2: not UTF-8; read as Windows ANSI (cp1252)" in caplog.text


@pytest.mark.parametrize("data, match", [
    (b"dataset: x\nbatch-size: \x81\x8d\n", r"run.yaml, line 2: not valid cp1252"),
    (codecs.BOM_UTF8 + b"dataset: x\n\nbad: \xff\n", r"run.yaml, line 3: not valid utf-8-sig"),
    ("dataset: x\n".encode("utf-16-le"), "UTF-16 or UTF-32 without a byte-order mark"),
], ids=["not-cp1252", "bad-utf8-after-bom", "utf16-without-bom"])
def test_undecodable_yaml_is_one_line_naming_the_file_and_line(tmp_path, data, match):
    with pytest.raises(UserError, match=match) as info:
        config.load_yaml(write_bytes(tmp_path, data))
    assert "\n" not in str(info.value) and "save" in str(info.value)


def test_windows_path_in_double_quotes_is_an_error_that_says_how_to_quote(tmp_path):
    path = write(tmp_path, 'resolution: 64\ndataset: "C:\\data\\faces"\n')
    with pytest.raises(UserError) as info:
        config.load_yaml(path)
    message = str(info.value)
    assert message.startswith(f"{path}, line 2: not valid YAML (found unknown escape character")
    assert "single quotes ('C:\\data')" in message and "forward slashes (C:/data)" in message


def test_yaml_errors_name_the_line(tmp_path):
    with pytest.raises(UserError, match=r"run.yaml, line 3: not valid YAML \(found character "
                                        "'@' that cannot start any token\\); fix the file"):
        config.load_yaml(write(tmp_path, "dataset: x\nngf: 16\nbad: @x\n"))


def test_escapes_in_a_double_quoted_windows_path_are_warned_about(tmp_path, caplog):
    path = write(tmp_path, 'dataset: "C:\\new\\table"\nout: "D:\\temp"\n')
    values = config.load_yaml(path)
    assert values == {"dataset": "C:\new\table", "out": "D:\temp"}  # YAML's reading, kept
    assert f'{path}, line 1: in "C:\\new\\table" YAML reads \\n, \\t as escapes' in caplog.text
    assert f"{path}, line 2:" in caplog.text and "single quotes" in caplog.text


@pytest.mark.parametrize("line", [
    "dataset: 'C:\\new\\data'", 'dataset: "C:\\\\new\\\\data"', "dataset: C:/new/data",
    "dataset: C:\\new\\data", '# dataset: "C:\\new"', 'dataset: "\\new"',
])
def test_well_written_windows_paths_give_no_warning(tmp_path, caplog, line):
    config.load_yaml(write(tmp_path, line + "\n"))
    assert caplog.text == ""
