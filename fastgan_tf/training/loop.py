"""The training loop: run folders, resume, epochs, logs, samples, checkpoints and Ctrl-C.

A run folder holds everything about one run::

    checkpoints/<run>/config.yaml     resolved configuration (compared on resume)
    checkpoints/<run>/dataset.json    what was trained on (counts, skipped files, fingerprint)
    checkpoints/<run>/ckpt/           tf.train checkpoints (G, D, EMA G, optimizers, RNG, counters)
    checkpoints/<run>/samples/        PNG grids: EMA generator on fixed noise, reconstructions
    checkpoints/<run>/metrics.jsonl   one JSON line per logged step and per epoch
    checkpoints/<run>/tensorboard/    the same numbers and grids for TensorBoard

Re-running the same command finds the folder and resumes from its newest good checkpoint,
mid-epoch if the last save was mid-epoch: epochs are shuffled from (seed, epoch), so the
remaining batches of an epoch are known.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from datetime import datetime
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from fastgan_tf import config as config_lib
from fastgan_tf.checkpoints import Checkpoints, RunLock
from fastgan_tf.config import TrainConfig
from fastgan_tf.data import make_epoch_dataset, steps_per_epoch
from fastgan_tf.errors import UserError
from fastgan_tf.io import atomic_write_text
from fastgan_tf.progress import progress
from fastgan_tf.training.dataset import TrainingImages, load_training_images
from fastgan_tf.training.fastgan import FastGAN, build_discriminator, build_generator
from fastgan_tf.training.fid import FidTracker
from fastgan_tf.training.logs import RunLog
from fastgan_tf.training.precision import resolve_mixed_precision, set_policy
from fastgan_tf.visualize import make_grid, save_image_grid

EXIT_INTERRUPTED = 130


def say(message: str) -> None:
    """Status lines go to stderr so that stdout stays machine-readable (--dry-run JSON)."""
    print(message, file=sys.stderr, flush=True)


def run_directory(cfg: TrainConfig, dataset_name: str) -> Path:
    return Path(cfg.out) / (cfg.run_name or f"{dataset_name}-{cfg.resolution}")


def train(cfg: TrainConfig, fresh: bool = False, dry_run: bool = False) -> int:
    """Train (or resume) the run described by `cfg`; returns the process exit code."""
    data = load_training_images(cfg)
    run_dir = run_directory(cfg, data.name)
    if dry_run:
        return dry_run_report(cfg, data, run_dir)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with RunLock(run_dir.parent / f".{run_dir.name}.lock"):
        if fresh and run_dir.exists():
            moved = _move_aside(run_dir)
            say(f"--fresh: the previous run was moved to {moved}")
        return Trainer(cfg, data, run_dir).run()


def dry_run_report(cfg: TrainConfig, data: TrainingImages, run_dir: Path) -> int:
    """Validate everything a run needs, print one JSON object on stdout, train nothing."""
    from fastgan_tf.models import count_params

    steps_per_epoch(len(data.images), cfg.batch_size)
    _check_recon_weights(cfg)
    resolved = config_lib.TrainConfig(**cfg.to_dict())
    resolved.mixed_precision = resolve_mixed_precision(cfg.mixed_precision)
    report = {
        "config": resolved.to_dict(),
        "params": {"generator": count_params(build_generator(cfg)),
                   "discriminator": count_params(build_discriminator(cfg))},
        "dataset": data.summary,
        "run_dir": str(run_dir),
        "resumes": (run_dir / "config.yaml").exists(),
    }
    print(json.dumps(report, indent=2))
    return 0


def _check_recon_weights(cfg: TrainConfig) -> None:
    """Fail before any training when LPIPS needs VGG16 weights that cannot be had.

    Downloads them into the Keras cache when online; offline, the one-line error names the file,
    where to put it, and `--recon-loss l1`.
    """
    if cfg.recon_loss != "lpips":
        return
    if cfg.vgg_weights:
        if not Path(cfg.vgg_weights).is_file():
            raise UserError(f"--vgg-weights {cfg.vgg_weights}: no such file; pass the path of "
                            "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5 or use --recon-loss l1")
        return
    from fastgan_tf.lpips import fetch_vgg16_weights

    fetch_vgg16_weights()


def _move_aside(run_dir: Path) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    target = run_dir.with_name(f"{run_dir.name}.old-{stamp}")
    run_dir.rename(target)
    return target


class GracefulStop:
    """First Ctrl-C (or SIGTERM): finish the step, save, exit. Second Ctrl-C: exit at once."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __enter__(self) -> GracefulStop:
        for sig in (signal.SIGINT, getattr(signal, "SIGTERM", None)):
            if sig is not None:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        say("\nStopping: saving a checkpoint after this step (press Ctrl-C again to quit now; "
            "the last saved checkpoint stays intact).")

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Trainer:
    """Runs the epochs of one run folder, resuming it if it has a checkpoint."""

    def __init__(self, cfg: TrainConfig, data: TrainingImages, run_dir: Path):
        self.cfg = cfg
        self.data = data
        self.run_dir = run_dir
        self.steps_per_epoch = steps_per_epoch(len(data.images), cfg.batch_size)

    # ----------------------------------------------------------------------------- setup
    def _reconcile_config(self) -> None:
        """Compare with the run's saved config; adopt its precision when 'auto' was asked for."""
        saved_path = self.run_dir / "config.yaml"
        if not saved_path.exists():
            self.cfg.mixed_precision = resolve_mixed_precision(self.cfg.mixed_precision)
            return
        saved = config_lib.load_saved(saved_path)
        if self.cfg.mixed_precision == "auto":
            self.cfg.mixed_precision = saved.mixed_precision
        problems = config_lib.state_mismatches(saved, self.cfg)
        if problems:
            raise UserError(
                f"cannot resume {self.run_dir} with different settings ({'; '.join(problems)}); "
                "re-run with the run's settings, add --fresh to start over (the old run is kept), "
                "or pass --run-name NEW to train in another folder")

    def _check_dataset(self) -> None:
        info_path = self.run_dir / "dataset.json"
        if info_path.exists():
            before = json.loads(info_path.read_text(encoding="utf-8")).get("fingerprint")
            if before != self.data.fingerprint:
                say(f"warning: the images of {self.cfg.dataset} changed since this run started; "
                    "training continues on the current files (resume is no longer bit-exact)")
        summary = dict(self.data.summary, fingerprint=self.data.fingerprint)
        atomic_write_text(info_path, json.dumps(summary, indent=2))

    def _setup(self) -> None:
        cfg = self.cfg
        self._reconcile_config()
        keras.utils.set_random_seed(cfg.seed)
        if cfg.deterministic:
            tf.config.experimental.enable_op_determinism()
        set_policy(cfg.mixed_precision == "on")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        _check_recon_weights(cfg)
        from fastgan_tf.losses import reconstruction_loss

        recon = reconstruction_loss(cfg.recon_loss, vgg_weights=cfg.vgg_weights or "imagenet")
        self.gan = FastGAN(cfg, recon, mixed=cfg.mixed_precision == "on")
        self.checkpoints = Checkpoints(self.run_dir / "ckpt", cfg.keep_checkpoints,
                                       **self.gan.trackables())
        self.log = RunLog(self.run_dir)
        self.fid = FidTracker(self.run_dir, self.gan, self.data.images, self.data.fingerprint,
                              cfg.fid_samples, cfg.fid_backbone, cfg.inception_weights)
        self._resume()
        config_lib.save(cfg, self.run_dir / "config.yaml")
        self._check_dataset()

    def _resume(self) -> None:
        restored = self.checkpoints.restore_latest()
        for path, reason in restored.skipped:
            say(f"warning: checkpoint {path} could not be restored ({reason}); it is kept, and "
                "the previous one is used")
        if restored.path is None and restored.skipped:
            raise UserError(
                f"no checkpoint in {self.checkpoints.directory} could be restored; the files are "
                "kept. Start over with --fresh (the old run is moved aside)")
        if restored.path is None:
            say(f"Starting a new run in {self.run_dir}")
            return
        step, epoch = int(self.gan.step.numpy()), int(self.gan.epoch.numpy())
        say(f"Resuming {self.run_dir} from {Path(restored.path).name} "
            f"(epoch {epoch}, batch {int(self.gan.batch_in_epoch.numpy())}, step {step})")
        self.log.forget_after(step)

    # ----------------------------------------------------------------------------- loop
    def run(self) -> int:
        self._setup()
        cfg, gan = self.cfg, self.gan
        start_epoch = int(gan.epoch.numpy())
        if start_epoch >= cfg.epochs:
            say(f"{self.run_dir} has already trained {start_epoch} epochs (asked for {cfg.epochs}); "
                "nothing to do. Pass a larger --epochs to continue.")
            return 0
        say(f"Training {len(self.data.images)} images at {cfg.resolution}px, batch "
            f"{cfg.batch_size}, {self.steps_per_epoch} steps/epoch, epochs {start_epoch}->"
            f"{cfg.epochs}, mixed precision {cfg.mixed_precision}, recon {cfg.recon_loss}")
        with GracefulStop() as stop:
            for epoch in range(start_epoch, cfg.epochs):
                if not self._run_epoch(epoch, stop):
                    self._save()
                    say(f"Saved; re-run the same command to resume from step {int(gan.step.numpy())}.")
                    return EXIT_INTERRUPTED
                gan.epoch.assign_add(1)
                gan.batch_in_epoch.assign(0)
                self._end_of_epoch(epoch + 1)
        self.log.close()
        say(f"Done: {cfg.epochs} epochs. Samples in {self.run_dir / 'samples'}.")
        return 0

    def _run_epoch(self, epoch: int, stop: GracefulStop) -> bool:
        """Train the remaining batches of `epoch`; False if a stop was requested."""
        cfg, gan = self.cfg, self.gan
        done = int(gan.batch_in_epoch.numpy())
        batches = make_epoch_dataset(self.data.images, cfg.batch_size, cfg.seed, epoch,
                                     skip_batches=done)
        started = time.perf_counter()
        sums: dict[str, float] = {}
        bar = progress(batches, total=self.steps_per_epoch - done,
                       desc=f"epoch {epoch + 1}/{cfg.epochs}")
        for real in bar:
            if stop.requested:
                return False
            stats = {k: float(v) for k, v in gan.train_step(real).items()}
            self._check_finite(stats, epoch)
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + v
            bar.set_postfix(d=stats["d_loss"], g=stats["g_loss"], rec=stats["recon"])
            step = int(gan.step.numpy())
            if step % cfg.log_every == 0:
                self.log.write(dict(kind="step", step=step, epoch=epoch, **stats))
        if stop.requested:
            return False
        count = max(self.steps_per_epoch - done, 1)
        self.log.write(dict(kind="epoch", step=int(gan.step.numpy()), epoch=epoch + 1,
                            seconds=time.perf_counter() - started,
                            **{k: v / count for k, v in sums.items()}), prefix="epoch")
        return True

    def _check_finite(self, stats: dict, epoch: int) -> None:
        bad = [k for k, v in stats.items() if not np.isfinite(v)]
        if bad:
            latest = self.checkpoints.manager.latest_checkpoint or "none"
            raise UserError(
                f"non-finite {', '.join(bad)} at step {int(self.gan.step.numpy())} (epoch "
                f"{epoch + 1}); nothing was saved after it, the last good checkpoint is {latest}. "
                "Re-run to resume from it, or lower --lr / use --mixed-precision off")

    def _end_of_epoch(self, epochs_done: int) -> None:
        cfg = self.cfg
        last = epochs_done == cfg.epochs
        if epochs_done % cfg.sample_every == 0 or last:
            self._write_samples(epochs_done)
        if cfg.fid_every and (epochs_done % cfg.fid_every == 0 or last):
            self._track_fid(epochs_done)
        if epochs_done % cfg.checkpoint_every == 0 or last:
            self._save()

    def _track_fid(self, epoch: int) -> None:
        record = self.fid.evaluate(epoch, int(self.gan.step.numpy()))
        if record is None:
            return
        self.log.write(record, prefix="fid")
        best = " (best so far, saved to best/)" if record.get("best") else ""
        kid = f", KID {record['kid_mean']:.4f}" if "kid_mean" in record else ""
        say(f"epoch {epoch}: FID {record['fid']:.2f}{kid} ({record['backbone']} backbone, "
            f"{record['num_fake']} generated vs {record['num_real']} real){best}")

    def _save(self) -> None:
        self.checkpoints.save(int(self.gan.step.numpy()))

    def _write_samples(self, epoch: int) -> None:
        """PNG grids of the EMA generator on fixed noise and of the decoders' reconstructions."""
        samples_dir = self.run_dir / "samples"
        fakes = self.gan.sample().numpy()
        save_image_grid(fakes, samples_dir / f"fakes_epoch{epoch:05d}.png", nrow=4)
        real = self.data.images[:8].astype(np.float32) / 127.5 - 1.0
        columns = [c.numpy() for c in self.gan.reconstruct(tf.constant(real))]
        rows = np.stack(columns, axis=1).reshape(-1, *columns[0].shape[1:])
        save_image_grid(rows, samples_dir / f"recon_epoch{epoch:05d}.png", nrow=len(columns))
        step = int(self.gan.step.numpy())
        self.log.image("samples/fakes", make_grid(fakes, nrow=4), step)
        self.log.image("samples/reconstructions", make_grid(rows, nrow=len(columns)), step)
