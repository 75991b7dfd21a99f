"""The host allocator settings of CPU training: glibc's mmap threshold and trimming, no-ops elsewhere."""

import sys

import pytest

from fastgan_tf.training import host_memory


class FakeLibc:
    def __init__(self):
        self.calls = []

    def mallopt(self, param, value):
        self.calls.append(("mallopt", param, value))
        return 1

    def malloc_trim(self, pad):
        self.calls.append(("malloc_trim", pad))
        return 1


def test_map_large_blocks_sets_glibc_mmap_threshold(monkeypatch):
    libc = FakeLibc()
    monkeypatch.setattr(host_memory, "_LIBC", libc)
    assert host_memory.map_large_blocks() is True
    # M_MMAP_THRESHOLD is -3 in glibc's malloc.h; 4 MiB.
    assert libc.calls == [("mallopt", -3, 4 * 1024 * 1024)]
    host_memory.release_freed_host_memory()
    assert libc.calls[-1] == ("malloc_trim", 0)


def test_a_refused_mallopt_is_reported(monkeypatch):
    libc = FakeLibc()
    libc.mallopt = lambda param, value: 0  # glibc returns 0 on error
    monkeypatch.setattr(host_memory, "_LIBC", libc)
    assert host_memory.map_large_blocks() is False


@pytest.mark.parametrize("platform", ["win32", "darwin"])
def test_no_glibc_no_tuning(monkeypatch, platform):
    monkeypatch.setattr(sys, "platform", platform)
    assert host_memory._load_libc() is None
    monkeypatch.setattr(host_memory, "_LIBC", host_memory._load_libc())
    assert host_memory.map_large_blocks() is False
    host_memory.release_freed_host_memory()  # no error


def test_a_libc_without_mallopt_is_not_used(monkeypatch):
    class Musl:
        def malloc_trim(self, pad):
            return 1

    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(host_memory.ctypes, "CDLL", lambda name: Musl())
    assert host_memory._load_libc() is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_real_glibc_accepts_the_threshold():
    if host_memory._LIBC is None:
        pytest.skip("not glibc")
    assert host_memory.map_large_blocks() is True


def test_cpu_training_maps_large_blocks_and_trims_after_each_step(monkeypatch):
    import numpy as np
    import tensorflow as tf

    from fastgan_tf.config import TrainConfig
    from fastgan_tf.losses import reconstruction_loss
    from fastgan_tf.training.fastgan import FastGAN

    libc = FakeLibc()
    monkeypatch.setattr(host_memory, "_LIBC", libc)
    cfg = TrainConfig(dataset="x", resolution=64, ngf=8, ndf=8, nz=32, batch_size=2,
                      recon_loss="l1")
    gan = FastGAN(cfg, reconstruction_loss("l1"))
    assert libc.calls == [("mallopt", -3, 4 * 1024 * 1024)]
    gan.train_on_batch(tf.constant(np.zeros((2, 64, 64, 3)), tf.float32))
    assert libc.calls[-1] == ("malloc_trim", 0)
