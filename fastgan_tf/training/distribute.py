"""Choosing the tf.distribute strategy: one device, the GPUs of one machine, or several machines.

* ``one``: TensorFlow's default strategy (one GPU, or the CPU).
* ``mirrored``: ``MirroredStrategy`` over the local GPUs (NCCL all-reduce on Linux). With no GPU
  and ``FASTGAN_VIRTUAL_DEVICES=N`` in the environment, the CPU is split into N logical devices
  instead, which is how the multi-device code path is tested on CPU-only machines.
* ``multiworker``: ``MultiWorkerMirroredStrategy`` across machines; ``TF_CONFIG`` names the
  workers and this process's index (see benchmarks/README.md). Worker 0 is the chief.
* ``auto``: multiworker when TF_CONFIG lists more than one worker, mirrored when there are two or
  more GPUs (or virtual CPU devices), one otherwise.

Every replica takes its own contiguous slice of the global batch (see training/fastgan.py), so
``--batch-size`` is always the global batch and the dataset is not sharded: each worker builds the
same epoch plan from (seed, epoch) and reads only the rows of its replicas.

A strategy must be made before TensorFlow runs its first operation (devices and collectives are
configured once per process), so `make_strategy` is the first thing a training run calls.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import tensorflow as tf

from fastgan_tf.config import STRATEGIES
from fastgan_tf.errors import UserError

VIRTUAL_DEVICES_ENV = "FASTGAN_VIRTUAL_DEVICES"


def _tf_config_workers() -> int:
    """How many workers TF_CONFIG lists (chief included); 0 when it is not set."""
    text = os.environ.get("TF_CONFIG", "")
    if not text:
        return 0
    try:
        cluster = json.loads(text).get("cluster", {})
        return len(cluster.get("worker", [])) + len(cluster.get("chief", []))
    except (ValueError, AttributeError, TypeError):
        raise UserError("TF_CONFIG is not valid JSON of the form {\"cluster\": {\"worker\": "
                        "[\"host:port\", ...]}, \"task\": {\"type\": \"worker\", \"index\": 0}}; "
                        "fix the environment variable or use --strategy one") from None


def _virtual_devices() -> int:
    text = os.environ.get(VIRTUAL_DEVICES_ENV, "")
    if not text:
        return 0
    if not text.isdigit() or int(text) < 1:
        raise UserError(f"{VIRTUAL_DEVICES_ENV}={text!r}: expected a positive number of logical "
                        "CPU devices, e.g. 2; unset it to train on the real devices")
    return int(text)


def split_cpu(count: int) -> list[str]:
    """Split the first CPU into `count` logical devices (before TensorFlow has initialised them)."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    existing = tf.config.get_logical_device_configuration(cpu)
    if existing is None or len(existing) != count:
        try:
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * count)
        except RuntimeError:
            raise UserError(f"{VIRTUAL_DEVICES_ENV}={count}: TensorFlow's devices were already "
                            "initialised in this process; set the variable before starting "
                            "Python") from None
    return [d.name for d in tf.config.list_logical_devices("CPU")][:count]


def resolve_strategy_name(name: str) -> str:
    """Turn 'auto' into the concrete choice for this machine (no devices are initialised)."""
    if name not in STRATEGIES:
        raise UserError(f"--strategy {name!r} is not one of {', '.join(STRATEGIES)}")
    if name != "auto":
        return name
    if _tf_config_workers() > 1:
        return "multiworker"
    if len(tf.config.list_physical_devices("GPU")) > 1 or _virtual_devices() > 1:
        return "mirrored"
    return "one"


def configure_cpu_threads() -> None:
    """On a machine without GPU, run one op at a time (each op still uses every core).

    FastGAN's step is a chain of large convolutions that each use all cores already; running
    independent ops side by side (TensorFlow's default) saved no time on 2 cores but kept more
    activations alive at once: peak memory at 256x256, batch 8, was ~0.4 GiB higher.
    TF_NUM_INTEROP_THREADS, when set, wins.
    """
    if tf.config.list_physical_devices("GPU") or os.environ.get("TF_NUM_INTEROP_THREADS"):
        return
    try:
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TensorFlow already started: keep its setting
        pass


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The tf.distribute strategy for `--strategy name` (call before any other TensorFlow op)."""
    name = resolve_strategy_name(name)
    configure_cpu_threads()
    if name == "one":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_physical_devices("GPU")
        virtual = _virtual_devices()
        if gpus:
            return tf.distribute.MirroredStrategy()
        if virtual:
            devices = split_cpu(virtual)
            return tf.distribute.MirroredStrategy(
                devices, cross_device_ops=tf.distribute.ReductionToOneDevice())
        raise UserError("--strategy mirrored needs GPUs (none is visible); use --strategy one, "
                        f"or set {VIRTUAL_DEVICES_ENV}=2 to test on CPU devices")
    if _tf_config_workers() < 1:
        raise UserError("--strategy multiworker needs TF_CONFIG listing the workers and this "
                        "task (see the README section on several machines); or use --strategy one")
    virtual = _virtual_devices()
    if virtual and not tf.config.list_physical_devices("GPU"):
        split_cpu(virtual)
    communication = tf.distribute.experimental.CommunicationImplementation.AUTO
    options = tf.distribute.experimental.CommunicationOptions(implementation=communication)
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True on the worker that writes the run folder (always, unless multi-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "cluster_spec", None):
        return True
    if not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type == "chief" or (task_type == "worker" and task_id == 0
                                    and "chief" not in resolver.cluster_spec().as_dict())


def worker_run_dir(run_dir: Path, strategy: tf.distribute.Strategy) -> Path:
    """The chief trains in `run_dir`; every other worker keeps its own copy next to it.

    Non-chief workers hold the same state as the chief (every update is all-reduced), and they
    need their own checkpoints to resume in step with it after a restart. A separate folder
    keeps them from overwriting the chief's files when the output folder is shared storage.
    """
    if is_chief(strategy):
        return run_dir
    resolver = strategy.cluster_resolver
    return run_dir.with_name(f"{run_dir.name}.{resolver.task_type}{resolver.task_id}")


def expected_replicas(name: str) -> int:
    """How many replicas `--strategy name` will have here, without initialising any device."""
    name = resolve_strategy_name(name)
    local = len(tf.config.list_physical_devices("GPU")) or _virtual_devices() or 1
    if name == "one":
        return 1
    if name == "mirrored":
        return local
    return max(_tf_config_workers(), 1) * local
