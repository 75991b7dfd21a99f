"""The long fault-injection suite of issue 6: inject faults into real training runs, write RELIABILITY.md.

    python benchmarks/fault_injection.py --kills 12 --output RELIABILITY.md

Every run is the real command line (`python tests/faults.py FAULTS -- train.py args`, see
tests/faults.py) on a tiny deterministic configuration: 16 generated images at 64x64, batch
4, 3 epochs of 4 steps, a checkpoint, sample grids and FID (with a pixel stand-in for Inception)
after every epoch. After every fault the suite checks that each checkpoint listed in the state file
reads completely; runs that can finish are finished with the same command and their final
weights compared bit for bit with an uninterrupted run of the same command.

Faults: SIGKILL at random moments (and inside checkpoint writes, sample, metrics and FID writes,
training steps), Ctrl-C once and twice, corrupted checkpoints, NaN/Inf, failed writes (injected
ENOSPC/EACCES, and a real full disk on a small tmpfs where the OS allows mounting one), a second
trainer on the same run, incompatible checkpoints, random command lines and config files.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

ARGS = ["--epochs", "3", "--deterministic", "--seed", "5", "--checkpoint-every", "1",
        "--sample-every", "1", "--fid-every", "1", "--fid-samples", "8", "--batch-size", "4",
        "--resolution", "64", "--ngf", "16", "--ndf", "16", "--recon-loss", "l1",
        "--log-every", "1"]


@dataclass
class Row:
    """One line of the table: a kind of fault and what every trial of it preserved."""

    fault: str
    how: str
    trials: int = 0
    outcomes: list[str] = field(default_factory=list)
    unreadable: int | None = 0  # None: the fault involves no checkpoint
    bit_exact: str = "n/a"
    message: str = ""


class Suite:
    def __init__(self, work: Path, seed: int):
        from conftest import write_images

        self.work = work
        self.data = write_images(work / "data", count=16)
        self.out = work / "runs"
        self.rng = random.Random(seed)
        self.env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="-1",
                        PYTHONPATH=str(REPO), FASTGAN_CACHE=str(work / "cache"))
        self.rows: list[Row] = []
        self.log: list[str] = []

    # ----------------------------------------------------------------------------- running
    def command(self, run: str, *faults: str, extra=(), out: Path | None = None) -> list[str]:
        return [sys.executable, str(REPO / "tests" / "faults.py"), "fake-fid", *faults, "--",
                "--dataset", str(self.data), "--out", str(out or self.out), "--run-name", run,
                *ARGS, *extra]

    def start(self, cmd) -> subprocess.Popen:
        proc = subprocess.Popen(cmd, env=self.env, cwd=REPO, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        proc.lines = []
        proc.reader = threading.Thread(target=lambda: proc.lines.extend(proc.stderr), daemon=True)
        proc.reader.start()
        return proc

    def finish(self, proc, timeout=900) -> tuple[int, str]:
        proc.wait(timeout=timeout)
        proc.reader.join(timeout=10)
        return proc.returncode, "".join(proc.lines)

    def run(self, cmd, timeout=900) -> tuple[int, str]:
        return self.finish(self.start(cmd), timeout)

    # ----------------------------------------------------------------------------- checks
    def listed_unreadable(self, run: str, out: Path | None = None) -> tuple[list[str], list[str]]:
        from fastgan_tf.checkpoints import Checkpoints, verify

        listed = Checkpoints((out or self.out) / run / "ckpt").listed
        return [Path(p).name for p in listed], [Path(p).name for p in listed if verify(p)]

    def same_weights(self, run: str, reference: str) -> bool:
        """Every tensor of the two runs' latest checkpoints equal (and the same step)."""
        import tensorflow as tf

        from fastgan_tf.checkpoint_keys import NOT_STATE
        from fastgan_tf.checkpoints import Checkpoints

        def state(name):
            reader = tf.train.load_checkpoint(Checkpoints(self.out / name / "ckpt").latest)
            return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
                    if not k.startswith(NOT_STATE)}

        try:
            a, b = state(run), state(reference)
        except Exception as e:  # noqa: BLE001 - a missing checkpoint is a failure to report
            self.log.append(f"  {run}: cannot compare with {reference}: {e}")
            return False
        return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)

    def checkpointed_step(self, run: str) -> int | None:
        """The training step stored in the run's latest listed checkpoint."""
        import tensorflow as tf

        from fastgan_tf.checkpoints import Checkpoints

        latest = Checkpoints(self.out / run / "ckpt").latest
        try:
            return int(tf.train.load_checkpoint(latest).get_tensor(
                "step/.ATTRIBUTES/VARIABLE_VALUE")) if latest else None
        except Exception:  # noqa: BLE001 - reported as not finished
            return None

    def steps(self, run: str) -> int:
        from faults import logged_steps

        return max(logged_steps(self.out / run), default=0)

    def moment(self, run: str, since: float) -> str:
        """Where a run is, judged from its files (a few milliseconds before a kill)."""
        ckpt = self.out / run / "ckpt"
        try:
            names = os.listdir(ckpt)
        except OSError:
            names = []
        step = self.steps(run)
        if any(name.endswith("_temp") for name in names):
            return f"after step {step}, in a checkpoint write"
        if step and step % 4 == 0 and f"ckpt-{step}.index" not in names:
            epoch = step // 4
            grid = self.out / run / "samples" / f"fakes_epoch{epoch:05d}.png"
            grid = grid.exists() and grid.stat().st_mtime >= since  # by this process
            return (f"after step {step}, in the end-of-epoch writes ("
                    + ("sample grid written, then FID or checkpoint" if grid else
                       "before the sample grid") + ")")
        return f"after step {step}"

    def record(self, row: Row, run: str, outcome: str, out: Path | None = None) -> None:
        listed, unreadable = self.listed_unreadable(run, out)
        nonfinite = self.nonfinite(run, out) if "NaN" in row.fault or "Inf" in row.fault else []
        if nonfinite:  # a rollback must never leave NaN/Inf in a checkpoint
            outcome += f", NaN/Inf IN {', '.join(nonfinite)}"
        row.trials += 1
        row.unreadable += len(unreadable)
        row.outcomes.append(outcome)
        self.log.append(f"  {row.fault} #{row.trials}: {outcome}; listed {listed}"
                        + (f", UNREADABLE {unreadable}" if unreadable else ""))

    def nonfinite(self, run: str, out: Path | None = None) -> list[str]:
        """Listed checkpoints holding a NaN or Inf in any float tensor."""
        import tensorflow as tf

        from fastgan_tf.checkpoints import Checkpoints

        bad = []
        for path in Checkpoints((out or self.out) / run / "ckpt").listed:
            try:
                reader = tf.train.load_checkpoint(path)
                tensors = (np.asarray(reader.get_tensor(k))
                           for k in reader.get_variable_to_shape_map())
                if not all(np.isfinite(t).all() for t in tensors if t.dtype.kind == "f"):
                    bad.append(Path(path).name)
            except Exception:  # noqa: BLE001 - unreadable: counted by listed_unreadable
                pass
        return bad

    def complete(self, row: Row, run: str, reference: str, out: Path | None = None) -> None:
        code, err = self.run(self.command(run, out=out))
        exact = code == 0 and self.same_weights(run, reference)
        row.bit_exact = "yes" if exact and row.bit_exact != "no" else "no"
        if code != 0:
            self.log.append(f"  {run}: finishing failed ({code}): {err[-500:]}")

    # ----------------------------------------------------------------------------- faults
    def references(self) -> None:
        began = time.time()
        proc = self.start(self.command("ref"))
        self.wait_for_training(proc)
        self.setup = time.time() - began
        code, err = self.finish(proc)
        self.training = time.time() - began - self.setup
        if code != 0:
            raise SystemExit(f"reference run failed: {err[-2000:]}")
        code, err = self.run(self.command("ref-nan", "nan:batch:1:1"))
        if code != 0:
            raise SystemExit(f"reference run failed: {err[-2000:]}")
        self.log.append(f"  reference run: {self.setup:.0f} s start-up, {self.training:.0f} s "
                        "training")

    def random_kills(self, kills: int) -> None:
        row = Row("SIGKILL at a random moment", "`kill -9` from outside: 1 in 4 at a uniform "
                  f"random time of the start-up (0-{self.setup:.0f} s), the others of the "
                  f"training (0-{self.training:.0f} s after `Training ...`: steps, sample grids, "
                  "FID, checkpoint writes); a finished run is compared and a new one started")
        chain, exact = 0, True
        for trial in range(kills):
            run = f"random-{chain}"
            began = time.time()
            proc = self.start(self.command(run))
            if trial % 4 == 0:
                time.sleep(self.rng.uniform(0.0, self.setup))
            else:
                self.wait_for_training(proc)
                time.sleep(self.rng.uniform(0.0, self.training))
            training = any(line.startswith("Training") for line in proc.lines)
            moment = self.moment(run, began) if training else "during start-up"
            proc.kill()
            code, _ = self.finish(proc)
            self.record(row, run, "finished before the kill" if code == 0 else f"killed {moment}")
            if code == 0:
                exact = exact and self.same_weights(run, "ref")
                chain += 1
        if (self.out / f"random-{chain}").exists():
            self.complete(row, f"random-{chain}", "ref")
        row.bit_exact = "yes" if exact and row.bit_exact != "no" else "no"
        row.message = "(none: a kill prints nothing; the next run says `Resuming ... from ckpt-N`)"
        self.rows.append(row)

    @staticmethod
    def wait_for_training(proc, timeout=600) -> None:
        deadline = time.time() + timeout
        while (time.time() < deadline and proc.poll() is None
               and not any(line.startswith("Training") for line in proc.lines)):
            time.sleep(0.02)

    def targeted_kills(self) -> None:
        row = Row("SIGKILL inside a write or a step", "self-inflicted SIGKILL at a chosen point "
                  "(tests/faults.py `kill:...`), one after another on the same run")
        # In this order each point is reached: ckpt-0 write, best.json (first FID), first sample
        # grid, a metrics line, a step, ckpt-4 write, before ckpt-4 is listed, a later grid
        # (ckpt-4 listed by then), deleting ckpt-0 after ckpt-8 is listed, the ckpt-12 write.
        points = ["kill:save-write:1:0", "kill:fid:1", "kill:samples:1", "kill:metrics:3",
                  "kill:step:2", "kill:save-write:1:20", "kill:save-state:1", "kill:samples:3",
                  "kill:save-sweep:1", "kill:save-write:1:5"]
        for point in points:
            code, err = self.run(self.command("targeted", point))
            self.record(row, "targeted", f"{point.split(':', 2)[1]} -> exit {code}")
        self.complete(row, "targeted", "ref")
        row.message = "(none; `Removed what an interrupted checkpoint write left ...` on resume)"
        self.rows.append(row)

    def ctrl_c(self, trials: int) -> None:
        for presses, name in ((1, "Ctrl-C once"), (2, "Ctrl-C twice")):
            step = self.training / 12
            row = Row(name, "SIGINT at a random moment once training runs" + (
                "" if presses == 1 else f"; the second once the first was acknowledged "
                f"(`Stopping: ...`), after a random 0-{2 * step:.1f} s (the rest of the step or "
                "the checkpoint write)"))
            run = f"ctrl-c-{presses}"
            for _ in range(trials):
                proc = self.start(self.command(run))
                self.wait_for_training(proc)
                left = 1 - (self.checkpointed_step(run) or 0) / 12  # of a resumed run's training
                time.sleep(self.rng.uniform(0.0, self.training * 0.8 * left))
                proc.send_signal(signal.SIGINT)
                if presses == 2:
                    # Two signals that arrive while the process is inside one TensorFlow op are
                    # delivered to Python as one: press again after the first was seen, as a
                    # user does.
                    deadline = time.time() + 120
                    while (proc.poll() is None and time.time() < deadline
                           and not any(line.startswith("Stopping") for line in proc.lines)):
                        time.sleep(0.01)
                    time.sleep(self.rng.uniform(0.0, 2 * step))
                    late = proc.poll() is not None
                    if not late:
                        proc.send_signal(signal.SIGINT)
                code, err = self.finish(proc)
                last = [line for line in err.splitlines() if line.strip()][-1:] or [""]
                if not row.message or (presses == 2 and "interrupted;" in last[0]):
                    row.message = last[0]  # twice: the message of a quit at once if there is one
                how = ("saved" if "Saved;" in err else "quit at once" if "interrupted;" in err
                       else "finished first" if code == 0 else "NOTHING SAID")
                if presses == 2 and late and how != "finished first":
                    how += " before the second press"
                elif presses == 2 and how == "saved":
                    how += ", the second press came during shutdown"
                self.record(row, run, f"exit {code}, {how}"
                                      + (", TRACEBACK" if "Traceback" in err else ""))
            self.complete(row, run, "ref")
            self.rows.append(row)

    def corrupted(self) -> None:
        row = Row("Corrupt or partial latest checkpoint", "after 2 epochs, damage ckpt-8, then "
                  "re-run: truncated data, garbled data bytes, empty index, garbled index, "
                  "missing data file")
        base = "corrupt-base"
        code, err = self.run(self.command(base, extra=["--epochs", "2"]))
        for damage in ("truncate-data", "garble-data", "empty-index", "garble-index", "no-data"):
            run = f"corrupt-{damage}"
            shutil.copytree(self.out / base, self.out / run)
            ckpt = self.out / run / "ckpt"
            data, index = ckpt / "ckpt-8.data-00000-of-00001", ckpt / "ckpt-8.index"
            if damage == "truncate-data":
                data.write_bytes(data.read_bytes()[: data.stat().st_size // 3])
            elif damage == "garble-data":
                raw = bytearray(data.read_bytes())
                raw[1000:1400] = os.urandom(400)
                data.write_bytes(bytes(raw))
            elif damage == "empty-index":
                index.write_bytes(b"")
            elif damage == "garble-index":
                raw = bytearray(index.read_bytes())
                raw[len(raw) // 2:len(raw) // 2 + 64] = os.urandom(64)
                index.write_bytes(bytes(raw))
            else:
                data.unlink()
            code, err = self.run(self.command(run))
            said = [line for line in err.splitlines() if "could not be restored" in line]
            kept = sorted(p.name for p in (ckpt / "broken").glob("*")) if (ckpt / "broken").is_dir() \
                else []
            row.message = row.message or (said[0] if said else "")
            self.record(row, run, f"{damage}: exit {code}, detected: {'yes' if said else 'NO'}, "
                                  f"{len(kept)} file(s) kept in broken/")
            exact = code == 0 and self.same_weights(run, "ref")
            row.bit_exact = "yes" if exact and row.bit_exact != "no" else "no"
        self.rows.append(row)

    def nan(self) -> None:
        once = Row("NaN loss (once)", "`nan:batch:1:1`: that batch yields NaN losses and "
                   "weights; also killed right after the rollback, then resumed")
        code, err = self.run(self.command("nan-once", "nan:batch:1:1"))
        once.message = next((line for line in err.splitlines() if "rolled back" in line), "")
        self.record(once, "nan-once", f"exit {code}")
        exact = code == 0 and self.same_weights("nan-once", "ref-nan")
        # Killed after the rollback (first step after it): the resumed run must re-apply it.
        code, err = self.run(self.command("nan-killed", "nan:batch:1:1", "kill:step:7"))
        self.record(once, "nan-killed", f"killed after the rollback: exit {code}")
        code, err = self.run(self.command("nan-killed", "nan:batch:1:1"))
        self.record(once, "nan-killed", f"resumed: exit {code}")
        exact = exact and code == 0 and self.same_weights("nan-killed", "ref-nan")
        once.bit_exact = "yes (vs. an uninterrupted run with the same NaN)" if exact else "no"
        self.rows.append(once)

        inf = Row("Inf in the weights, finite losses", "`nan:weights:4`: caught by the check "
                  "before the epoch's writes")
        code, err = self.run(self.command("inf-weights", "nan:weights:4"))
        inf.message = next((line for line in err.splitlines() if "rolled back" in line), "")
        self.record(inf, "inf-weights", f"exit {code}")
        self.rows.append(inf)

        forever = Row("NaN that keeps coming back", "`nan:from:6` (every step from 6 on), "
                      "`--max-nan-retries` at its default of 3; then the same command again without the fault")
        code, err = self.run(self.command("nan-forever", "nan:from:6"))
        forever.message = err.strip().splitlines()[-1] if err.strip() else ""
        rollbacks = err.count("rolled back")
        self.record(forever, "nan-forever", f"exit {code} after {rollbacks} rollbacks")
        steps = self.steps("nan-forever")
        code, err = self.run(self.command("nan-forever"))
        stopped = "Training" not in err and self.steps("nan-forever") == steps
        self.record(forever, "nan-forever", f"re-run: exit {code}, "
                                            f"{'stopped before training' if stopped else 'TRAINED'}")
        self.rows.append(forever)

    def failed_writes(self) -> None:
        # (what, fault, must stop): a checkpoint, the state file or config.yaml that cannot be
        # written stops training; sample grids and metrics only warn.
        cases = [("checkpoint", "fail:checkpoint:2:ENOSPC", True),
                 ("checkpoint", "fail:checkpoint:2:EACCES", True),
                 ("state file", "fail:state:2:ENOSPC", True),
                 ("config.yaml", "fail:config:1:EACCES", True),
                 ("sample grids", "fail:samples:1+:ENOSPC", False),
                 ("metrics.jsonl", "fail:metrics:1+:ENOSPC", False)]
        row = Row("Disk full / permission denied (injected)", "OSError or TensorFlow's "
                  "ResourceExhausted/PermissionDenied raised at the write (`fail:...`); then the "
                  "same command without the fault")
        for what, fault, stops in cases:
            run = "fail-" + fault.split(":")[1] + "-" + fault.split(":")[-1]
            code, err = self.run(self.command(run, fault))
            errors = [line for line in err.splitlines() if "error:" in line]
            warnings = [line for line in err.splitlines() if "warning: could" in line]
            if what == "checkpoint" and not row.message:
                row.message = errors[-1] if errors else ""
            self.log.extend(f"    said: {line}" for line in errors + warnings)
            ckpt = self.out / run / "ckpt"
            leftovers = [p.name for p in ckpt.glob("*_temp")] if ckpt.is_dir() else []
            if stops:
                listed, _ = self.listed_unreadable(run)
                seen = (f"stopped with {len(errors)} error line(s)" if code == 2 else "DID NOT STOP")
                seen += (f", still listed: {', '.join(listed)}" if listed else
                         ", nothing written yet" if what == "config.yaml" else ", NOTHING LISTED")
            else:
                seen = (f"trained on, warned {len(warnings)}x" if code == 0 and self.checkpointed_step(run) == 12
                        else "DID NOT FINISH")
            if "Traceback" in err:
                seen += ", TRACEBACK"
            if leftovers:
                seen += f", LEFT {leftovers}"
            self.record(row, run, f"{what} {fault.split(':')[-1]}: exit {code}, {seen}")
            self.complete(row, run, "ref")
        self.rows.append(row)
        self.real_full_disk()

    def real_full_disk(self) -> None:
        row = Row("Disk really full", "--out on a 200 MB tmpfs (a checkpoint is ~75 MB): the 3rd "
                  "checkpoint cannot be written; then the tmpfs is enlarged and the command re-run")
        mount = self.work / "small"
        mount.mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200m", "tmpfs", str(mount)],
                          capture_output=True).returncode != 0:
            row.outcomes.append("skipped: cannot mount a tmpfs here")
            self.rows.append(row)
            return
        try:
            code, err = self.run(self.command("full", out=mount))
            row.message = err.strip().splitlines()[-1] if err.strip() else ""
            self.record(row, "full", f"exit {code}", out=mount)
            subprocess.run(["mount", "-o", "remount,size=600m", str(mount)], check=True)
            code, err = self.run(self.command("full", out=mount))
            self.record(row, "full", f"after freeing space: exit {code}", out=mount)
            shutil.copytree(mount / "full", self.out / "full")
            row.bit_exact = "yes" if code == 0 and self.same_weights("full", "ref") else "no"
        finally:
            subprocess.run(["umount", str(mount)], capture_output=True)
        self.rows.append(row)

    def two_trainers(self, trials: int) -> None:
        row = Row("Two trainers on one run folder", "a second identical command while the first "
                  "trains; then the first is killed and a third starts")
        for i in range(trials):
            run = f"lock-{i}"
            first = self.start(self.command(run))
            self.wait_for_training(first)
            code, err = self.run(self.command(run))
            row.message = row.message or err.strip().splitlines()[-1]
            first.kill()
            self.finish(first)
            third = self.start(self.command(run))
            self.wait_for_training(third)
            took_over = any(l.startswith("Training") for l in third.lines)
            third.kill()
            self.finish(third)
            self.record(row, run, f"second: exit {code}; after the first died: "
                                  f"{'lock taken over' if took_over else 'STUCK'}")
        self.rows.append(row)

    def incompatible(self) -> None:
        row = Row("Incompatible checkpoint", "resume a 2-epoch run with another width or "
                  "resolution, with its config.yaml present and deleted")
        base = "corrupt-base"
        for extra, drop_config in ((["--ngf", "32"], False), (["--resolution", "128"], False),
                                   (["--ngf", "32"], True), (["--resolution", "128"], True)):
            run = f"incompatible-{extra[0][2:]}-{'noconfig' if drop_config else 'config'}"
            shutil.copytree(self.out / base, self.out / run)
            if drop_config:
                (self.out / run / "config.yaml").unlink()
            code, err = self.run(self.command(run, extra=extra))
            line = err.strip().splitlines()[-1] if err.strip() else ""
            if drop_config and not row.message:
                row.message = line
            self.record(row, run, f"{' '.join(extra)}{' no config.yaml' if drop_config else ''}: "
                                  f"exit {code}, names it: "
                                  f"{'yes' if extra[0][2:] in line or 'shape' in line else 'NO'}")
        self.rows.append(row)

    def fuzz(self, examples: int) -> None:
        row = Row("Random command lines and config files", f"hypothesis, {examples} examples "
                  "per property (tests/test_cli_fuzz.py): train.py --dry-run argv and YAML, "
                  "evaluate.py argv")
        env = dict(self.env, FASTGAN_FUZZ_EXAMPLES=str(examples))
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               str(REPO / "tests" / "test_cli_fuzz.py")], env=env, cwd=REPO,
                              capture_output=True, text=True)
        summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
        row.trials = 4 * examples
        row.unreadable = None
        row.outcomes.append(f"pytest exit {proc.returncode}: {summary}")
        if proc.returncode != 0:
            self.log.append(f"  fuzz: pytest failed:\n{proc.stdout[-3000:]}")
        # What a user sees from the real command line (train.py and evaluate.py, not in-process).
        for script, argv in (("train.py", ["--dataset", str(self.data), "--seed", str(2**70),
                                           "--dry-run"]),
                             ("evaluate.py", ["--fid", "--run", str(self.work / "nothing")])):
            done = subprocess.run([sys.executable, script, *argv], env=self.env, cwd=REPO,
                                  capture_output=True, text=True)
            line = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
            self.log.append(f"  {script} {' '.join(argv)}: exit {done.returncode}: {line}")
            if script == "train.py":
                row.message = line
            if done.returncode != 2 or "Traceback" in done.stderr:
                row.outcomes.append(f"{script} real command line: exit {done.returncode}"
                                    + (", TRACEBACK" if "Traceback" in done.stderr else ""))
        self.rows.append(row)


def write_report(suite: Suite, path: Path, started: float, args, complete: bool = True) -> None:
    import tensorflow as tf

    lines = [
        "# Reliability: faults injected into real training runs",
        "",
        "Produced by `python benchmarks/fault_injection.py "
        f"--kills {args.kills} --ctrl-c {args.ctrl_c} --locks {args.locks} "
        f"--fuzz-examples {args.fuzz_examples} --seed {args.seed}` on "
        f"{time.strftime('%Y-%m-%d')} ({_cpu_name()}, {os.cpu_count()} cores, "
        f"{platform.system()} {platform.machine()}, Python {platform.python_version()}, "
        f"TensorFlow {tf.__version__}, CPU only; {(time.time() - started) / 60:.0f} minutes"
        f"{'' if complete else ', PARTIAL: the suite did not finish'}). Every trial runs the real "
        "command line on 16 images at 64x64, batch 4, 3 epochs (12 steps) with a checkpoint, "
        "sample grids and FID after each epoch and `--deterministic`; faults are injected by "
        "`tests/faults.py` (monkeypatching; the trainer has no fault hooks).",
        "",
        "*Unreadable* counts checkpoints listed in `ckpt/checkpoint` that failed to read completely "
        "after a fault (every tensor is read). *Bit-exact* compares every tensor of the final "
        "checkpoint, after finishing with the same command, with an uninterrupted run.",
        "",
        "| Fault | How injected | Trials | Outcomes | Unreadable listed checkpoints | "
        "Final weights bit-exact | What the user is told |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in suite.rows:
        outcomes = "; ".join(_count(row.outcomes))
        unreadable = "n/a" if row.unreadable is None else row.unreadable
        lines.append(f"| {row.fault} | {row.how} | {row.trials} | {outcomes} | {unreadable} | "
                     f"{row.bit_exact} | {_cell(row.message)} |")
    lines += ["", HOW_IT_WORKS, "", "## Trial log", "", "```", *suite.log, "```", ""]
    text = "\n".join(lines).replace(str(suite.work), "<work>").replace(str(REPO), "<repo>")
    path.write_text(text, encoding="utf-8")


HOW_IT_WORKS = """## What keeps the runs safe

- **Writes are atomic.** Small files (config.yaml, dataset.json, recovery.json, PNGs, the
  checkpoint state file) are written beside the target and renamed over it. A checkpoint is
  written by TensorFlow into `ckpt-N_temp/` and moved into place; only then is it listed in
  `ckpt/checkpoint`, and only after that are old checkpoints deleted (index first). So every
  listed checkpoint is complete at every instant; leftovers of an interrupted write are removed on
  the next start (`fastgan_tf/checkpoints.py`).
- **There is always a checkpoint.** A new run saves `ckpt-0` before its first step.
- **Resume does not trust one file.** Listed checkpoints are tried newest first, then unlisted
  ones; one that does not restore completely is reported, moved to `ckpt/broken/` (never deleted)
  and the previous one is used. A checkpoint that reads fine but has other shapes is refused with
  the differing tensors named; config.yaml differences are named per key. Checkpoints carry a
  format version.
- **NaN/Inf roll back, a bounded number of times.** Losses are checked after every step and all
  weights before anything is written. A failure restores the newest good checkpoint, skips the
  batch, reseeds the step RNG from (seed, checkpoint, attempt) and, under mixed precision, divides
  the loss scale by 2^attempt; `recovery.json` keeps the count across restarts, and training stops
  with a one-line message after `--max-nan-retries` (3) failures without getting past the failing
  step. The changes depend only on (checkpoint, attempt), so a run killed after a rollback resumes
  bit-exactly.
- **Failed writes.** A checkpoint that cannot be written stops training with the OS's reason; the
  previous one is intact and the partial write removed. Sample grids, metrics and FID records
  that cannot be written only warn (once until they work again).
- **One trainer per run.** An OS lock (`flock`/`msvcrt.locking`) on `<out>/.<run>.lock`, released
  by the OS when the process dies; the lock file also holds a heartbeat (pid, host, time,
  refreshed every 30 s), so that trainers on two systems sharing a folder (WSL2 and Windows on
  `/mnt/c`), which cannot see each other's OS lock, still refuse while the other is alive.
- **Ctrl-C** once: finish the step, save, exit 130; twice: exit 130 at once. SIGTERM on POSIX
  and Ctrl-Break on Windows behave like one Ctrl-C.
- **--deterministic** also turns off oneDNN's CPU kernels and runs one op at a time
  (`TF_ENABLE_ONEDNN_OPTS=0`, `TF_NUM_INTEROP_THREADS=1`, set by train.py before TensorFlow
  starts): with either on, identical CPU runs drifted apart in the last bits within a few steps,
  op determinism notwithstanding."""


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _count(outcomes: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    for o in outcomes:
        seen[o] = seen.get(o, 0) + 1
    return [f"{o} (x{n})" if n > 1 else o for o, n in seen.items()]


def _cell(text: str) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return f"`{text}`" if text and not text.startswith(("`", "(")) else text


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=12, help="random-moment SIGKILLs")
    p.add_argument("--ctrl-c", type=int, default=3, help="trials of Ctrl-C once and twice each")
    p.add_argument("--locks", type=int, default=2, help="two-trainer trials")
    p.add_argument("--fuzz-examples", type=int, default=150)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", type=Path, default=REPO / "RELIABILITY.md")
    p.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    args = p.parse_args()
    started = time.time()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="fastgan-faults-"))
    suite = Suite(work, args.seed)
    steps = [suite.references, lambda: suite.random_kills(args.kills), suite.targeted_kills,
             lambda: suite.ctrl_c(args.ctrl_c), suite.corrupted, suite.nan, suite.failed_writes,
             lambda: suite.two_trainers(args.locks), suite.incompatible,
             lambda: suite.fuzz(args.fuzz_examples)]
    for step in steps:
        began = time.time()
        step()
        name = getattr(step, "__name__", "step")
        print(f"{name}: {time.time() - began:.0f}s; rows so far {len(suite.rows)}", flush=True)
        # partial results survive a crash
        write_report(suite, args.output, started, args, complete=step is steps[-1])
    print(f"wrote {args.output} ({(time.time() - started) / 60:.1f} min, work in {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
