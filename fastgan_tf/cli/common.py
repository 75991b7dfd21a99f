"""What every command-line entry point shares: messages on stderr (see console.py), a quiet
TensorFlow, one-line errors and exit codes."""

from __future__ import annotations

import argparse
import logging
import os
import platform
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from fastgan_tf.console import configure_logging, make_streams_safe
from fastgan_tf.errors import UserError, one_line

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad command line is one line on stderr and exit code 2 (no usage dump)."""

    def error(self, message: str):
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def add_verbose_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--verbose", action="store_true", default=False,
                        help="debug messages, and TensorFlow's own start-up and device messages")


# ----------------------------------------------------------------------------- TensorFlow
def deterministic_tensorflow() -> None:
    """Settings that --deterministic needs before TensorFlow starts (they cannot change later).

    Measured on CPU: with oneDNN's kernels, or with several inter-op threads, two identical runs
    drift apart in the last bits within a few steps (even with op determinism enabled); with both
    off, repeated runs and resumed runs are bitwise identical. The user's own settings win.
    """
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")


def fast_cpu_kernels() -> None:
    """oneDNN's CPU kernels on x86-64, unless TF_ENABLE_ONEDNN_OPTS is already set.

    TensorFlow turns them on by itself only on some CPUs (recent Intel Xeons); elsewhere (the AMD
    EPYC of benchmarks/README.md) it leaves them off and a FastGAN step takes up to twice as
    long. Set before TensorFlow starts (later it would change nothing, so a CLI called in-process
    leaves the environment alone); --deterministic has set them off by then, and the user's own
    setting wins. Other CPUs (ARM) keep TensorFlow's choice.
    """
    if "tensorflow" not in sys.modules and platform.machine().lower() in ("x86_64", "amd64"):
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


@contextmanager
def _stderr_descriptor_silenced() -> Iterator[None]:
    """Send what C libraries write to file descriptor 2 to the null device for a while."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # a captured or in-memory stderr: nothing to do
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, fd)
    os.close(null)
    try:
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def import_tensorflow(verbose: bool = False) -> None:
    """Import TensorFlow now, hiding its C++ start-up chatter (absl, oneDNN, CPU features) and its
    Python warnings unless `verbose`. TF_CPP_MIN_LOG_LEVEL, when the user sets it, wins."""
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose else "3")
    if verbose:
        import tensorflow  # noqa: F401
        return
    with _stderr_descriptor_silenced():
        import tensorflow as tf
    tf.get_logger().setLevel(logging.ERROR)


# ----------------------------------------------------------------------------- running
def run_cli(parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], int],
            argv: list[str] | None = None, before_tensorflow: Callable | None = None) -> int:
    """Parse `argv`, configure logging, import TensorFlow quietly and call `run`; user errors
    become one line (exit 2), Ctrl-C becomes exit 130.

    `before_tensorflow(args)` runs first, for settings TensorFlow reads once at start-up.
    """
    make_streams_safe()  # before --help: any text printed must not raise on a Windows code page
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, or a bad command line already reported by `error`
        return e.code if isinstance(e.code, int) else EXIT_USER_ERROR
    verbose = bool(getattr(args, "verbose", False))
    configure_logging(verbose)
    try:
        if before_tensorflow is not None:
            before_tensorflow(args)
        fast_cpu_kernels()
        import_tensorflow(verbose)
        code = run(args)
    except UserError as e:
        print(f"{parser.prog}: error: {one_line(e)}", file=sys.stderr)
        code = EXIT_USER_ERROR
    except OSError as e:  # a full disk or a forbidden folder that no code path anticipated
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        print(f"{parser.prog}: error: {where}{e.strerror or e}; free disk space or fix "
              "permissions, then re-run the same command", file=sys.stderr)
        code = EXIT_USER_ERROR
    except KeyboardInterrupt:
        ignore_further_ctrl_c()
        print(f"\n{parser.prog}: interrupted; the last saved checkpoint is intact.", file=sys.stderr)
        code = EXIT_INTERRUPTED
    if code == EXIT_INTERRUPTED or argv is None:
        # argv None: this is the program itself, about to quit; a Ctrl-C while TensorFlow shuts
        # down must not turn its exit code into a death by SIGINT. (Callers that run it
        # in-process pass argv and keep their Ctrl-C.)
        ignore_further_ctrl_c()
    return code


def ignore_further_ctrl_c() -> None:
    """The process is quitting: a Ctrl-C during shutdown (TensorFlow's exit handlers can take a
    while) must not replace its exit code (0, 2 or 130) by a death by SIGINT."""
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread (an embedding program): its signals are its own
        pass
