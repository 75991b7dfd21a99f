"""How the package's messages reach a console: through `logging`, shown by the programs.

Library code logs to the "fastgan_tf" logger and never prints, so a notebook or a program that
imports the package decides what it sees (nothing, by default: the package's NullHandler).
`configure_logging` is what train.py, evaluate.py and the dataset tool call: status lines on
stderr as they are, warnings and errors prefixed, written through tqdm so that they never garble a
progress bar.

Control codes: tqdm redraws a bar with a carriage return and spaces (no `ESC[K`), sends the
cursor-up code only for stacked bars (none here; and on Windows only with colorama, which
translates it); off a terminal progress.py draws nothing. So no escape code reaches a log file or
a legacy Windows console.
"""

from __future__ import annotations

import io
import logging
import sys


class _StderrHandler(logging.Handler):
    """Writes to whatever `sys.stderr` is at the time (test captures swap it), through
    `tqdm.write` so that a message never garbles a progress bar being drawn."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=sys.stderr)
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


class _Formatter(logging.Formatter):
    """Status lines as they are; warnings and errors prefixed, as the CLIs always printed them."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.levelno >= logging.ERROR:
            return f"error: {message}"
        if record.levelno >= logging.WARNING:
            return f"warning: {message}"
        return message


def make_streams_safe() -> None:
    """Make sys.stdout and sys.stderr replace what their encoding cannot show, not raise.

    Redirected on Windows, stdout writes the ANSI code page (cp1252, ...) in strict mode: printing
    a file name such as `größe_ψ.png` raised UnicodeEncodeError after the work was done (on
    Linux, so did a file name with bytes that are not UTF-8). The encoding is kept; only what it
    cannot encode becomes "?". A stream already more lenient (stderr's backslashreplace) is kept.
    """
    for stream in (sys.stdout, sys.stderr):
        if getattr(stream, "errors", None) != "strict" or not hasattr(stream, "reconfigure"):
            continue
        try:
            stream.reconfigure(errors="replace")
        except (ValueError, OSError, io.UnsupportedOperation):  # closed, or not reconfigurable
            pass


def configure_logging(verbose: bool = False) -> None:
    """Send the package's log records (and progress bars) to stderr; DEBUG with --verbose.

    The programs' streams are made safe to print any text to first (`make_streams_safe`).
    """
    make_streams_safe()
    logger = logging.getLogger("fastgan_tf")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(_Formatter())
        logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False


def unconfigure_logging() -> None:
    """Undo `configure_logging` (for programs that call a CLI's main in-process, and tests)."""
    logger = logging.getLogger("fastgan_tf")
    for handler in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
        logger.removeHandler(handler)
    logger.setLevel(logging.NOTSET)
    logger.propagate = True
