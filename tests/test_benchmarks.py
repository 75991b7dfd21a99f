"""The benchmark scripts: how train_step.py pairs this project's settings with the reference's
and takes its ratios (within a round, never across rounds), and that profile_step.py still runs
against the package it profiles (a renamed method once broke it unnoticed), and counts FLOPs as
they are counted by hand; that batch_norm.py times the two BatchNorm paths it names."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import batch_norm  # noqa: E402
import lpips_precision  # noqa: E402
import machine  # noqa: E402
import profile_step  # noqa: E402
import step_memory  # noqa: E402
import train_step  # noqa: E402


def _args(*argv):
    return train_step.parser().parse_args(list(argv))


def test_grid_adds_the_reference_once_per_same_work():
    args = _args("--recon-loss", "l1", "lpips", "--mixed-precision", "off", "bf16",
                 "--reference-dir", "/somewhere")
    settings = train_step.grid_settings(args)
    ours = [s for s in settings if s["code"] == "fastgan-tf"]
    theirs = [s for s in settings if s["code"] == "reference"]
    assert len(ours) == 4 and settings[:4] == ours  # ours first: time_vs_first is ours
    assert sorted(s["recon_loss"] for s in theirs) == ["l1", "lpips"]
    assert all("mixed_precision" not in s for s in theirs)  # the reference runs float32 only
    assert [s["code"] for s in train_step.grid_settings(_args())] == ["fastgan-tf"]


def _result(code, recon, seconds, rss=100.0):
    return {"code": code, "resolution": 256, "batch_size": 8, "recon_loss": recon,
            "median_s_per_iter": seconds, "min_s_per_iter": seconds, "peak_rss_mib": rss}


def test_ratios_are_taken_within_each_round():
    args = _args("--recon-loss", "l1", "lpips", "--reference-dir", "/somewhere")
    settings = train_step.grid_settings(args)
    # Round 0 on a fast phase of the machine, round 1 on a slow one (everything 2x slower).
    rounds = [[_result("fastgan-tf", "l1", 1.0), _result("fastgan-tf", "lpips", 1.5),
               _result("pytorch-reference", "l1", 2.0), _result("pytorch-reference", "lpips", 3.0)],
              [_result("fastgan-tf", "l1", 2.0, rss=150.0), _result("fastgan-tf", "lpips", 3.0),
               _result("pytorch-reference", "l1", 4.0), _result("pytorch-reference", "lpips", 6.0)]]
    summaries = [train_step.summarise([r[i] for r in rounds], [r[0] for r in rounds],
                                      [train_step.reference_of(r, settings[i]) for r in rounds])
                 for i in range(len(settings))]
    assert [s["time_vs_reference"] for s in summaries] == [0.5, 0.5, 1.0, 1.0]
    assert [s["time_vs_first"] for s in summaries] == [1.0, 1.5, 2.0, 3.0]
    assert summaries[0]["per_round_s"] == [1.0, 2.0] and summaries[0]["median_s_per_iter"] == 1.5
    assert summaries[0]["per_round_peak_rss_mib"] == [100.0, 150.0]
    assert summaries[0]["peak_rss_mib"] == 150.0


def test_filter_gradients_are_a_grid_dimension_the_reference_ignores():
    args = _args("--filter-gradients", "auto", "tensorflow", "--reference-dir", "/somewhere")
    settings = train_step.grid_settings(args)
    assert [s.get("filter_gradients") for s in settings] == ["auto", "tensorflow", None]


def test_mmap_threshold_is_a_grid_dimension_the_reference_ignores():
    args = _args("--mmap-threshold", "auto", "glibc", "--reference-dir", "/somewhere")
    settings = train_step.grid_settings(args)
    assert [s.get("mmap_threshold") for s in settings] == ["auto", "glibc", None]


def test_lpips_precision_spans_lpips_settings_only():
    args = _args("--recon-loss", "l1", "lpips", "--lpips-precision", "float32", "bf16",
                 "--reference-dir", "/somewhere")
    ours = [s for s in train_step.grid_settings(args) if s["code"] == "fastgan-tf"]
    assert [(s["recon_loss"], s["lpips_precision"]) for s in ours] == [
        ("l1", "float32"), ("lpips", "float32"), ("lpips", "bf16")]


def test_no_reference_no_reference_ratio():
    runs = [_result("fastgan-tf", "l1", 1.0)]
    summary = train_step.summarise(runs, runs, [train_step.reference_of(runs, runs[0])])
    assert "time_vs_reference" not in summary


def test_flops_of_a_transposed_conv_are_counted_by_its_input():
    import tensorflow as tf

    w = tf.ones([4, 4, 5, 3])  # 4x4 kernel, 3 -> 5 channels, stride 2 (SNUpConv2D's form)
    flops = profile_step.layer_flops(
        lambda x: tf.nn.conv2d_transpose(x, w, [1, 8, 8, 5], strides=2),
        tf.TensorSpec([1, 4, 4, 3]))
    # every input value meets every kernel tap of every output channel once
    assert sum(flops.values()) == pytest.approx(2 * (4 * 4 * 3) * (4 * 4) * 5 / 1e9)


def test_lpips_flops_are_vgg16_on_three_predictions_and_two_targets():
    import tensorflow as tf

    from fastgan_tf.lpips import LPIPS

    size, batch = 32, 2
    # VGG16's 13 convs (3x3) on s x s: s^2 * 9 * (3*64 + 64*64 + (64*128 + 128*128) / 4
    # + (128*256 + 2*256*256) / 16 + (256*512 + 2*512*512) / 64 + 3*512*512 / 256) MACs
    per_image = 2 * size**2 * 9 * 33984 / 1e9
    recs = [tf.zeros([batch, size, size, 3])] * 3
    got = profile_step.lpips_gflops(LPIPS(vgg_weights=None), recs, batch)
    # predictions: forward + gradient to the input; distinct targets: forward
    assert got == pytest.approx(per_image * (3 * batch * 2 + 2 * batch))


def test_batch_norm_benchmark_forces_each_path_and_restores_the_packages_choice():
    import keras
    import tensorflow as tf

    from fastgan_tf.models import layers

    chosen = layers.fused_batch_norm
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    x = tf.cast(tf.random.stateless_normal((2, 4, 4, 8), seed=[0, 1]), tf.bfloat16)
    steps = {"exact": batch_norm.traced_step(layers, x, False),
             "fused": batch_norm.traced_step(layers, x, True)}
    assert layers.fused_batch_norm is chosen

    def op_types(step):
        return {op.type for op in step.graph.get_operations()}

    assert "FusedBatchNormV3" in op_types(steps["fused"])
    assert "FusedBatchNormV3" not in op_types(steps["exact"])
    ms = machine.median_ms(steps, repeats=1)
    assert set(ms) == {"exact", "fused"} and all(v > 0 for v in ms.values())


def test_timed_gradients_watch_tensors_and_keep_what_only_the_loss_needs():
    """The LPIPS part once timed nothing: its inputs are tensors, which a tape does not watch
    unasked, so the gradients were None and TensorFlow pruned the whole computation."""
    import tensorflow as tf

    from fastgan_tf.lpips import LPIPS

    x = tf.constant([1.0, -2.0])
    loss, (grad,) = profile_step.loss_and_gradients(lambda: tf.reduce_sum(x * x), [x])()
    assert float(loss) == 5.0 and grad.numpy().tolist() == [2.0, -4.0]
    # VGG16 alone runs on the targets too: the loss depends on them, the gradient does not
    lpips = LPIPS(vgg_weights=None)
    recs = [tf.random.stateless_uniform([1, 32, 32, 3], (0, i), -1, 1) for i in range(3)]
    targets = [tf.zeros([1, 32, 32, 3]), tf.ones([1, 32, 32, 3])]
    vgg = profile_step.loss_and_gradients(profile_step.vgg_alone(lpips, recs, targets), recs)
    loss_a, grads_a = vgg()
    targets[1] = -targets[1]
    loss_b, grads_b = profile_step.loss_and_gradients(
        profile_step.vgg_alone(lpips, recs, targets), recs)()
    assert float(loss_a) != float(loss_b)
    for a, b in zip(grads_a, grads_b):
        assert a is not None and float(tf.reduce_max(tf.abs(a))) > 0
        assert tf.reduce_all(a == b)


@pytest.mark.slow
def test_profile_step_runs_and_its_parts_add_up():
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "profile_step.py"),
                           "--resolution", "64", "--batch-size", "2", "--ngf", "8", "--ndf", "8",
                           "--recon-loss", "lpips", "--repeats", "1"],
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    seconds = result["seconds"]
    assert seconds["whole step"] > 0 and seconds["sum of parts"] > 0
    assert seconds[profile_step.LPIPS_PART] > 0
    assert result["forward_gflops"]["D real forward"] > result["forward_gflops"]["D fake forward"]
    assert result["lpips_gflops_estimate"] > 0
    assert result["flops_ratio_lpips_step_over_l1_step"] > 1
    assert set(result["achieved_gflops_per_second"]) == {
        "whole step", "LPIPS", "VGG16 alone", "rest of the step"}
    assert seconds[profile_step.VGG_PART] > 0  # one timing each: their order is left to noise
    ratios = result["lpips_step_over_l1_step"]
    assert ratios["measured"] > 1 and ratios["with a free distance"] > 1
    assert ratios["floor: VGG16 at the best rate measured"] <= ratios["with a free distance"]
    assert result["setting"]["mixed_precision"] == "off"


@pytest.mark.slow
def test_train_step_runs_one_setting_and_names_its_filter_gradients_and_allocator():
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "train_step.py"),
                           "--resolution", "64", "--batch-size", "2", "--ngf", "8", "--ndf", "8",
                           "--iterations", "1", "--warmup", "1", "--onednn", "on",
                           "--filter-gradients", "auto", "tensorflow", "--mmap-threshold", "glibc"],
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(done.stdout)["results"]
    # 64 px is below conv_grads.MIN_OUTPUT_PIXELS: TensorFlow's filter gradients either way
    assert [r["filter_gradients"] for r in results] == ["tensorflow", "tensorflow"]
    assert all(r["median_s_per_iter"] > 0 and r["mmap_threshold"] == "glibc" for r in results)
    assert all(r["batch_norm"] == "exact" for r in results)  # float32: the exact statistics


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc")
def test_step_memory_peak_rss_is_per_step():
    """The peak RSS it reports starts again after each step: 256 MiB freed before the reset are
    not in the peak after it."""
    import numpy as np

    block = np.ones(2**25)  # 256 MiB, touched
    before = step_memory.peak_rss_gib()
    del block
    step_memory.reset_peak_rss()
    assert step_memory.peak_rss_gib() < before - 0.2


def test_step_memory_without_proc_reports_none(monkeypatch):
    """Windows and macOS have no /proc: null in the JSON, no crash."""
    def missing(*args, **kwargs):
        raise FileNotFoundError("/proc/self/status")

    monkeypatch.setattr(Path, "read_text", missing)
    monkeypatch.setattr(Path, "write_text", missing)
    step_memory.reset_peak_rss()
    assert step_memory.peak_rss_gib() is None


def test_lpips_precision_measures_gradient_errors_against_float32():
    """The same metric has no error against itself; the bfloat16 variant some, below 1; the
    float32 reference's own gradient moves when its input is rounded as a bfloat16 decoder's."""
    import numpy as np

    from fastgan_tf import lpips

    targets = lpips_precision.load_targets(None, 2, 32)
    assert targets.shape == (2, 32, 32, 3) and targets.min() >= -1 and targets.max() <= 1
    cases = lpips_precision.predictions(targets)
    assert all(np.abs(p).max() < 1 for p in cases.values())  # arctanh stays finite
    decoded = lpips_precision.as_decoded_in_bfloat16(cases["blurred"])
    assert 0 < np.abs(decoded - cases["blurred"]).max() < 0.01
    reference = lpips_precision.build(lpips, None, None)
    bf16 = lpips_precision.build(lpips, None, 3, like=reference)
    assert bf16.features.get_layer("block3_conv1").compute_dtype == "bfloat16"
    assert bf16.features.get_layer("block2_conv2").compute_dtype == "float32"
    later = lpips_precision.build(lpips, None, 4).features  # another split, the package's intact
    assert later.get_layer("block3_conv3").compute_dtype == "float32"
    assert later.get_layer("block4_conv1").compute_dtype == "bfloat16"
    assert lpips.LPIPS(vgg_weights=None, precision="bf16").features.get_layer(
        "block3_conv1").compute_dtype == "bfloat16"
    wanted = lpips_precision.reference_gradients(reference, cases, targets)
    same = lpips_precision.gradient_errors(reference, wanted, cases, targets)
    assert set(same) == set(cases) and set(same.values()) == {0.0}
    errors = lpips_precision.gradient_errors(bf16, wanted, cases, targets).values()
    assert all(0 < e < 0.5 for e in errors), errors
