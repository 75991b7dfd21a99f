"""What the machine a run lands on offers, and what to do about what it lacks.

`python -m fastgan_tf doctor` shows `report()` rendered by `render()`: the OS (and whether it is
WSL), Python, TensorFlow and its build, the GPUs and their compute capability and free memory,
which reduced precisions are fast here, which weight files are cached, the cache and data
folders, what fits in the GPU's memory by the estimate of `--dry-run`, and (`speed=True`) a
few timed training steps. Each problem found comes with one line saying what to do.

Nothing is downloaded and nothing is printed here (the command line renders the report).

Free memory comes from `nvidia-smi`: TensorFlow's `get_memory_info` reports only what its own
allocator holds (current and peak bytes), and only once the device is initialised, which by
default reserves most of the GPU's memory - the number the report would show.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import statistics
import subprocess
import time
from pathlib import Path

from fastgan_tf import downloads, oscompat, paths
from fastgan_tf.cpu import bfloat16_flags
from fastgan_tf.errors import one_line

log = logging.getLogger(__name__)

GIB = 2**30
PROC_VERSION = Path("/proc/version")
MEMINFO = Path("/proc/meminfo")
FP16_CAPABILITY = (7, 0)  # Volta and newer: float16 tensor cores
BF16_CAPABILITY = (8, 0)  # Ampere and newer: bfloat16 tensor cores
# The memory estimate builds and traces the models (~10 s a configuration on a CPU): a few only.
MEMORY_RESOLUTIONS = (256, 1024)
MEMORY_BATCH = 8
# --speed: (resolution, ngf) with the l1 reconstruction loss, as benchmarks/train_step.py times.
SPEED_SETTINGS = ((64, 16), (256, 64))
SPEED_BATCH = 8
WARMUP_STEPS, TIMED_STEPS = 2, 3
PRECISION_NAMES = {"off": "float32", "on": "float16", "bf16": "bfloat16"}
NVIDIA_SMI_TIMEOUT = 15.0
FETCH_COMMAND = ('python -c "from fastgan_tf import console, downloads as d; '
                 'console.configure_logging(); d.fetch(d.{name})"')
NO_WINDOWS_GPU = ("TensorFlow >= 2.11 has no GPU support on native Windows: train inside WSL2 "
                  "(the same command in a WSL2 shell, after pip install 'tensorflow[and-cuda]')")
INSTALL_CUDA_BUILD = "install the CUDA build: pip install 'tensorflow[and-cuda]' (Linux/WSL2)"


def report(speed: bool = False) -> dict:
    """Everything `render` shows, as plain data (the --json output)."""
    import tensorflow as tf

    nvidia = nvidia_smi()  # before TensorFlow initialises a GPU and reserves its memory
    gpus = tensorflow_gpus()
    precisions = fast_precisions(gpus)
    result = {
        "system": system(),
        "tensorflow": {"version": tf.__version__, **tensorflow_build()},
        "gpus": gpus,
        "nvidia_smi": nvidia,
        "precision": precisions,
        "weights": weights(),
        "folders": folders(),
        "memory": memory_fit(gpus, nvidia, precisions["auto"]),
        "speed": timed_steps(precisions) if speed else None,
    }
    result["advice"] = advice(result)
    return result


# ------------------------------------------------------------------------------ the machine
def system() -> dict:
    return {"os": platform.platform(terse=True), "machine": platform.machine(),
            "windows": oscompat.on_windows(), "wsl": wsl(),
            "python": platform.python_version(), "ram": host_ram()}


def wsl() -> str | None:
    """"WSL2", "WSL1" or None, from the kernel's version string (Microsoft builds WSL's kernels)."""
    try:
        text = PROC_VERSION.read_text(encoding="utf-8", errors="replace").lower()
    except OSError:
        return None
    if "microsoft" not in text:
        return None
    return "WSL2" if "wsl2" in text or "microsoft-standard" in text else "WSL1"


def host_ram() -> dict | None:
    """{"total_gib", "available_gib"} from /proc/meminfo (Linux, WSL), else the page count."""
    try:
        lines = MEMINFO.read_text(encoding="utf-8").splitlines()
        kib = {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in lines if ":" in line)
               if k in ("MemTotal", "MemAvailable")}
        return {"total_gib": round(kib["MemTotal"] / 2**20, 1),
                "available_gib": round(kib.get("MemAvailable", 0) / 2**20, 1) or None}
    except (OSError, ValueError, KeyError, IndexError):
        pass
    try:  # macOS and other Unixes
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return {"total_gib": round(total / GIB, 1), "available_gib": None}
    except (AttributeError, ValueError, OSError):  # Windows: no sysconf
        return None


# ------------------------------------------------------------------------------ TensorFlow
def tensorflow_build() -> dict:
    """"CUDA" with its CUDA and cuDNN versions, "ROCm" or "CPU"."""
    import tensorflow as tf

    info = tf.sysconfig.get_build_info()
    build = "CUDA" if info.get("is_cuda_build") else "ROCm" if info.get("is_rocm_build") else "CPU"
    return {"build": build, "cuda": info.get("cuda_version"), "cudnn": info.get("cudnn_version")}


def tensorflow_gpus() -> list[dict]:
    """The GPUs TensorFlow sees, with their name and compute capability ("8.6"), if it says."""
    import tensorflow as tf

    gpus = []
    for device in tf.config.list_physical_devices("GPU"):
        try:
            details = tf.config.experimental.get_device_details(device)
        except Exception as e:  # noqa: BLE001 - a driver problem must not stop the report
            log.debug(f"no details for {device.name}: {e}")
            details = {}
        capability = details.get("compute_capability")
        gpus.append({"device": device.name, "name": details.get("device_name"),
                     "compute_capability": ".".join(map(str, capability)) if capability else None})
    return gpus


def nvidia_smi() -> list[dict] | None:
    """Each NVIDIA GPU's name and free and total memory (GiB) by `nvidia-smi`; None without it."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    command = [exe, "--query-gpu=name,memory.free,memory.total", "--format=csv,noheader,nounits"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT,
                              check=True)
    except (OSError, subprocess.SubprocessError) as e:
        log.debug(f"nvidia-smi failed: {e}")
        return []
    rows = []
    for line in done.stdout.splitlines():
        parts = [p.strip() for p in line.rsplit(",", 2)]
        try:
            rows.append({"name": parts[0], "free_gib": round(int(parts[1]) / 1024, 1),
                         "total_gib": round(int(parts[2]) / 1024, 1)})
        except (ValueError, IndexError):  # "[N/A]" on some boards
            continue
    return rows


def _capability(gpu: dict) -> tuple[int, ...] | None:
    text = gpu.get("compute_capability")
    return tuple(int(p) for p in text.split(".")) if text else None


def fast_precisions(gpus: list[dict]) -> dict:
    """Whether float16 and bfloat16 are fast here (True, False, None: unknown), why, and what
    `--mixed-precision auto` picks (`auto`)."""
    from fastgan_tf.training.precision import auto_precision, cpu_bfloat16_pays

    if gpus:
        caps = [_capability(g) for g in gpus]
        shown = ", ".join(g["compute_capability"] or "unknown" for g in gpus)
        return {"float16": all(c and c >= FP16_CAPABILITY for c in caps),
                "bfloat16": all(c and c >= BF16_CAPABILITY for c in caps),
                "auto": auto_precision(caps),
                "why": f"CUDA compute capability {shown}: float16 needs 7.0, bfloat16 8.0"}
    flags = bfloat16_flags()
    if flags is None:
        return {"float16": False, "bfloat16": None, "auto": "off",
                "why": "CPU: float16 is slower than float32; the bfloat16 flags are read from "
                       "/proc/cpuinfo, on Linux only"}
    if not flags:
        return {"float16": False, "bfloat16": False, "auto": "off", "cpu_flags": flags,
                "why": "CPU without AMX or AVX512_BF16; float16 is slower than float32 on CPUs"}
    found = ", ".join(f.upper() for f in flags)
    auto = auto_precision([], cpu_bfloat16=cpu_bfloat16_pays())
    why = (f"CPU with {found}: bfloat16 took 0.5-0.8x float32's step time on such CPUs, "
           "--speed measures it here" if auto == "bf16" else
           f"CPU with {found}, but TensorFlow's oneDNN kernels are off (TF_ENABLE_ONEDNN_OPTS=0): "
           "bfloat16 is slow without them")
    return {"float16": False, "bfloat16": None, "auto": auto, "cpu_flags": flags,
            "why": f"{why}; float16 is slower than float32 on CPUs"}


# ------------------------------------------------------------------------------ files
def weights() -> list[dict]:
    """Each weight file: what it is for, whether a verified copy is cached (never downloads)."""
    rows = []
    for w in downloads.WEIGHTS:
        found = downloads.cached(w)
        rows.append({"name": w.name, "purpose": w.purpose, "cached": str(found) if found else None,
                     "folder": str(w.path.parent), "url": w.url, "without": w.without,
                     "variable": _variable_of(w)})
    return rows


def _variable_of(weights_file) -> str:
    """The name `downloads` gives the entry, for the command that fetches it."""
    return next((name for name, value in vars(downloads).items() if value is weights_file),
                f"WEIGHTS[{downloads.WEIGHTS.index(weights_file)}]")


def folders() -> dict:
    from fastgan_tf.data.resolve import default_data_dir

    return {"cache": str(paths.cache_dir()), "datasets": str(default_data_dir()),
            "keras_weights": str(paths.keras_cache_dir())}


# ------------------------------------------------------------------------------ memory
def memory_fit(gpus: list[dict], nvidia: list[dict] | None, mode: str) -> dict:
    """What fits in the GPU's free memory by the --dry-run estimate; on a CPU, host RAM decides.

    Configurations: each of MEMORY_RESOLUTIONS at batch MEMORY_BATCH on one GPU, in precision
    `mode` (what `--mixed-precision auto` picks here), with --accumulate 2 only when
    --accumulate 1 does not fit. The GPU with the least free memory decides.
    """
    if not gpus:
        return {"bound": "RAM", "rows": []}
    free = min((g["free_gib"] for g in nvidia), default=None) if nvidia else None
    rows = []
    for resolution in MEMORY_RESOLUTIONS:
        for accumulate in (1, 2):
            row = _memory_row(resolution, accumulate, mode, free)
            rows.append(row)
            if row.get("fits") is not False:
                break
    fitting = [r for r in rows if r.get("fits")]
    return {"bound": "GPU", "free_gib": free, "rows": rows,
            "largest": max(fitting, key=lambda r: (r["resolution"], -r["accumulate"]),
                           default=None)}


def _memory_row(resolution: int, accumulate: int, mode: str, free: float | None) -> dict:
    row = {"resolution": resolution, "batch_size": MEMORY_BATCH, "accumulate": accumulate,
           "mixed_precision": mode}
    log.info(f"estimating the memory of a {resolution}px step (batch {MEMORY_BATCH}, "
             f"accumulate {accumulate})")
    try:
        row["gib"] = estimate_gib(resolution, MEMORY_BATCH // accumulate, mode)
    except Exception as e:  # noqa: BLE001 - an estimate that fails must not stop the report
        row["error"] = one_line(e)
        return row
    row["fits"] = None if free is None else row["gib"] <= free
    return row


def estimate_gib(resolution: int, micro_batch: int, mode: str) -> float:
    """FastGAN's default model (LPIPS included) at `resolution`: GiB of one step's device memory."""
    from fastgan_tf.config import TrainConfig
    from fastgan_tf.training import registry

    cfg = TrainConfig(dataset="doctor", resolution=resolution, batch_size=MEMORY_BATCH)
    return registry.get("fastgan").memory_estimate(cfg, micro_batch, mode)["device_total_gib"]


# ------------------------------------------------------------------------------ speed
def timed_steps(precisions: dict | None = None, settings=SPEED_SETTINGS) -> list[dict]:
    """Seconds per training step of FastGAN on random images, after warm-up steps, in the
    precision `auto` picks here; in float32 and bfloat16 both where bfloat16 is supported but its
    speed depends on the CPU (AVX512_BF16 or AMX), so that the report says whether it pays."""
    precisions = precisions or {"auto": "off", "bfloat16": False}
    modes = ["off", "bf16"] if precisions["bfloat16"] is None else [precisions["auto"]]
    rows = []
    for resolution, ngf in settings:
        for mode in modes:
            log.info(f"timing {WARMUP_STEPS} + {TIMED_STEPS} steps at {resolution}px (ngf {ngf}, "
                     f"--mixed-precision {mode})")
            try:
                rows.append(_time_steps(resolution, ngf, mode))
            except Exception as e:  # noqa: BLE001 - e.g. out of memory: say so, keep the report
                rows.append({"resolution": resolution, "ngf": ngf, "mixed_precision": mode,
                             "error": one_line(e)})
    return rows


def _time_steps(resolution: int, ngf: int, mode: str) -> dict:
    import tensorflow as tf

    from fastgan_tf.config import TrainConfig
    from fastgan_tf.training import registry
    from fastgan_tf.training.memory import precision
    from fastgan_tf.training.precision import loss_scaling

    cfg = TrainConfig(dataset="doctor", resolution=resolution, ngf=ngf, ndf=ngf,
                      recon_loss="l1", batch_size=SPEED_BATCH)
    with precision(mode):
        gan = registry.get("fastgan").make_gan(cfg, mixed=loss_scaling(mode))
    real = tf.random.stateless_uniform([SPEED_BATCH, resolution, resolution, 3], (0, 0), -1, 1)
    for _ in range(WARMUP_STEPS):
        gan.train_on_batch(real)["g_loss"].numpy()
    times = []
    for _ in range(TIMED_STEPS):
        start = time.perf_counter()
        gan.train_on_batch(real)["g_loss"].numpy()
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return {"resolution": resolution, "ngf": ngf, "batch_size": SPEED_BATCH,
            "mixed_precision": mode, "seconds_per_step": round(seconds, 3),
            "images_per_second": round(SPEED_BATCH / seconds, 1)}


# ------------------------------------------------------------------------------ advice
def advice(rep: dict) -> list[str]:
    """One line per problem: what is wrong and the command that fixes it."""
    lines = []
    if not rep["gpus"] and rep["nvidia_smi"] is not None:
        lines.append(_no_gpu_advice(rep))
    auto = rep.get("precision", {}).get("auto", "off")
    faster = _bf16_speedup(rep.get("speed") or [])
    if faster and auto != "bf16":
        lines.append(f"bfloat16 trained faster than float32 here ({faster}): add "
                     "--mixed-precision bf16")
    if faster is None and auto == "bf16" and _timed_both(rep.get("speed") or []):
        lines.append("bfloat16 was not faster than float32 here at every size (--speed): add "
                     "--mixed-precision off (auto picks bfloat16 on this CPU)")
    for w in rep["weights"]:
        if not w["cached"]:
            lines.append(f"{w['name']} (for {w['purpose']}) is not cached: "
                         f"{FETCH_COMMAND.format(name=w['variable'])} downloads it into "
                         f"{w['folder']} (or copy it there; without it: {w['without']})")
    return lines


def _timed_both(rows: list[dict]) -> bool:
    """Whether --speed timed float32 and bfloat16 at one size at least."""
    timed = _timed(rows)
    return any(mode == "bf16" and (size, "off") in timed for size, mode in timed)


def _timed(rows: list[dict]) -> dict:
    return {(r["resolution"], r["mixed_precision"]): r["seconds_per_step"]
            for r in rows if "error" not in r}


def _bf16_speedup(rows: list[dict]) -> str | None:
    """'64px 0.50 -> 0.40 s/step, ...' when --speed timed float32 and bfloat16 and bfloat16 won
    at every size; None otherwise."""
    timed = _timed(rows)
    sizes = sorted({size for size, mode in timed if mode == "bf16" and (size, "off") in timed})
    if not sizes or any(timed[(s, "bf16")] >= timed[(s, "off")] for s in sizes):
        return None
    return ", ".join(f"{s}px {timed[(s, 'off')]} -> {timed[(s, 'bf16')]} s/step" for s in sizes)


def _no_gpu_advice(rep: dict) -> str:
    """An NVIDIA GPU is there (nvidia-smi runs) but TensorFlow does not see it: why, likely."""
    if rep["system"]["windows"]:
        return NO_WINDOWS_GPU
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
    if hidden is not None and hidden.strip() in ("", "-1"):
        return f"CUDA_VISIBLE_DEVICES={hidden!r} hides the GPUs from TensorFlow: unset it"
    if rep["tensorflow"]["build"] != "CUDA":
        return INSTALL_CUDA_BUILD
    return ("TensorFlow is a CUDA build but sees no GPU: check the driver with nvidia-smi, and "
            "run `python train.py --dry-run --verbose` to see TensorFlow's reasons")


# ------------------------------------------------------------------------------ text
def render(rep: dict) -> str:
    """The report on one screen."""
    rows = [("System", _system_line(rep["system"])),
            ("TensorFlow", _tensorflow_line(rep["tensorflow"])),
            ("GPUs", _gpus_line(rep["gpus"], rep["nvidia_smi"])),
            ("Precision", _precision_line(rep["precision"])),
            ("Memory", _memory_line(rep["memory"], rep["system"]["ram"]))]
    rows += [("Weights" if i == 0 else "", _weights_line(w)) for i, w in enumerate(rep["weights"])]
    rows += [("Folders", f"cache {rep['folders']['cache']}"),
             ("", f"datasets {rep['folders']['datasets']}"),
             ("", f"Keras weights {rep['folders']['keras_weights']}"),
             ("Speed", _speed_line(rep["speed"]))]
    lines = [f"{label:<11} {text}" for label, text in rows]
    lines += ["To do:", *(f"  - {line}" for line in rep["advice"])] if rep["advice"] else \
        ["Nothing to do."]
    return "\n".join(lines)


def _system_line(s: dict) -> str:
    where = f", {s['wsl']}" if s["wsl"] else ""
    return f"{s['os']} {s['machine']}{where}; Python {s['python']}"


def _tensorflow_line(t: dict) -> str:
    versions = ", ".join(f"{k} {t[k]}" for k in ("cuda", "cudnn") if t.get(k))
    return f"{t['version']}, {t['build']} build" + (f" ({versions})" if versions else "")


def _gpus_line(gpus: list[dict], nvidia: list[dict] | None) -> str:
    smi = "nvidia-smi not found" if nvidia is None else "; ".join(
        f"{g['name']}: {g['free_gib']} of {g['total_gib']} GiB free" for g in nvidia) or \
        "nvidia-smi lists no GPU"
    if not gpus:
        return f"none seen by TensorFlow ({smi})"
    seen = "; ".join(f"{g['name'] or g['device']} (compute capability "
                     f"{g['compute_capability'] or 'unknown'})" for g in gpus)
    return f"{seen}; {smi}"


def _precision_line(p: dict) -> str:
    def word(fast):
        return "unknown" if fast is None else "fast" if fast else "slow"

    return (f"float16 {word(p['float16'])}, bfloat16 {word(p['bfloat16'])} ({p['why']}); "
            f"--mixed-precision auto: {PRECISION_NAMES[p['auto']]}")


def _memory_line(m: dict, ram: dict | None) -> str:
    if m["bound"] == "RAM":
        size = f" ({ram['total_gib']} GiB" + (f", {ram['available_gib']} available)"
                                             if ram.get("available_gib") else ")") if ram else ""
        return f"no GPU: a step's memory is host RAM{size}; --dry-run estimates a configuration"
    free = "unknown free memory" if m["free_gib"] is None else f"{m['free_gib']} GiB free"
    rows = "; ".join(_memory_row_text(r) for r in m["rows"])
    best = m["largest"]
    verdict = (f"largest that fits: {best['resolution']}px, batch {best['batch_size']}"
               f"{', --accumulate 2' if best['accumulate'] > 1 else ''}") if best else \
        "none of these fits" if m["free_gib"] is not None else "compare with the GPU's memory"
    return f"{rows} vs {free}: {verdict}"


def _memory_row_text(r: dict) -> str:
    setting = (f"{r['resolution']}px batch {r['batch_size']}"
               + (f" accumulate {r['accumulate']}" if r["accumulate"] > 1 else "")
               + {"on": " float16", "bf16": " bfloat16"}.get(r["mixed_precision"], ""))
    return f"{setting} {r['gib']} GiB" if "gib" in r else f"{setting} (no estimate: {r['error']})"


def _weights_line(w: dict) -> str:
    return f"{w['name']}: {'cached' if w['cached'] else 'not cached'} (for {w['purpose']})"


def _speed_line(rows: list[dict] | None) -> str:
    if rows is None:
        return "not measured (add --speed: a few training steps at 64 and 256 px)"
    names = PRECISION_NAMES
    return "; ".join(f"{r['resolution']}px ngf {r['ngf']} {names[r['mixed_precision']]}: " + (
        f"{r['seconds_per_step']} s/step, {r['images_per_second']} img/s" if "error" not in r
        else f"failed ({r['error']})") for r in rows)
