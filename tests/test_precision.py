"""What --mixed-precision auto picks, and the warning for a slow combination."""

import pytest

from fastgan_tf.training import precision


@pytest.mark.parametrize("capabilities, expected", [
    ([], "off"),                    # a CPU without native bfloat16 (see below for one with it)
    ([(8, 6)], "bf16"), ([(9, 0), (8, 0)], "bf16"),
    ([(7, 5)], "on"), ([(8, 6), (7, 0)], "on"),  # the slowest GPU decides
    ([(6, 1)], "off"), ([None], "off"),
])
def test_auto_precision(capabilities, expected):
    assert precision.auto_precision(capabilities) == expected


def test_bf16_with_determinism_on_a_cpu_is_warned_about():
    message = precision.slow_combination("bf16", deterministic=True, on_gpu=False)
    assert "--deterministic" in message and "--mixed-precision off" in message
    assert precision.slow_combination("bf16", deterministic=True, on_gpu=True) is None
    assert precision.slow_combination("bf16", deterministic=False, on_gpu=False) is None
    assert precision.slow_combination("off", deterministic=True, on_gpu=False) is None


def test_lpips_in_bfloat16_where_it_is_slow_is_warned_about(monkeypatch):
    assert precision.slow_lpips_precision("float32", deterministic=True, on_gpu=False) is None
    message = precision.slow_lpips_precision("bf16", deterministic=False, on_gpu=False)
    assert "AMX or AVX512_BF16" in message and "--lpips-precision float32" in message
    assert precision.slow_lpips_precision("bf16", deterministic=False, on_gpu=True) is None
    assert precision.slow_lpips_precision("bf16", False, on_gpu=True, capabilities=[(8, 6)]) is None
    for older in ([(7, 5)], [(8, 0), (7, 0)], [None]):
        message = precision.slow_lpips_precision("bf16", False, on_gpu=True, capabilities=older)
        assert "compute capability 8.0" in message and "--lpips-precision float32" in message
    monkeypatch.setattr(precision, "cpu_bfloat16_pays", lambda: True)
    assert precision.slow_lpips_precision("bf16", deterministic=False, on_gpu=False) is None
    message = precision.slow_lpips_precision("bf16", deterministic=True, on_gpu=False)
    assert "--deterministic" in message and "--lpips-precision float32" in message


REAL_RULE = precision.cpu_bfloat16_pays  # conftest pins it to False for every other test


def test_auto_on_a_cpu_follows_native_bfloat16():
    assert precision.auto_precision([], cpu_bfloat16=True) == "bf16"
    assert precision.auto_precision([(7, 5)], cpu_bfloat16=True) == "on"  # a GPU decides


@pytest.mark.parametrize("flags, onednn, pays", [
    ("avx512f amx_bf16 amx_tile avx512_bf16", True, True),  # Intel Xeon, Sapphire Rapids on
    ("avx512f avx512_bf16", True, True),                    # AMD EPYC Zen 4, Cooper Lake
    ("avx2 fma avx512f", True, False),                      # no native bfloat16: 5.8x slower
    ("avx512f amx_bf16 amx_tile avx512_bf16", False, False),  # oneDNN off: no AMX kernels
])
def test_cpu_bfloat16_pays_with_native_bfloat16_and_onednn(tmp_path, monkeypatch, flags, onednn,
                                                           pays):
    from fastgan_tf import cpu

    (tmp_path / "cpuinfo").write_text(f"processor\t: 0\nflags\t\t: fpu {flags}\n",
                                      encoding="utf-8")
    monkeypatch.setattr(cpu, "CPUINFO", tmp_path / "cpuinfo")
    monkeypatch.setattr(precision, "onednn_on", lambda: onednn)
    assert REAL_RULE() is pays


def test_a_cpu_whose_flags_are_not_read_stays_float32(monkeypatch):
    from fastgan_tf import cpu, oscompat

    monkeypatch.setattr(oscompat, "on_windows", lambda: True)  # native Windows: no /proc
    monkeypatch.setattr(precision, "onednn_on", lambda: True)
    assert cpu.bfloat16_flags() is None and REAL_RULE() is False


@pytest.mark.parametrize("mode, deterministic, expected", [
    ("auto", False, "bf16"), ("auto", True, "off"),  # determinism: bfloat16 ~10x slower
    ("off", False, "off"), ("on", False, "on"), ("bf16", True, "bf16"),  # asked for: kept
])
def test_resolving_auto_on_a_bfloat16_cpu(monkeypatch, mode, deterministic, expected):
    monkeypatch.setattr(precision, "gpu_capabilities", lambda: [])
    monkeypatch.setattr(precision, "cpu_bfloat16_pays", lambda: True)
    assert precision.resolve_mixed_precision(mode, deterministic) == expected


@pytest.mark.parametrize("variable, on", [("1", True), ("0", False), (None, False)])
def test_onednn_state_without_tensorflows_private_probe(monkeypatch, variable, on):
    """Where TensorFlow's private `IsMklEnabled` is gone, the environment variable decides."""
    import sys

    monkeypatch.setitem(sys.modules, "tensorflow.python.util._pywrap_util_port", None)
    if variable is None:
        monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    else:
        monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", variable)
    assert precision.onednn_on() is on
