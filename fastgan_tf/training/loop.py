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

Faults (see RELIABILITY.md): a fresh run saves `ckpt-0` before its first step, so there is always
a checkpoint to go back to. A NaN/Inf loss rolls back to the newest good checkpoint and retries
differently (training/recovery.py), at most `max_nan_retries` times per checkpoint; weights are
checked to be finite before every checkpoint, so none holds NaNs. A checkpoint that cannot be
written stops training with the reason (the previous one is intact); sample grids, metrics and
FID that cannot be written only warn: the run goes on as long as it can checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import time
from datetime import datetime
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from fastgan_tf import config as config_lib
from fastgan_tf.checkpoints import Checkpoints, Restored, checkpoint_number
from fastgan_tf.config import TrainConfig
from fastgan_tf.data import make_epoch_dataset, steps_per_epoch
from fastgan_tf.data.resolve import moved_path
from fastgan_tf.errors import UserError, reason_of
from fastgan_tf.io import atomic_write_text
from fastgan_tf.metrics.diversity import Reference, pixel_features
from fastgan_tf.models import count_params
from fastgan_tf.oscompat import check_path_length, retry_while_busy
from fastgan_tf.progress import progress
from fastgan_tf.runlock import RunLock
from fastgan_tf.schedule import Budget, format_duration, parse_every
from fastgan_tf.training import registry
from fastgan_tf.training.compat import restore_objects
from fastgan_tf.training.dataset import TrainingImages, load_training_images
from fastgan_tf.training.distribute import make_strategy, worker_run_dir
from fastgan_tf.training.fid import FidTracker
from fastgan_tf.training.health import HealthMonitor
from fastgan_tf.training.logs import RunLog
from fastgan_tf.training.memory import estimate_for_config
from fastgan_tf.training.precision import (
    gpu_capabilities,
    loss_scaling,
    resolve_mixed_precision,
    set_policy,
    slow_combination,
    slow_lpips_precision,
)
from fastgan_tf.training.recovery import Recovery, vary
from fastgan_tf.training.signals import GracefulStop
from fastgan_tf.visualize import make_grid, save_image_grid

log = logging.getLogger(__name__)

EXIT_INTERRUPTED = 130
DONE, STOPPED, ROLLED_BACK = "done", "stopped", "rolled back"
OUT_OF_TIME, EARLY_STOP = "out of time", "early stop"


def run_directory(cfg: TrainConfig, dataset_name: str) -> Path:
    return Path(cfg.out) / (cfg.run_name or f"{dataset_name}-{cfg.resolution}")


def train(cfg: TrainConfig, fresh: bool = False, stop: GracefulStop | None = None) -> int:
    """Train (or resume) the run described by `cfg`; returns the process exit code.

    A program that trains from another thread can pass `stop` and call `stop.request()` to end
    the run as a Ctrl-C would (signals only reach the main thread).
    """
    _weights_here(cfg)
    data = load_training_images(cfg)
    run_dir = run_directory(cfg, data.name)
    strategy = make_strategy(cfg.strategy)  # before TensorFlow's first op
    if cfg.time_limit and isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        raise UserError("--time-limit is measured by each worker's own clock, so workers could stop "
                        "at different steps and hang; with --strategy multiworker use --steps or "
                        "--epochs")
    run_dir = worker_run_dir(run_dir, strategy)  # non-chief workers: own folder
    check_path_length(run_dir)
    with RunLock(run_dir.parent / f".{run_dir.name}.lock"):
        if fresh and run_dir.exists():
            moved = _move_aside(run_dir)
            log.info(f"--fresh: the previous run was moved to {moved}")
        return Trainer(cfg, data, run_dir, strategy, stop).run()


def dry_run(cfg: TrainConfig) -> dict:
    """Validate everything a run needs and describe it (JSON-friendly); train nothing."""
    _weights_here(cfg)
    data = load_training_images(cfg)
    run_dir = run_directory(cfg, data.name)
    check_path_length(run_dir)
    spec = registry.get(cfg.model)
    steps_per_epoch(len(data.images), cfg.batch_size)
    _check_recon_weights(cfg)
    resolved = config_lib.TrainConfig(**cfg.to_dict())
    resolved.mixed_precision = resolve_mixed_precision(cfg.mixed_precision, cfg.deterministic)
    return {
        "config": resolved.to_dict(),
        "params": {"generator": count_params(spec.build_generator(cfg)),
                   "discriminator": count_params(spec.build_discriminator(cfg))},
        "dataset": data.summary,
        "memory_estimate": estimate_for_config(cfg),  # device memory of one step
        "run_dir": str(run_dir),
        "resumes": (run_dir / "config.yaml").exists(),
    }


def _weights_here(cfg: TrainConfig) -> None:
    """Weights files given with the other side's paths (a run moved between WSL2 and Windows)
    are used where they are here (the dataset and data dir are found by resolve_dataset)."""
    for key in ("vgg_weights", "inception_weights"):
        if getattr(cfg, key):
            setattr(cfg, key, moved_path(getattr(cfg, key)) or getattr(cfg, key))


def _check_recon_weights(cfg: TrainConfig) -> None:
    """Fail before any training when LPIPS needs VGG16 weights that cannot be had.

    Downloads them into the Keras cache when online; offline, the one-line error names the file,
    where to put it, and `--recon-loss l1`.
    """
    if not registry.get(cfg.model).needs_vgg(cfg):
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
    try:
        retry_while_busy(run_dir.rename, target)
    except OSError as e:
        raise UserError(f"--fresh: cannot move {run_dir} aside to {target.name}: {reason_of(e)}; "
                        "nothing was changed") from None
    return target


def _write_or_stop(path: Path, write) -> None:
    """Write a file training cannot go on without; a failure is a one-line error."""
    try:
        write()
    except OSError as e:
        raise UserError(f"cannot write {path}: {reason_of(e)}; free disk space or fix "
                        "permissions, then re-run the same command (nothing else was changed)") \
            from None


def _finite_checker(trackables: dict):
    """A check that every float variable of the checkpointed state is finite.

    Eager on purpose: it runs only when something is about to be written, and tracing a
    function over hundreds of variables would cost more than it saves.
    """
    variables = []
    for obj in trackables.values():
        for v in getattr(obj, "variables", None) or ([obj] if isinstance(obj, tf.Variable) else []):
            if "float" in str(v.dtype):
                variables.append(v)

    def all_finite() -> bool:
        return all(bool(tf.reduce_all(tf.math.is_finite(tf.convert_to_tensor(v))))
                   for v in variables)

    return all_finite


class Trainer:
    """Runs the epochs of one run folder, resuming it if it has a checkpoint."""

    def __init__(self, cfg: TrainConfig, data: TrainingImages, run_dir: Path,
                 strategy: tf.distribute.Strategy | None = None, stop: GracefulStop | None = None):
        self.cfg = cfg
        self.strategy = strategy
        self.stop = stop or GracefulStop()
        self.data = data
        self.run_dir = run_dir
        self.steps_per_epoch = steps_per_epoch(len(data.images), cfg.batch_size)
        self.budget = Budget.of(cfg)
        self._accounted = 0.0  # seconds of this invocation already added to train_seconds
        self.cadences = {"samples": parse_every(cfg.sample_every),
                         "fid": parse_every(cfg.fid_every),
                         "checkpoint": parse_every(cfg.checkpoint_every)}
        self._failing: set[str] = set()  # best-effort writes that are failing (warned once)

    # ----------------------------------------------------------------------------- setup
    def _reconcile_config(self) -> None:
        """Compare with the run's saved config: refuse what would not fit the trained state,
        say what else changed. Precision is decided for this machine, whatever the run used."""
        asked, on_gpu = self.cfg.mixed_precision, bool(tf.config.list_logical_devices("GPU"))
        self.cfg.mixed_precision = resolve_mixed_precision(asked, self.cfg.deterministic)
        if asked == "auto" and self.cfg.mixed_precision == "bf16" and not on_gpu:
            log.info("--mixed-precision auto: bfloat16 on this CPU (AMX or AVX512_BF16); "
                     "--mixed-precision off trains in float32")
        slow = [slow_combination(self.cfg.mixed_precision, self.cfg.deterministic, on_gpu)]
        if self.cfg.decoders and self.cfg.recon_loss == "lpips":
            slow.append(slow_lpips_precision(self.cfg.lpips_precision, self.cfg.deterministic,
                                             on_gpu, gpu_capabilities() if on_gpu else None))
        for warning in filter(None, slow):
            log.warning(warning)
        saved_path = self.run_dir / "config.yaml"
        if not saved_path.exists():
            return
        saved = config_lib.load_saved(saved_path)
        problems = config_lib.state_mismatches(saved, self.cfg)
        if problems:
            raise UserError(
                f"cannot resume {self.run_dir} with different settings ({'; '.join(problems)}); "
                "re-run with the run's settings, add --fresh to start over (the old run is kept), "
                "or pass --run-name NEW to train in another folder")
        changed = config_lib.training_changes(saved, self.cfg)
        if changed:
            log.info(f"Resuming with changed settings: {'; '.join(changed)}")

    def _check_dataset(self) -> None:
        info_path = self.run_dir / "dataset.json"
        if info_path.exists():
            try:
                before = json.loads(info_path.read_text(encoding="utf-8")).get("fingerprint")
            except (OSError, ValueError, AttributeError):
                before = None
            if before not in (self.data.fingerprint, *self.data.earlier_fingerprints):
                log.warning(f"the images of {self.cfg.dataset} (or --crop/--background) changed "
                            "since this run started; training continues on the current files "
                            "(resume is no longer bit-exact)")
        summary = dict(self.data.summary, fingerprint=self.data.fingerprint)
        self._best_effort(info_path.name, atomic_write_text, info_path,
                          json.dumps(summary, indent=2))

    def _setup(self) -> None:
        cfg = self.cfg
        self._reconcile_config()
        keras.utils.set_random_seed(cfg.seed)
        if cfg.deterministic:
            tf.config.experimental.enable_op_determinism()
            one_op_at_a_time = (os.environ.get("TF_NUM_INTEROP_THREADS") == "1"
                                or tf.config.threading.get_inter_op_parallelism_threads() == 1)
            if os.environ.get("TF_ENABLE_ONEDNN_OPTS") != "0" or not one_op_at_a_time:
                log.warning("deterministic training also needs TF_ENABLE_ONEDNN_OPTS=0 and "
                            "TF_NUM_INTEROP_THREADS=1 set before TensorFlow starts (train.py does "
                            "that); without them, runs on a CPU can differ in the last bits")
        set_policy(cfg.mixed_precision)
        _write_or_stop(self.run_dir, lambda: self.run_dir.mkdir(parents=True, exist_ok=True))
        _check_recon_weights(cfg)
        self.gan = registry.get(cfg.model).make_gan(cfg, mixed=loss_scaling(cfg.mixed_precision),
                                                    strategy=self.strategy)
        trackables = self.gan.trackables()
        self.checkpoints = Checkpoints(self.run_dir / "ckpt", cfg.keep_checkpoints,
                                       adapt=restore_objects, **trackables)
        self.all_finite = _finite_checker(trackables)
        self.log = RunLog(self.run_dir)
        self.recovery = Recovery.load(self.run_dir)
        fresh = self._resume()
        self.fid = FidTracker(self.run_dir, self.gan, self.data.images, self.data.fingerprint,
                              cfg.fid_samples, cfg.fid_backbone, cfg.inception_weights,
                              best_by=cfg.best_by)
        self.health = HealthMonitor(self.run_dir)
        self.reference = Reference.of_images(self.data.images, seed=cfg.seed)
        config_path = self.run_dir / "config.yaml"
        _write_or_stop(config_path, lambda: config_lib.save(cfg, config_path))
        self._check_dataset()
        if fresh:  # a checkpoint to roll back to from the very first step
            self.checkpoints.save(0)

    def _resume(self) -> bool:
        """Restore the newest good checkpoint; True when the run starts from scratch."""
        leftovers = self.checkpoints.tidy()
        if leftovers:
            log.info(f"Removed what an interrupted checkpoint write left in "
                     f"{self.checkpoints.directory}: {', '.join(leftovers)}")
        restored = self._restore_newest()
        if restored.path is None:
            log.info(f"Starting a new run in {self.run_dir}")
            return True
        step, epoch = int(self.gan.step.numpy()), int(self.gan.epoch.numpy())
        seconds = float(self.gan.train_seconds.numpy())  # 0 in checkpoints of older versions
        trained = f", {format_duration(seconds)} trained so far" if seconds else ""
        log.info(f"Resuming {self.run_dir} from {Path(restored.path).name} "
                 f"(epoch {epoch}, batch {int(self.gan.batch_in_epoch.numpy())}, step {step})"
                 f"{trained}")
        attempt = self.recovery.pending_for(checkpoint_number(restored.path))
        if attempt > self.cfg.max_nan_retries:
            raise UserError(self._gave_up("this run hit NaN/Inf", Path(restored.path).name))
        if attempt:
            changes = vary(self.gan, self.cfg.seed, checkpoint_number(restored.path), attempt)
            log.info(f"Re-applying NaN recovery attempt {attempt} ({', '.join(changes)}; see "
                f"{self.recovery.path.name})")
        self._best_effort("metrics.jsonl", self.log.forget_after, step)
        return False

    def _restore_newest(self) -> Restored:
        """Restore the newest good checkpoint; broken newer ones are moved to ckpt/broken/."""
        restored = self.checkpoints.restore_latest()
        if restored.path is None and restored.skipped:
            path, reason = restored.skipped[0]
            raise UserError(
                f"no checkpoint in {self.checkpoints.directory} could be restored "
                f"({Path(path).name}: {reason}); the files are kept. Start over with --fresh "
                "(the old run is moved aside)")
        if restored.skipped:
            broken = self.checkpoints.set_aside([path for path, _ in restored.skipped])
            for path, reason in restored.skipped:
                log.warning(f"checkpoint {Path(path).name} could not be restored ({reason}); it "
                            f"was moved to {broken} (not deleted), and "
                            f"{Path(restored.path).name} is used instead")
        return restored

    # ----------------------------------------------------------------------------- loop
    def run(self) -> int:
        self._setup()
        cfg, gan, budget = self.cfg, self.gan, self.budget
        step, epoch = int(gan.step.numpy()), int(gan.epoch.numpy())
        if budget.reached(step, epoch):
            unit = "--steps" if cfg.steps is not None else "--epochs"
            log.info(f"{self.run_dir} has already trained {epoch} epochs ({step} steps); nothing "
                     f"to do. Pass a larger {unit} to continue.")
            return 0
        log.info(f"Training {len(self.data.images)} images at {cfg.resolution}px, batch "
                 f"{cfg.batch_size}, {self.steps_per_epoch} steps/epoch, "
                 f"{budget.describe(step, epoch)}, mixed precision {cfg.mixed_precision}, recon "
                 f"{cfg.recon_loss}")
        with self.stop as stop:
            while not budget.reached(int(gan.step.numpy()), int(gan.epoch.numpy())):
                outcome = self._run_epoch(int(gan.epoch.numpy()), stop)
                if outcome in (STOPPED, OUT_OF_TIME, EARLY_STOP):
                    return self._end(outcome)
        return self._end(DONE)

    def _step_losses(self, real) -> dict[str, float]:
        """One training step of the model (`train_on_batch`); its losses as Python floats."""
        return {k: float(v) for k, v in self.gan.train_on_batch(real).items()}

    def _run_epoch(self, epoch: int, stop: GracefulStop) -> str:
        """Train the remaining batches of `epoch`, or until the budget ends mid-epoch.

        Returns DONE (the epoch or the budget is complete), STOPPED (Ctrl-C), OUT_OF_TIME
        (--time-limit), EARLY_STOP (--early-stop) or ROLLED_BACK (NaN).
        """
        cfg, gan = self.cfg, self.gan
        done = int(gan.batch_in_epoch.numpy())
        batches = make_epoch_dataset(self.data.images, cfg.batch_size, cfg.seed, epoch,
                                     skip_batches=done)
        sums, trained, started = {}, 0, time.perf_counter()
        with progress(batches, total=self.steps_per_epoch - done,
                      desc=f"epoch {epoch + 1}" + (f"/{cfg.epochs}" if cfg.epochs else "")) as bar:
            for index, real in enumerate(bar, start=done):
                if stop.requested:
                    return STOPPED
                if (epoch, index) in self.recovery.skip:
                    gan.batch_in_epoch.assign_add(1)  # a batch that once produced a NaN
                    continue
                stats = self._step_losses(real)
                bad = [k for k, v in stats.items() if not np.isfinite(v)]
                if bad:
                    bar.close()  # so that the warning is the last line
                    self._roll_back(f"non-finite {', '.join(sorted(bad))}", epoch, index)
                    return ROLLED_BACK
                trained += 1
                sums = {k: sums.get(k, 0.0) + v for k, v in stats.items()}
                bar.set_postfix(d=stats["d_loss"], g=stats["g_loss"],
                                rec=stats.get("recon", 0.0), r_t=stats["r_t"])
                outcome = self._after_step(epoch, index, stats)
                if outcome is not None:
                    return outcome
        if stop.requested:
            return STOPPED
        gan.epoch.assign_add(1)
        gan.batch_in_epoch.assign(0)
        record = dict(kind="epoch", step=int(gan.step.numpy()), epoch=epoch + 1,
                      seconds=time.perf_counter() - started,
                      **{k: v / max(trained, 1) for k, v in sums.items()})
        return self._after_epoch(record)

    def _after_step(self, epoch: int, index: int, stats: dict) -> str | None:
        """Log the step, run what falls due on it (step cadences, the end of --steps, the time
        limit); after an epoch's last batch the epoch's end does that instead."""
        step = int(self.gan.step.numpy())
        if step % self.cfg.log_every == 0:
            self._best_effort("metrics.jsonl", self.log.write,
                              dict(kind="step", step=step, epoch=epoch, **stats))
        if index == self.steps_per_epoch - 1:
            return None
        last = self.budget.reached(step, epoch)
        outcome = self._periodic(epoch_ended=False, last=last)
        if outcome is None and last:
            return DONE
        if outcome is None and self.budget.out_of_time():
            return OUT_OF_TIME
        return outcome

    def _after_epoch(self, record: dict) -> str:
        """Log the epoch with its health signals, run what falls due (epoch cadences)."""
        record.update(self.reference.compare(pixel_features(self.gan.sample().numpy())))
        self._best_effort("metrics.jsonl", self.log.write, record, "epoch")
        self.health.check(record)
        last = self.budget.reached(int(self.gan.step.numpy()), int(self.gan.epoch.numpy()))
        outcome = self._periodic(epoch_ended=True, last=last)
        if outcome is None and not last and self.budget.out_of_time():
            return OUT_OF_TIME
        return outcome or DONE

    def _end(self, outcome: str) -> int:
        """Save where the run must (a stop, the time limit), say how it ended; the exit code."""
        step, epoch = int(self.gan.step.numpy()), int(self.gan.epoch.numpy())
        if outcome in (STOPPED, OUT_OF_TIME) and not self._save(step, "stop"):
            return EXIT_INTERRUPTED if outcome == STOPPED else 0
        total = format_duration(float(self.gan.train_seconds.numpy()))
        self.log.close()
        if outcome == STOPPED:
            log.info(f"Saved; re-run the same command to resume from step {step}.")
            return EXIT_INTERRUPTED
        if outcome == OUT_OF_TIME:
            log.info(f"Time limit {self.cfg.time_limit} reached at step {step} (epoch {epoch}): "
                     f"saved; re-run the same command to continue ({total} trained in all).")
        elif outcome == EARLY_STOP:
            log.info(f"Early stop at step {step} (epoch {epoch}): FID has not improved for "
                     f"{self.cfg.early_stop} evaluations; best/ holds the best generator "
                     f"(FID {self.fid.best['fid']:.2f} at epoch {self.fid.best['epoch']}).")
        else:
            log.info(f"Done: {epoch} epochs, {step} steps ({total} trained in all). Samples in "
                     f"{self.run_dir / 'samples'}.")
        return 0

    # ----------------------------------------------------------------------------- NaN/Inf
    def _roll_back(self, what: str, epoch: int, batch: int | None) -> None:
        """Go back to the newest good checkpoint and retry differently, or stop if that failed.

        Raises UserError after `max_nan_retries` failures without getting past the step that
        failed before (see recovery.py); all checkpoints are left as they are.
        """
        cfg, gan = self.cfg, self.gan
        step = int(gan.step.numpy())
        where = f"step {step} (epoch {epoch + 1}" + (f", batch {batch + 1})" if batch is not None
                                                      else ")")
        restored = self._restore_newest()
        if restored.path is None:  # cannot happen: every run has ckpt-0 from its first step on
            raise UserError(f"{what} at {where}, and {self.checkpoints.directory} has no "
                            "checkpoint to roll back to; start over with --fresh")
        name, back_to = Path(restored.path).name, checkpoint_number(restored.path)
        event = dict(step=step, epoch=epoch, batch=batch, problem=what)
        attempt = self.recovery.record(back_to, event)
        if attempt > cfg.max_nan_retries:
            self._best_effort(self.recovery.path.name, self.recovery.save)
            raise UserError(self._gave_up(f"{what} at {where} again", name))
        changes = vary(gan, cfg.seed, back_to, attempt)
        if batch is not None:
            self.recovery.skip.add((epoch, batch))
            changes.insert(0, "skipping that batch")
        self._best_effort(self.recovery.path.name, self.recovery.save)
        self._best_effort("metrics.jsonl", self.log.forget_after, back_to)
        log.warning(f"{what} at {where}; rolled back to {name} (attempt {attempt} of "
            f"{cfg.max_nan_retries}): {', '.join(changes)}")

    def _gave_up(self, what: str, name: str) -> str:
        retries = self.cfg.max_nan_retries
        return (f"{what} after {retries} rollbacks (the last to {name}), so training stopped; "
                f"every checkpoint is intact (latest: {name}) and the attempts are in "
                f"{self.recovery.path}. Try a lower --lr or --mixed-precision off (with --fresh or "
                f"--run-name NEW), or raise --max-nan-retries / delete {self.recovery.path.name} "
                "to try again from the same checkpoint")

    # ----------------------------------------------------------------------------- cadences
    def _periodic(self, epoch_ended: bool, last: bool = False) -> str | None:
        """Sample grids, FID and a checkpoint where their cadence (or the end) falls.

        Returns ROLLED_BACK when the weights went bad, EARLY_STOP when FID stopped improving.
        """
        step, epochs_done = int(self.gan.step.numpy()), int(self.gan.epoch.numpy())
        due = {name for name, every in self.cadences.items()
               if every and (last or every.due(step, epochs_done, epoch_ended))}
        if not due:
            return None
        if not self.all_finite():
            self._roll_back("non-finite weights", epochs_done - (1 if epoch_ended else 0), None)
            return ROLLED_BACK
        label = f"epoch{epochs_done:05d}" if epoch_ended else f"step{step:07d}"
        if "samples" in due:
            self._best_effort("the sample grids", self._write_samples, label)
        if "fid" in due:
            self._best_effort("the FID record", self._track_fid, epochs_done)
        if "checkpoint" in due:
            self._save(step, "cadence")
        if "fid" in due and self.cfg.early_stop and \
                self.fid.evals_since_best() >= self.cfg.early_stop:
            return EARLY_STOP
        return None

    def _save(self, step: int, why: str) -> bool:
        """A checkpoint at `step` with the time trained so far; on a stop only if the weights
        are finite (else the last checkpoint stands: False)."""
        if why == "stop" and not self.all_finite():
            log.info(f"Not saved: the weights are not finite at step {step}; re-run the same "
                     f"command to resume from {Path(self.checkpoints.latest or 'none').name}.")
            return False
        self.gan.train_seconds.assign_add(self.budget.elapsed() - self._accounted)
        self._accounted = self.budget.elapsed()
        self.checkpoints.save(step)
        return True

    def _best_effort(self, what: str, write, *args) -> bool:
        """Run a write training can do without; on failure warn (once until it works again)."""
        try:
            write(*args)
        except (OSError, tf.errors.OpError) as e:
            if what not in self._failing:
                self._failing.add(what)
                log.warning(f"could not write {what} at step {int(self.gan.step.numpy())}: "
                            f"{reason_of(e)}; training goes on (it stops with a message if a "
                            "checkpoint cannot be written)")
            return False
        self._failing.discard(what)
        return True

    def _track_fid(self, epoch: int) -> None:
        record = self.fid.evaluate(epoch, int(self.gan.step.numpy()))
        if record is None:
            return
        self.log.write(record, prefix="fid")
        self.health.check(record)
        best = " (best so far, saved to best/)" if record.get("best") else ""
        kid = f", KID {record['kid_mean']:.4f}" if "kid_mean" in record else ""
        log.info(f"epoch {epoch}: FID {record['fid']:.2f}{kid} ({record['backbone']} backbone, "
            f"{record['num_fake']} generated vs {record['num_real']} real){best}")

    def _write_samples(self, label: str) -> None:
        """PNG grids of the EMA generator on fixed noise and of the decoders' reconstructions."""
        samples_dir = self.run_dir / "samples"
        fakes = self.gan.sample().numpy()
        save_image_grid(fakes, samples_dir / f"fakes_{label}.png", nrow=4)
        step = int(self.gan.step.numpy())
        self.log.image("samples/fakes", make_grid(fakes, nrow=4), step)
        real = self.data.images[:8].astype(np.float32) / 127.5 - 1.0
        reconstructions = self.gan.reconstruct(tf.constant(real))
        if reconstructions is None:  # SSD and --no-decoders have no decoders to show
            return
        columns = [c.numpy() for c in reconstructions]
        rows = np.stack(columns, axis=1).reshape(-1, *columns[0].shape[1:])
        save_image_grid(rows, samples_dir / f"recon_{label}.png", nrow=len(columns))
        self.log.image("samples/reconstructions", make_grid(rows, nrow=len(columns)), step)
