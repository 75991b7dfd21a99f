"""`python -m fastgan_tf doctor` (issue 12) on this CPU machine, and its GPU, WSL and Windows
branches by simulation; and the programs' console streams, which must print any file name.

Simulated: the device list and details (TensorFlow's functions replaced), `nvidia-smi` (a shell
script on PATH), /proc files (temporary files), Windows (`oscompat.on_windows`), the memory
estimate (a table: the real one builds models for ~10 s per configuration).
"""

import io
import json
import logging
import os
import stat
import sys
import tarfile

import pytest
import tensorflow as tf

from fastgan_tf import cpu, doctor, oscompat
from fastgan_tf.__main__ import main as package_main
from fastgan_tf.cli.common import ArgumentParser, run_cli
from fastgan_tf.cli.doctor import main as doctor_main
from fastgan_tf.console import configure_logging
from fastgan_tf.progress import progress
from fastgan_tf.training import precision

REAL_RULE = precision.cpu_bfloat16_pays  # conftest pins it to False for every other test

PLAIN_LINUX = "Linux version 6.1.0-18-amd64 (debian-kernel@lists.debian.org) #1 SMP Debian"
WSL2 = "Linux version 5.15.167.4-microsoft-standard-WSL2 (root@f9c826d3017f) #1 SMP"
WSL1 = "Linux version 4.4.0-19041-Microsoft (Microsoft@Microsoft.com) #1237-Microsoft"


@pytest.fixture(autouse=True)
def machine(tmp_path, monkeypatch):
    """Empty caches, no nvidia-smi on PATH, plain Linux /proc files, GPUs not hidden."""
    monkeypatch.setenv("FASTGAN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.delenv("FASTGAN_DATA", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)  # conftest hides GPUs with -1
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "version").write_text(PLAIN_LINUX)
    (proc / "cpuinfo").write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f\n")
    monkeypatch.setattr(doctor, "PROC_VERSION", proc / "version")
    monkeypatch.setattr(cpu, "CPUINFO", proc / "cpuinfo")
    return tmp_path


def fake_nvidia_smi(folder, output: str, code: int = 0) -> None:
    """An `nvidia-smi` on PATH printing `output` (printf: a backslash-n in it ends a line)."""
    script = folder / "bin" / "nvidia-smi"
    script.write_text(f"#!/bin/sh\nprintf '{output}'\nexit {code}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


def fake_gpus(monkeypatch, *capabilities, name="NVIDIA GeForce RTX 3060"):
    devices = [tf.config.PhysicalDevice(f"/physical_device:GPU:{i}", "GPU")
               for i in range(len(capabilities))]
    details = {d.name: {"device_name": name, "compute_capability": c}
               for d, c in zip(devices, capabilities)}
    real = tf.config.list_physical_devices
    monkeypatch.setattr(tf.config, "list_physical_devices",
                        lambda kind=None: devices if kind == "GPU" else real(kind))
    monkeypatch.setattr(tf.config.experimental, "get_device_details", lambda d: details[d.name])


# -- this machine -----------------------------------------------------------------------------

def test_report_on_this_cpu_machine(machine):
    rep = doctor.report()
    assert rep["system"]["python"] == ".".join(map(str, sys.version_info[:3]))
    assert rep["system"]["wsl"] is None and rep["system"]["windows"] is False
    assert rep["tensorflow"]["version"] == tf.__version__
    assert rep["tensorflow"]["build"] in ("CPU", "CUDA")
    assert rep["gpus"] == [] and rep["nvidia_smi"] is None
    assert rep["memory"] == {"bound": "RAM", "rows": []}
    assert rep["precision"]["float16"] is False
    assert rep["folders"]["cache"] == str(machine / "cache")
    assert rep["folders"]["datasets"] == str(machine / "cache" / "datasets")
    assert [w["cached"] for w in rep["weights"]] == [None, None, None]
    assert len(rep["advice"]) == 3  # one per weights file, nothing about GPUs
    assert 'd.fetch(d.VGG16_NOTOP)"' in rep["advice"][0]
    assert str(machine / "keras" / "models") in rep["advice"][0]
    assert rep["speed"] is None
    text = doctor.render(rep)
    assert len(text.splitlines()) <= 24  # one screen
    assert "no GPU: a step's memory is host RAM" in text
    assert "not measured (add --speed" in text and "To do:" in text


def test_cached_weights_are_found_and_not_downloaded(machine):
    graph = machine / "cache" / "inception-2015-12-05.tgz"
    graph.parent.mkdir(parents=True)
    with tarfile.open(graph, "w:gz") as tar:
        member = tarfile.TarInfo("classify_image_graph_def.pb")
        member.size = 3
        tar.addfile(member, io.BytesIO(b"pb!"))
    rep = doctor.report()
    assert rep["weights"][2]["cached"] == str(graph)
    assert not any("INCEPTION_2015" in line for line in rep["advice"])
    assert "inception-2015-12-05.tgz: cached" in doctor.render(rep)


def test_command_line_text_and_json(capsys):
    assert doctor_main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("System") and "TensorFlow" in out
    assert doctor_main(["--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) >= {"system", "tensorflow", "gpus", "precision", "weights", "folders",
                         "memory", "speed", "advice"}


def test_train_py_doctor_is_the_doctor(capsys):
    from fastgan_tf.cli.train import main as train_main

    assert train_main(["--doctor", "--json"]) == 0
    assert "precision" in json.loads(capsys.readouterr().out)


def test_package_main_dispatches_subcommands(capsys):
    assert package_main(["doctor", "--json"]) == 0
    assert "tensorflow" in json.loads(capsys.readouterr().out)
    assert package_main([]) == 2 and "doctor" in capsys.readouterr().out
    assert package_main(["--help"]) == 0
    assert package_main(["cure"]) == 2
    assert "unknown command 'cure'" in capsys.readouterr().err


@pytest.mark.slow  # builds and traces a 64px FastGAN (~15 s on 2 cores, more when busy)
def test_speed_times_a_few_steps(monkeypatch):
    monkeypatch.setattr(doctor, "WARMUP_STEPS", 1)
    monkeypatch.setattr(doctor, "TIMED_STEPS", 2)
    monkeypatch.setattr(doctor, "SPEED_BATCH", 4)
    rows = doctor.timed_steps(settings=((64, 16),))  # float32: auto on a CPU
    assert rows[0]["resolution"] == 64 and rows[0]["batch_size"] == 4
    assert rows[0]["seconds_per_step"] > 0
    assert rows[0]["images_per_second"] > 0 and rows[0]["mixed_precision"] == "off"
    assert "64px ngf 16 float32: " in doctor._speed_line(rows)
    both = doctor.timed_steps({"auto": "off", "bfloat16": None}, settings=((64, 16),))
    assert [r["mixed_precision"] for r in both] == ["off", "bf16"]  # does bfloat16 pay here?


# -- the system, simulated --------------------------------------------------------------------

@pytest.mark.parametrize("version, expected", [(PLAIN_LINUX, None), (WSL2, "WSL2"),
                                               (WSL1, "WSL1")])
def test_wsl_is_told_from_the_kernel_version(machine, version, expected):
    (machine / "proc" / "version").write_text(version)
    assert doctor.wsl() == expected


def test_no_proc_version_is_not_wsl(machine, monkeypatch):
    monkeypatch.setattr(doctor, "PROC_VERSION", machine / "nowhere")
    assert doctor.wsl() is None


@pytest.mark.parametrize("flags, onednn, bf16, auto, shown", [
    ("avx512f amx_bf16 amx_tile avx512_bf16", True, None, "bf16",
     "AMX_BF16, AMX_TILE, AVX512_BF16: bfloat16 took 0.5-0.8x"),
    ("avx512f avx512_bf16", True, None, "bf16", "with AVX512_BF16: bfloat16 took"),
    ("avx512f avx512_bf16", False, None, "off", "oneDNN kernels are off"),
    ("avx2 avx512f", True, False, "off", "without AMX or AVX512_BF16"),
])
def test_cpu_precisions_from_proc_cpuinfo(machine, monkeypatch, flags, onednn, bf16, auto, shown):
    """A CPU's bfloat16 support picks `auto`, but is no verdict on its speed: --speed measures
    that, in both precisions."""
    monkeypatch.setattr(precision, "cpu_bfloat16_pays", REAL_RULE)  # conftest pins it to False
    monkeypatch.setattr(precision, "onednn_on", lambda: onednn)
    (machine / "proc" / "cpuinfo").write_text(f"processor\t: 0\nflags\t\t: fpu {flags}\n")
    result = doctor.fast_precisions([])
    assert (result["float16"], result["bfloat16"], result["auto"]) == (False, bf16, auto)
    assert shown in result["why"]
    line = doctor._precision_line(result)
    assert line.endswith("--mixed-precision auto: " + ("bfloat16" if auto == "bf16" else "float32"))


def test_cpu_precisions_are_unknown_on_windows(monkeypatch):
    monkeypatch.setattr(oscompat, "on_windows", lambda: True)
    result = doctor.fast_precisions([])
    assert result["bfloat16"] is None and "Linux only" in result["why"]
    assert "bfloat16 unknown" in doctor._precision_line(result)


# -- GPUs, simulated --------------------------------------------------------------------------

def test_gpu_capabilities_free_memory_and_what_fits(machine, monkeypatch):
    fake_gpus(monkeypatch, (8, 6))
    fake_nvidia_smi(machine, "NVIDIA GeForce RTX 3060, 10957, 12288\\n")
    table = {(256, 8): 4.2, (1024, 8): 13.9, (1024, 4): 8.1}
    calls = []

    def estimate(resolution, micro_batch, mixed):
        calls.append((resolution, micro_batch, mixed))
        return table[resolution, micro_batch]

    monkeypatch.setattr(doctor, "estimate_gib", estimate)
    rep = doctor.report()
    assert rep["gpus"] == [{"device": "/physical_device:GPU:0", "name": "NVIDIA GeForce RTX 3060",
                            "compute_capability": "8.6"}]
    assert rep["nvidia_smi"] == [{"name": "NVIDIA GeForce RTX 3060", "free_gib": 10.7,
                                  "total_gib": 12.0}]
    assert rep["precision"]["float16"] is True and rep["precision"]["bfloat16"] is True
    assert rep["precision"]["auto"] == "bf16"  # compute capability 8.6: bfloat16
    assert calls == [(256, 8, "bf16"), (1024, 8, "bf16"), (1024, 4, "bf16")]  # accumulate 2 if needed
    assert [r["fits"] for r in rep["memory"]["rows"]] == [True, False, True]
    assert rep["memory"]["largest"]["resolution"] == 1024
    assert rep["memory"]["largest"]["accumulate"] == 2
    text = doctor.render(rep)
    assert "NVIDIA GeForce RTX 3060 (compute capability 8.6)" in text
    assert "10.7 of 12.0 GiB free" in text
    assert "vs 10.7 GiB free: largest that fits: 1024px, batch 8, --accumulate 2" in text
    assert not any("GPU" in line for line in rep["advice"])


@pytest.mark.parametrize("capability, fp16, bf16, auto", [((7, 5), True, False, "on"),
                                                           ((6, 1), False, False, "off"),
                                                           ((9, 0), True, True, "bf16")])
def test_precisions_follow_the_compute_capability(monkeypatch, capability, fp16, bf16, auto):
    fake_gpus(monkeypatch, capability)
    result = doctor.fast_precisions(doctor.tensorflow_gpus())
    assert (result["float16"], result["bfloat16"], result["auto"]) == (fp16, bf16, auto)


def test_the_slowest_gpu_decides_and_failed_estimates_are_shown(machine, monkeypatch):
    fake_gpus(monkeypatch, (8, 0), (6, 1))
    fake_nvidia_smi(machine, "A, 20000, 24000\\nB, 1000, 8000\\nC, [N/A], [N/A]\\n")

    def estimate(resolution, micro_batch, mixed):
        raise MemoryError("traced too much")

    monkeypatch.setattr(doctor, "estimate_gib", estimate)
    rep = doctor.report()
    assert rep["precision"]["float16"] is False  # one old GPU turns mixed precision off
    assert rep["memory"]["free_gib"] == 1.0 and rep["memory"]["largest"] is None
    assert len(rep["nvidia_smi"]) == 2  # the unreadable row is skipped
    assert "no estimate: traced too much" in doctor.render(rep)


def test_without_nvidia_smi_free_memory_is_unknown(monkeypatch):
    fake_gpus(monkeypatch, (8, 6))
    monkeypatch.setattr(doctor, "estimate_gib", lambda r, b, m: 3.0)
    rep = doctor.report()
    assert rep["memory"]["free_gib"] is None
    assert [r["fits"] for r in rep["memory"]["rows"]] == [None, None]
    assert "vs unknown free memory: compare with the GPU's memory" in doctor.render(rep)


# -- advice when a GPU is there but TensorFlow does not see it --------------------------------

def test_cpu_build_with_an_nvidia_gpu_says_install_the_cuda_build(machine, monkeypatch):
    fake_nvidia_smi(machine, "NVIDIA GeForce RTX 4090, 24000, 24564\\n")
    monkeypatch.setattr(doctor, "tensorflow_build",
                        lambda: {"build": "CPU", "cuda": None, "cudnn": None})
    advice = doctor.report()["advice"]
    assert advice[0] == ("install the CUDA build: pip install 'tensorflow[and-cuda]' "
                         "(Linux/WSL2)")


def test_native_windows_with_an_nvidia_gpu_says_use_wsl2(machine, monkeypatch):
    monkeypatch.setattr(oscompat, "on_windows", lambda: True)
    fake_nvidia_smi(machine, "NVIDIA GeForce RTX 4090, 24000, 24564\\n")
    advice = doctor.report()["advice"]
    assert advice[0].startswith("TensorFlow >= 2.11 has no GPU support on native Windows: train "
                                "inside WSL2")


def test_hidden_gpus_and_a_cuda_build_that_sees_none(machine, monkeypatch):
    fake_nvidia_smi(machine, "No devices were found", code=6)
    monkeypatch.setattr(doctor, "tensorflow_build",
                        lambda: {"build": "CUDA", "cuda": "12.5.1", "cudnn": "9"})
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    rep = doctor.report()
    assert rep["nvidia_smi"] == []
    assert rep["advice"][0] == "CUDA_VISIBLE_DEVICES='-1' hides the GPUs from TensorFlow: unset it"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert doctor.report()["advice"][0].startswith("TensorFlow is a CUDA build but sees no GPU")
    assert "12.5.1" in doctor._tensorflow_line(rep["tensorflow"])


# -- console streams --------------------------------------------------------------------------

def cp1252_stdout(monkeypatch) -> io.TextIOWrapper:
    """stdout as Windows sets it up when redirected: the ANSI code page, strict."""
    stream = io.TextIOWrapper(io.BytesIO(), encoding="cp1252", errors="strict")
    monkeypatch.setattr(sys, "stdout", stream)
    return stream


def test_printing_a_name_outside_the_code_page_does_not_fail(monkeypatch):
    stream = cp1252_stdout(monkeypatch)

    def run(args):
        print("wrote größe_ψ.png")
        return 0

    assert run_cli(ArgumentParser(prog="tool"), run, []) == 0
    stream.flush()
    assert stream.buffer.getvalue().decode("cp1252") == "wrote größe_?.png\n"
    assert stream.encoding == "cp1252"  # the encoding is kept


def test_the_doctor_prints_a_cache_folder_outside_the_code_page(machine, monkeypatch):
    monkeypatch.setenv("FASTGAN_CACHE", str(machine / "größe_ψ"))
    stream = cp1252_stdout(monkeypatch)
    assert doctor_main([]) == 0
    stream.flush()
    assert f"cache {machine / 'größe_?'}" in stream.buffer.getvalue().decode("cp1252")


def test_progress_sends_no_control_code_off_a_terminal(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    configure_logging()
    with progress(total=3, desc="scoring", unit="img") as bar:
        bar.update(3)
    logging.getLogger("fastgan_tf.test").warning("done")
    text = err.getvalue()
    assert "scoring: 100%" in text and "warning: done" in text
    assert "\r" not in text and "\x1b" not in text


@pytest.mark.parametrize("auto, bf16_seconds, advised", [
    ("off", (0.4, 2.9), "--mixed-precision bf16"), ("off", (0.4, 4.1), None),
    ("bf16", (0.4, 2.9), None), ("bf16", (0.4, 4.1), "--mixed-precision off"),
])
def test_the_precision_is_advised_where_auto_lost_at_some_size(auto, bf16_seconds, advised):
    rows = [{"resolution": 64, "mixed_precision": "off", "seconds_per_step": 0.5},
            {"resolution": 64, "mixed_precision": "bf16", "seconds_per_step": bf16_seconds[0]},
            {"resolution": 256, "mixed_precision": "off", "seconds_per_step": 4.0},
            {"resolution": 256, "mixed_precision": "bf16", "seconds_per_step": bf16_seconds[1]}]
    rep = {"gpus": [], "nvidia_smi": None, "weights": [], "speed": rows,
           "precision": {"auto": auto}}
    lines = doctor.advice(rep)
    assert len(lines) == (1 if advised else 0)
    if advised:
        assert advised in lines[0]
    if advised == "--mixed-precision bf16":
        assert "64px 0.5 -> 0.4 s/step, 256px 4.0 -> 2.9 s/step" in lines[0]
    assert doctor.advice({"gpus": [], "nvidia_smi": None, "weights": [], "speed": None}) == []


# ------------------------------------------------------------------------------ oneDNN default
ONEDNN = "TF_ENABLE_ONEDNN_OPTS"


@pytest.fixture
def before_tensorflow(monkeypatch):
    """As a CLI sees the world before TensorFlow is imported, without the variable set."""
    monkeypatch.delitem(sys.modules, "tensorflow")
    monkeypatch.setenv(ONEDNN, "placeholder")
    monkeypatch.delenv(ONEDNN)  # restored (to unset or to the caller's value) after the test


@pytest.mark.parametrize("machine, expected", [("x86_64", "1"), ("AMD64", "1"),
                                               ("aarch64", None), ("arm64", None)])
def test_cli_turns_onednn_on_on_x86_only(before_tensorflow, monkeypatch, machine, expected):
    from fastgan_tf.cli import common

    monkeypatch.setattr(common.platform, "machine", lambda: machine)
    common.fast_cpu_kernels()
    assert os.environ.get(ONEDNN) == expected


def test_users_choice_and_deterministic_keep_onednn_off(before_tensorflow, monkeypatch):
    from fastgan_tf.cli import common

    monkeypatch.setattr(common.platform, "machine", lambda: "x86_64")
    monkeypatch.setenv("TF_NUM_INTEROP_THREADS", "1")
    common.deterministic_tensorflow()  # train.py --deterministic runs it first
    common.fast_cpu_kernels()
    assert os.environ[ONEDNN] == "0"
    monkeypatch.setenv(ONEDNN, "0")
    common.fast_cpu_kernels()
    assert os.environ[ONEDNN] == "0"


def test_onednn_is_left_alone_once_tensorflow_runs(monkeypatch):
    from fastgan_tf.cli import common

    monkeypatch.setenv(ONEDNN, "placeholder")
    monkeypatch.delenv(ONEDNN)
    common.fast_cpu_kernels()  # tensorflow is imported in the tests: too late to matter
    assert ONEDNN not in os.environ
