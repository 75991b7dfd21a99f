"""Generation tools on directly built generators: sampling, walks, style mixing, neighbours, export."""

import json
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from fastgan_tf import export, generation
from fastgan_tf.errors import UserError
from fastgan_tf.export import TFLITE_FILES, export_generator, load_keras_export
from fastgan_tf.metrics.scoring import truncated_normal
from fastgan_tf.models.generator import Generator
from fastgan_tf.models.ssd import SSDGenerator
from fastgan_tf.visualize import to_uint8

NZ = 16


def _with_noise(g):
    """`g` with noise inputs that matter (fresh NoiseInjection weights are 0)."""
    for r in g.stages:
        block = getattr(g, f"feat_{r}")
        for name in ("noise1", "noise2"):
            if hasattr(block, name):
                getattr(block, name).weight.assign(0.5)
    return g


@pytest.fixture(scope="module")
def g64():
    """A 64px generator whose noise inputs matter."""
    return _with_noise(Generator(64, ngf=16, nz=NZ, seed=1).build_for_restore())


@pytest.fixture(scope="module")
def g256():
    return Generator(256, ngf=8, nz=NZ, seed=2).build_for_restore()


# --------------------------------------------------------------------------- latents


def test_truncated_normal_redraws_only_entries_beyond_the_threshold():
    plain = np.random.default_rng(5).standard_normal((200, NZ)).astype(np.float32)
    z = truncated_normal(np.random.default_rng(5), (200, NZ), 0.5)
    assert np.abs(z).max() <= 0.5
    inside = np.abs(plain) <= 0.5
    np.testing.assert_array_equal(z[inside], plain[inside])  # the first draw is kept where valid
    assert not np.array_equal(z[~inside], plain[~inside])
    np.testing.assert_array_equal(truncated_normal(np.random.default_rng(5), (200, NZ), None), plain)
    with pytest.raises(ValueError):
        truncated_normal(np.random.default_rng(5), (2, 2), 0.0)


def test_slerp_moves_the_angle_linearly_and_keeps_the_ends():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(NZ), rng.standard_normal(NZ)
    b *= np.linalg.norm(a) / np.linalg.norm(b)  # equal norms: the path stays on the sphere
    omega = np.arccos(a @ b / (a @ a))
    np.testing.assert_allclose(generation.slerp(a, b, 0.0), a, rtol=1e-5)
    np.testing.assert_allclose(generation.slerp(a, b, 1.0), b, rtol=1e-5, atol=1e-6)
    for t in (0.25, 0.5, 0.8):
        z = generation.slerp(a, b, t).astype(np.float64)
        assert np.linalg.norm(z) == pytest.approx(np.linalg.norm(a), rel=1e-5)
        angle = np.arccos(np.clip(z @ a / (np.linalg.norm(z) * np.linalg.norm(a)), -1, 1))
        assert angle == pytest.approx(t * omega, abs=1e-4)
    np.testing.assert_allclose(generation.lerp(a, b, 0.25), 0.75 * a + 0.25 * b, rtol=1e-5)


def test_walk_is_closed_and_has_k_times_n_latents():
    keys = np.random.default_rng(1).standard_normal((3, NZ)).astype(np.float32)
    for mode in generation.INTERPOLATIONS:
        walk = generation.walk_latents(keys, 4, mode)
        assert walk.shape == (12, NZ)
        np.testing.assert_allclose(walk[[0, 4, 8]], keys, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(generation.walk_latents(keys, 4, "linear")[2],
                               0.5 * keys[0] + 0.5 * keys[1], rtol=1e-5)


# --------------------------------------------------------------------------- samples


def test_samples_are_deterministic_per_seed_and_change_with_truncation(g64, tmp_path):
    written = []
    first = generation.save_samples(g64, 5, tmp_path / "a", seed=3, batch_size=2,
                                    progress=written.append)
    assert written == [2, 2, 1]  # images per batch, ready for a progress bar's update()
    again = generation.save_samples(g64, 5, tmp_path / "b", seed=3, batch_size=2)
    other = generation.save_samples(g64, 5, tmp_path / "c", seed=4, batch_size=2)
    trunc = generation.save_samples(g64, 5, tmp_path / "d", seed=3, truncation=0.3, batch_size=2)
    assert [p.name for p in first] == [f"seed3_{i:05d}.png" for i in range(5)]
    assert trunc[0].name == "seed3_psi0.3_00000.png"
    assert all(Image.open(p).size == (64, 64) and Image.open(p).mode == "RGB" for p in first)
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in again]
    assert all(p.read_bytes() != q.read_bytes() for p, q in zip(first, other))
    assert all(p.read_bytes() != q.read_bytes() for p, q in zip(first, trunc))
    # The files hold exactly the images of the FID sample stream (same seed, same batches).
    stream = generation.generate(g64, 5, seed=3, batch_size=2)
    np.testing.assert_array_equal(np.stack([np.asarray(Image.open(p)) for p in first]), stream)


def test_grid_has_one_cell_per_sample(g64, tmp_path):
    path = generation.save_grid(g64, 6, tmp_path / "grid.png", seed=0, batch_size=3)
    assert Image.open(path).size == (3 * 66 + 2, 2 * 66 + 2)  # 3 per row, 2 px padding


def test_frames_do_not_depend_on_their_neighbours(g64):
    """Each frame is rendered with fixed anchors: rendering it alone gives the same image."""
    latents = np.random.default_rng(2).standard_normal((4, NZ)).astype(np.float32)
    frames = generation.render_frames(g64, latents, seed=1, batch_size=4)
    alone = generation.render_frames(g64, latents[2:3], seed=1, batch_size=4)
    assert frames.shape == (4, 64, 64, 3) and frames.dtype == np.uint8
    np.testing.assert_array_equal(frames[2], alone[0])
    assert not np.array_equal(frames[1], frames[2])


def test_interpolation_writes_frames_and_a_looping_gif(g64, tmp_path):
    frames, gif = generation.save_interpolation(g64, tmp_path, keyframes=3, frames=2, seed=0,
                                                batch_size=2)
    assert len(frames) == 6 and all(p.exists() for p in frames)
    with Image.open(gif) as image:
        assert image.n_frames == 6 and image.size == (64, 64) and image.info["loop"] == 0
    with pytest.raises(UserError):
        generation.save_interpolation(g64, tmp_path, keyframes=1)


# --------------------------------------------------------------------------- style mixing


def test_style_mix_swaps_gates_per_column_and_skips_se_64(g256, monkeypatch):
    rng = np.random.default_rng(0)
    z_a, z_b = rng.standard_normal((2, 3, NZ)).astype(np.float32)
    mixed = generation.style_mix(g256, z_a, z_b, (0, 0))
    assert mixed.shape == (3, 3, 256, 256, 3)
    np.testing.assert_array_equal(mixed, generation.style_mix(g256, z_a, z_b, (0, 0)))
    assert not np.allclose(mixed[:, 0], mixed[:, 1])  # the style source matters
    assert not np.allclose(mixed[0], mixed[1])  # and so does the content
    # Cell [i, j] belongs to the pair (A_i, B_j), not to its position: permuting the latents
    # permutes rows and columns (BatchNorm statistics do not depend on the order; the
    # untrained noise weights are 0, so per-row noise does not matter here).
    rows, cols = [2, 0, 1], [1, 2, 0]
    permuted = generation.style_mix(g256, z_a[rows], z_b[cols], (0, 0))
    np.testing.assert_allclose(permuted, mixed[rows][:, cols], rtol=1e-4, atol=1e-4)

    def boom(*args, **kwargs):
        raise AssertionError("se_64 must be skipped")

    monkeypatch.setattr(g256.se_64, "call", boom)
    with pytest.raises(AssertionError):
        g256(tf.constant(z_a), training=False)
    generation.style_mix(g256, z_a, z_b, (0, 0))  # never touches se_64


def test_style_mix_of_a_latent_with_itself_is_a_forward_pass_without_se_64(g256, monkeypatch):
    """What holds when content == style: style mixing leaves se_64 off (as the reference), and
    BatchNorm couples each column's batch, whose rows all get the gates of one style latent."""
    z = np.random.default_rng(3).standard_normal((3, NZ)).astype(np.float32)
    seed = tf.constant([0, 0], tf.int64)
    mixed = generation.style_mix(g256, z, z, (0, 0))
    with_se_64 = g256(tf.constant(z), training=False, noise_seed=seed)[0].numpy()
    monkeypatch.setattr(g256.se_64, "call", lambda small, big, training=False: big)

    def forward(latents):
        return g256(tf.constant(latents), training=False, noise_seed=seed)[0].numpy()

    # A batch of one: nothing else in the batch, so the cell is exactly the forward pass.
    np.testing.assert_array_equal(generation.style_mix(g256, z[:1], z[:1], (0, 0))[0, 0],
                                  forward(z[:1])[0])
    # Copies of one latent: every column batch is the forward batch, so every cell matches.
    copies = np.repeat(z[:1], 3, axis=0)
    np.testing.assert_array_equal(generation.style_mix(g256, copies, copies, (0, 0)),
                                  np.repeat(forward(copies)[:, None], 3, axis=1))
    # Distinct latents: in column j every row gets latent j's gates, so the batch statistics
    # after se_128 are not the forward pass's, and even the diagonal differs from it.
    without_se_64 = forward(z)
    for i in range(3):
        assert np.abs(mixed[i, i] - without_se_64[i]).max() > 1e-3
        assert np.abs(mixed[i, i] - with_se_64[i]).max() > 1e-3


def test_style_mix_grid_layout(g256):
    grid = generation.style_mix_grid(g256, n=2, seed=5)
    again = generation.style_mix_grid(g256, n=2, seed=5)
    assert grid.shape == (3 * 258 + 2, 3 * 258 + 2, 3)
    np.testing.assert_array_equal(grid, again)
    assert (grid[2:258, 2:258] == 255).all()  # the empty corner
    # Headers are the plain generator outputs of the same latents and noise seed.
    rng = np.random.default_rng(5)
    z_a = truncated_normal(rng, (2, NZ), None)
    z_b = truncated_normal(rng, (2, NZ), None)
    seed = tf.constant([5, 0], tf.int64)
    heads_b = to_uint8(g256(tf.constant(z_b), training=False, noise_seed=seed)[0])
    heads_a = to_uint8(g256(tf.constant(z_a), training=False, noise_seed=seed)[0])
    np.testing.assert_array_equal(grid[2:258, 260:516], heads_b[0])
    np.testing.assert_array_equal(grid[260:516, 2:258], heads_a[0])


def test_style_mix_needs_256(g64):
    with pytest.raises(UserError, match="256px"):
        generation.style_mix_grid(g64, n=2)


# --------------------------------------------------------------------------- nearest neighbours


def test_downsample_is_a_block_mean():
    images = np.random.default_rng(0).integers(0, 256, (2, 128, 128, 3), dtype=np.uint8)
    small = generation.downsample(images, 64).reshape(2, 64, 64, 3)
    manual = images[:, 0::2, 0::2].astype(np.float64) + images[:, 1::2, 0::2] \
        + images[:, 0::2, 1::2] + images[:, 1::2, 1::2]
    np.testing.assert_allclose(small, manual / 4 / 255, rtol=1e-6)


def test_nearest_neighbours_find_a_planted_duplicate():
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (20, 64, 64, 3), dtype=np.uint8)
    noisy = np.clip(train[11].astype(int) + rng.integers(-3, 4, train[11].shape), 0, 255)
    queries = np.stack([train[7], noisy.astype(np.uint8),
                        rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)])
    idx, dist = generation.nearest_neighbours(queries, train, k=4, chunk=2)
    assert idx.shape == dist.shape == (3, 4)
    assert idx[0, 0] == 7 and dist[0, 0] == pytest.approx(0.0, abs=1e-6)
    assert idx[1, 0] == 11 and dist[1, 0] < 0.02 < dist[1, 1]
    # Brute force in float64 on the same 64x64 copies.
    q = queries.reshape(3, -1).astype(np.float64) / 255
    r = train.reshape(20, -1).astype(np.float64) / 255
    brute = np.sqrt(((q[:, None] - r[None]) ** 2).mean(axis=2))
    np.testing.assert_array_equal(idx, np.argsort(brute, axis=1, kind="stable")[:, :4])
    np.testing.assert_allclose(dist, np.sort(brute, axis=1)[:, :4], atol=1e-6)
    grid = generation.nearest_grid(queries, train, idx)
    assert grid.shape == (3 * 66 + 2, 5 * 66 + 2, 3)
    np.testing.assert_array_equal(grid[2:66, 68:132], train[7])


# --------------------------------------------------------------------------- export


RELOAD = textwrap.dedent("""
    import sys
    import numpy as np
    import tensorflow as tf
    model = tf.saved_model.load(sys.argv[1])
    z = tf.constant(np.load(sys.argv[2]))
    plain = model.signatures["serving_default"](z=z)
    seeded = model.signatures["generate_with_noise_seed"](
        z=z, noise_seed=tf.constant([7, 0], tf.int64))
    np.savez(sys.argv[3], images=plain["images"].numpy(), floats=plain["images_float"].numpy(),
             seeded=seeded["images_float"].numpy())
    assert not [m for m in sys.modules if m.startswith("fastgan_tf")]
""")


@pytest.mark.slow
def test_export_reloads_in_a_fresh_process_without_fastgan_tf(g64, tmp_path):
    out = tmp_path / "exported"
    info = export_generator(g64, out, {"run": "r", "checkpoint": "ckpt-2"})
    assert info["generator"]["nz"] == NZ
    readme = (out / "README.txt").read_text()
    assert 'tf.saved_model.load("exported")' in readme and "checkpoint ckpt-2" in readme
    assert json.loads((out / "generator.json").read_text())["generator"]["resolution"] == 64
    z = np.random.default_rng(0).standard_normal((4, NZ)).astype(np.float32)
    np.save(tmp_path / "z.npy", z)
    script = tmp_path / "reload.py"
    script.write_text(RELOAD)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(CUDA_VISIBLE_DEVICES="-1", TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, str(script), str(out), str(tmp_path / "z.npy"),
                           str(tmp_path / "out.npz")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    got = np.load(tmp_path / "out.npz")
    expect = g64(tf.constant(z), training=False, noise_seed=tf.constant([0, 0], tf.int64))[0]
    expect = np.clip(expect.numpy(), -1, 1)
    np.testing.assert_allclose(got["floats"], expect, atol=1e-5)
    assert np.abs(got["images"].astype(int) - to_uint8(expect).astype(int)).max() <= 1
    seeded = g64(tf.constant(z), training=False, noise_seed=tf.constant([7, 0], tf.int64))[0]
    np.testing.assert_allclose(got["seeded"], np.clip(seeded.numpy(), -1, 1), atol=1e-5)
    assert not np.allclose(got["seeded"], got["floats"])


def test_tflite_graph_rewrites_keep_the_values():
    """The frozen-graph rewrites behind the TFLite export: noise drawn into constants, float64
    arithmetic done in float32, the rest untouched."""
    spec = tf.TensorSpec([3, 4], tf.float32, name="z")

    def f(z):
        noise = tf.random.stateless_normal([3, 4], seed=tf.constant([5, 0], tf.int64))
        total = tf.cast(tf.reduce_sum(tf.cast(z, tf.float64)) / 12.0, tf.float32)
        return {"out": z + noise - total}

    graph_def = tf.function(f, input_signature=[spec]).get_concrete_function() \
        .graph.as_graph_def()
    graph_def = export._float64_as_float32(export._noise_as_constants(graph_def, "z:0", spec))
    ops = {node.op for node in graph_def.node}
    assert "StatelessRandomNormalV2" not in ops and "Cast" not in ops  # (its seed ops are dead)
    assert not [node.name for node in graph_def.node
                if any(attr.type == tf.float64 for attr in node.attr.values())]
    rewritten = export._graph_function(graph_def, "z:0", spec, {"out": "Identity:0"})
    z = tf.constant(np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32))
    np.testing.assert_allclose(rewritten(z)["out"], f(z)["out"], atol=1e-6)
    assert export._conversion_error(ValueError("loc(x)\nTF Select ops: Sum, RealDiv\nDetails")) \
        == "no builtin TFLite op for Sum, RealDiv"


def _run_tflite(model, z):
    """serving_default of a TFLite model (a file, or the model's bytes) on z."""
    source = {"model_content": model} if isinstance(model, bytes) else {"model_path": str(model)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # tf.lite.Interpreter's deprecation notice
        interpreter = tf.lite.Interpreter(**source)
    return interpreter.get_signature_runner("serving_default")(z=z)


def test_float16_weights_keep_small_constants_in_float32():
    """The float16 pass stores the large constants as float16 and keeps the small ones, such as
    BatchNorm's value count B*H*W (262144 here, inf in float16), in float32."""
    weight = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    module = tf.Module()
    module.f = tf.function(
        lambda z: {"y": tf.matmul(z, weight), "count": z[:, :1] * 0.0 + 262144.0},
        input_signature=[tf.TensorSpec([4, 64], tf.float32, name="z")])
    float32 = tf.lite.TFLiteConverter.from_concrete_functions(
        [module.f.get_concrete_function()], module).convert()
    float16 = export._with_float16_weights(float32)
    assert len(float16) < 0.6 * len(float32)
    z = np.random.default_rng(1).standard_normal((4, 64)).astype(np.float32)
    for model, w in ((float32, weight), (float16, weight.astype(np.float16))):
        got = _run_tflite(model, z)
        np.testing.assert_allclose(got["y"], z @ w.astype(np.float32), rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(got["count"], 262144.0)


@pytest.mark.slow
def test_tflite_models_match_the_saved_model(tmp_path):
    # 128px: BatchNorm there averages 16 x 128 x 128 values, a count float16 cannot hold.
    generator = _with_noise(Generator(128, ngf=8, nz=NZ, seed=5).build_for_restore())
    out = tmp_path / "exported"
    info = export_generator(generator, out, {"run": "r"}, tflite=True)
    assert info["tflite"]["inputs"] == {"z": ["float32", [16, NZ]]}
    assert info["tflite"]["files"] == {"float32": "generator.tflite",
                                       "float16": "generator_fp16.tflite"}
    readme = (out / "README.txt").read_text()
    assert 'tf.lite.Interpreter(model_path="exported/generator.tflite")' in readme
    assert "standard_normal((16, 16))" in readme and "(16, 128, 128, 3)" in readme
    z = np.random.default_rng(5).standard_normal((16, NZ)).astype(np.float32)
    served = tf.saved_model.load(str(out)).signatures["serving_default"](z=tf.constant(z))
    expect_float, expect = served["images_float"].numpy(), served["images"].numpy().astype(int)
    got = {weights: _run_tflite(out / name, z) for weights, name in TFLITE_FILES.items()}
    assert all(result["images"].dtype == np.uint8
               and result["images"].shape == (16, 128, 128, 3) for result in got.values())

    # float32 weights: the SavedModel's arithmetic up to float32 rounding (the noise of seed
    # (0, 0) stored as constants), so a pixel differs only where its value is a rounding tie.
    np.testing.assert_allclose(got["float32"]["images_float"], expect_float, atol=1e-5)
    differs = got["float32"]["images"].astype(int) != expect
    near_tie = np.abs((expect_float + 1.0) * 127.5 % 1.0 - 0.5) < 1e-3
    assert not (differs & ~near_tie).any()

    # float16 weights: half the size, close.
    sizes = {weights: (out / name).stat().st_size for weights, name in TFLITE_FILES.items()}
    assert sizes["float16"] < 0.6 * sizes["float32"]
    np.testing.assert_allclose(got["float16"]["images_float"], expect_float, atol=0.01)
    off = np.abs(got["float16"]["images"].astype(int) - expect)
    assert off.max() <= 2 and off.mean() < 0.05


def test_keras_archive_round_trip_and_export_target_checks(g64, tmp_path):
    out = tmp_path / "exported"
    export_generator(g64, out)
    export_generator(g64, out)  # re-exporting over an earlier export is fine
    assert sorted(p.name for p in out.glob("*.keras")) == ["generator.keras"]  # no partial left
    rebuilt = load_keras_export(out)
    assert type(rebuilt) is Generator and rebuilt.get_config() == g64.get_config()
    z = tf.constant(np.random.default_rng(1).standard_normal((3, NZ)).astype(np.float32))
    seed = tf.constant([1, 2], tf.int64)
    for got, expect in zip(rebuilt(z, training=False, noise_seed=seed),
                           g64(z, training=False, noise_seed=seed)):
        np.testing.assert_array_equal(got, expect)
    assert {v.path: v.numpy().tobytes() for v in rebuilt.weights} == \
        {v.path: v.numpy().tobytes() for v in g64.weights}  # SN u vectors and noise weights too
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not an earlier export"):
        export_generator(g64, tmp_path / "busy")
    with pytest.raises(UserError, match="has no generator.keras"):
        load_keras_export(tmp_path / "busy")


def test_ssd_generator_exports_too(tmp_path):
    g = SSDGenerator(nz=NZ, ngf=8).build_for_restore()
    info = export_generator(g, tmp_path / "ssd")
    assert info["generator"] == {"class": "SSDGenerator", "nz": NZ, "ngf": 8,
                                 "name": "ssd_generator", "channels": 3}
    z = tf.constant(np.random.default_rng(2).standard_normal((2, NZ)).astype(np.float32))
    np.testing.assert_array_equal(load_keras_export(tmp_path / "ssd")(z)[0], g(z)[0])
    served = tf.saved_model.load(str(tmp_path / "ssd")).signatures["serving_default"](z=z)
    assert served["images"].shape == (2, 64, 64, 3)


def test_greyscale_export_has_one_channel_everywhere(tmp_path):
    g = Generator(64, ngf=8, nz=NZ, channels=1, seed=4).build_for_restore()
    info = export_generator(g, tmp_path / "grey")
    assert info["generator"]["channels"] == 1
    assert info["signatures"]["outputs"]["images"] == "uint8 (N, H, W, 1)"
    readme = (tmp_path / "grey" / "README.txt").read_text()
    assert "64x64 greyscale" in readme and "(16, 64, 64, 1)" in readme
    z = tf.constant(np.random.default_rng(3).standard_normal((2, NZ)).astype(np.float32))
    served = tf.saved_model.load(str(tmp_path / "grey")).signatures["serving_default"](z=z)
    assert served["images"].shape == (2, 64, 64, 1)
    assert load_keras_export(tmp_path / "grey").channels == 1
