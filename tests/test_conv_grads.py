"""The matmul filter gradients (fastgan_tf/models/conv_grads.py) against TensorFlow's own
convolution gradients, and where the layers use them."""

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from fastgan_tf import cpu
from fastgan_tf.models import conv_grads
from fastgan_tf.models import layers as L


def _grads(fn, x, kernel, dy):
    with tf.GradientTape() as tape:
        tape.watch([x, kernel])
        y = fn(x, kernel)
        loss = tf.reduce_sum(y * dy)
    return [y, *tape.gradient(loss, [x, kernel])]


def _assert_close(got, want):
    for g, w in zip(got, want):  # the same sums in another order: float32 rounding
        scale = np.abs(w.numpy()).max()
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-5, atol=3e-6 * scale)


@pytest.mark.parametrize("shape", [(2, 5, 7, 3), (3, 8, 8, 16)])
def test_conv3x3_matches_tensorflow(rng, shape):
    x = tf.constant(rng.normal(size=shape), tf.float32)
    kernel = tf.constant(rng.normal(size=(3, 3, shape[-1], 6)), tf.float32)
    dy = tf.constant(rng.normal(size=shape[:3] + (6,)), tf.float32)
    want = _grads(lambda a, k: tf.nn.conv2d(a, k, 1, "SAME"), x, kernel, dy)
    _assert_close(_grads(conv_grads.conv3x3, x, kernel, dy), want)
    traced = tf.function(lambda a, k, d: _grads(conv_grads.conv3x3, a, k, d))
    _assert_close(traced(x, kernel, dy), want)


@pytest.mark.parametrize("shape", [(2, 5, 7, 3), (3, 8, 8, 16)])
def test_conv_transpose_stride2_matches_tensorflow(rng, shape):
    x = tf.constant(rng.normal(size=shape), tf.float32)
    kernel = tf.constant(rng.normal(size=(4, 4, 6, shape[-1])), tf.float32)  # (taps, out, in)
    out_shape = [shape[0], 2 * shape[1], 2 * shape[2], 6]
    dy = tf.constant(rng.normal(size=out_shape), tf.float32)
    want = _grads(lambda a, k: tf.nn.conv2d_transpose(a, k, out_shape, 2, "SAME"), x, kernel, dy)
    _assert_close(_grads(conv_grads.conv_transpose_stride2, x, kernel, dy), want)
    traced = tf.function(lambda a, k, d: _grads(conv_grads.conv_transpose_stride2, a, k, d))
    _assert_close(traced(x, kernel, dy), want)


def test_used_only_in_float32_with_onednn_no_gpu_no_avx512_and_large_outputs(monkeypatch):
    big = 128 * 128
    monkeypatch.setattr(cpu, "has_avx512", lambda: False)
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "1")
    assert conv_grads.matmul_filter_gradients("float32", big)
    assert not conv_grads.matmul_filter_gradients("float32", 64 * 128)
    assert not conv_grads.matmul_filter_gradients("float32", None)
    assert not conv_grads.matmul_filter_gradients("bfloat16", big)
    assert not conv_grads.matmul_filter_gradients("float16", big)
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")  # Eigen's kernels (e.g. --deterministic)
    assert not conv_grads.matmul_filter_gradients("float32", big)
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS")
    assert not conv_grads.matmul_filter_gradients("float32", big)
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "1")
    monkeypatch.setattr(cpu, "has_avx512", lambda: True)  # oneDNN's own was faster there
    assert not conv_grads.matmul_filter_gradients("float32", big)
    monkeypatch.setattr(cpu, "has_avx512", lambda: False)
    monkeypatch.setattr(tf.config, "list_logical_devices", lambda kind=None: ["/GPU:0"])
    assert not conv_grads.matmul_filter_gradients("float32", big)


@pytest.mark.parametrize("flags, avx512", [("fpu avx2 fma", False),
                                           ("fpu avx2 avx512f avx512_bf16 amx_bf16", True)])
def test_avx512_is_read_from_proc_cpuinfo(tmp_path, monkeypatch, flags, avx512):
    (tmp_path / "cpuinfo").write_text(f"processor\t: 0\nflags\t\t: {flags}\n", encoding="utf-8")
    monkeypatch.setattr(cpu, "CPUINFO", tmp_path / "cpuinfo")
    assert cpu.has_avx512() is avx512
    monkeypatch.setattr(cpu, "CPUINFO", tmp_path / "missing")
    assert cpu.has_avx512() is False  # unknown: the matmul form, as before the flag was read


def test_proc_cpuinfo_is_read_once_per_process(tmp_path, monkeypatch):
    """Every convolution asks when a step is traced; the file is read the first time only."""
    path = tmp_path / "cpuinfo"
    path.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f\n", encoding="utf-8")
    monkeypatch.setattr(cpu, "CPUINFO", path)
    reads, read_text = [], Path.read_text
    monkeypatch.setattr(Path, "read_text",
                        lambda self, *a, **k: reads.append(self) or read_text(self, *a, **k))
    assert all(cpu.has_avx512() for _ in range(3))
    cpu.cpu_info()["flags"].clear()  # the caller's own copy
    assert cpu.has_avx512() and cpu.bfloat16_flags() == []
    assert reads == [path]


@pytest.mark.parametrize("make, side, pixels", [(lambda: L.SNConv2D(4, 3, padding=1), 32, 32 * 32),
                                                (lambda: L.SNUpConv2D(4), 16, 32 * 32)])
def test_layers_choose_by_output_size(monkeypatch, make, side, pixels):
    asked = []
    monkeypatch.setattr(L, "matmul_filter_gradients", lambda dtype, n: asked.append(n) or False)
    make()(tf.zeros([1, side, side, 2]))
    assert asked == [pixels]  # the up-conv's output is twice the input's side


@pytest.mark.parametrize("make", [lambda: L.SNConv2D(6, 3, padding=1), lambda: L.SNUpConv2D(6)])
def test_layers_give_the_same_values_and_gradients_either_way(rng, monkeypatch, make):
    x = tf.constant(rng.normal(size=(2, 6, 6, 4)), tf.float32)
    layer = make()
    layer.build(x.shape)
    u = layer.u.numpy()
    results = []
    monkeypatch.setattr(conv_grads, "MIN_OUTPUT_PIXELS", 1)  # this small input too
    monkeypatch.setattr(cpu, "has_avx512", lambda: False)  # on every CPU
    for onednn in ("0", "1"):
        monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", onednn)  # read when the layer is called
        layer.u.assign(u)
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.square(layer(x, training=True)))
        results.append([loss, *tape.gradient(loss, [x, layer.kernel])])
    _assert_close(results[1], results[0])


@pytest.mark.parametrize("op", ["conv3x3", "conv_transpose_stride2"])
def test_filter_gradients_repeat_bit_for_bit(rng, op):
    """Resume is bit-exact only if a step repeats exactly: the products must not vary run to run
    (the CLI resume test runs at 64 px, below the size where the layers use them)."""
    fn = getattr(conv_grads, op)
    x = tf.constant(rng.normal(size=(2, 32, 32, 16)), tf.float32)
    if op == "conv3x3":
        kernel, dy_shape = rng.normal(size=(3, 3, 16, 24)), (2, 32, 32, 24)
    else:
        kernel, dy_shape = rng.normal(size=(4, 4, 24, 16)), (2, 64, 64, 24)
    kernel = tf.constant(kernel, tf.float32)
    dy = tf.constant(rng.normal(size=dy_shape), tf.float32)
    traced = tf.function(lambda a, k, d: _grads(fn, a, k, d))
    first = [t.numpy() for t in traced(x, kernel, dy)]
    for _ in range(3):
        again = [t.numpy() for t in traced(x, kernel, dy)]
        assert all(np.array_equal(a, b) for a, b in zip(first, again))
