"""A tiny text progress bar on stderr (no tqdm dependency).

    for path in progress(files, desc="decoding"):
        ...

    bar = ProgressBar(total=steps, desc="epoch 3")
    for step in bar:            # or bar.update() by hand
        bar.set_postfix(d_loss=0.41, g_loss=1.3)

On a terminal the line is redrawn in place at most every `min_interval` seconds. When the stream is
not a terminal (log file, CI, captured output) only the final line is written, so logs are not
flooded with carriage returns; pass `log_interval` to also get a plain line every so many seconds
during long loops.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import Any, Iterable, Iterator, TextIO


def _format_time(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes:02d}:{seconds:02d}"


def _format_value(value: Any) -> str:
    """Floats (also numpy/TF scalars) as 4 significant digits, everything else via str()."""
    if isinstance(value, (bool, int, str)):
        return str(value)
    try:
        return f"{float(value):.4g}"
    except (TypeError, ValueError):
        return str(value)


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class ProgressBar:
    """Counts iterations and prints `desc: 42%|####      | 42/100 [00:03<00:04, 12.1it/s, k=v]`."""

    def __init__(
        self,
        iterable: Iterable | None = None,
        total: int | None = None,
        desc: str = "",
        *,
        stream: TextIO | None = None,
        min_interval: float = 0.1,
        log_interval: float | None = None,
        width: int = 20,
        unit: str = "it",
        disable: bool = False,
    ):
        if total is None and iterable is not None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except TypeError:
                total = None
        self.iterable = iterable
        self.total = total
        self.desc = desc
        self.stream = stream if stream is not None else sys.stderr
        self.is_tty = _isatty(self.stream)
        self.min_interval = min_interval
        self.log_interval = log_interval
        self.width = width
        self.unit = unit
        self.disable = disable
        self.n = 0
        self.postfix: dict[str, Any] = {}
        self.start = time.monotonic()
        self._last_draw = float("-inf")
        self._last_log = self.start
        self.closed = False

    # -- iteration ------------------------------------------------------------------------------
    def __iter__(self) -> Iterator:
        if self.iterable is None:
            raise TypeError("ProgressBar was created without an iterable; call update() instead")
        try:
            for item in self.iterable:
                yield item
                self.update()
        finally:  # also runs on `break` (generator close) and on exceptions
            self.close()

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- updates --------------------------------------------------------------------------------
    def update(self, n: int = 1) -> None:
        self.n += n
        self._maybe_draw()

    def set_postfix(self, postfix: dict[str, Any] | None = None, **values: Any) -> None:
        """Replace the `key=value` items shown after the rate (e.g. current losses)."""
        self.postfix = {**(postfix or {}), **values}
        self._maybe_draw()

    def write(self, message: str) -> None:
        """Print a message on its own line without garbling the bar."""
        if self.disable:
            return
        if self.is_tty:
            self.stream.write("\r\033[K")
        self.stream.write(message.rstrip("\n") + "\n")
        self._last_draw = float("-inf")  # redraw the bar below the message on the next update
        self.stream.flush()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.disable:
            return
        line = self.format_line()
        self.stream.write(("\r\033[K" + line if self.is_tty else line) + "\n")
        self.stream.flush()

    # -- rendering ------------------------------------------------------------------------------
    def format_line(self, now: float | None = None) -> str:
        elapsed = (time.monotonic() if now is None else now) - self.start
        rate = self.n / elapsed if elapsed > 0 else 0.0
        if rate >= 1 or rate == 0:
            rate_text = f"{rate:.3g}{self.unit}/s"
        else:  # slow loops read better as seconds per item
            rate_text = f"{1 / rate:.3g}s/{self.unit}"
        parts = []
        if self.desc:
            parts.append(f"{self.desc}: ")
        if self.total:
            frac = min(self.n / self.total, 1.0)
            filled = int(frac * self.width)
            bar = "#" * filled + " " * (self.width - filled)
            remaining = (self.total - self.n) / rate if rate > 0 else 0.0
            parts.append(f"{frac:4.0%}|{bar}| {self.n}/{self.total} ")
            times = f"{_format_time(elapsed)}<{_format_time(remaining) if rate > 0 else '?'}"
        else:
            parts.append(f"{self.n}{self.unit} ")
            times = _format_time(elapsed)
        extras = [times, rate_text] + [f"{k}={_format_value(v)}" for k, v in self.postfix.items()]
        parts.append("[" + ", ".join(extras) + "]")
        return "".join(parts)

    def _maybe_draw(self) -> None:
        if self.disable or self.closed:
            return
        now = time.monotonic()
        if self.is_tty:
            if now - self._last_draw < self.min_interval:
                return
            self._last_draw = now
            columns = shutil.get_terminal_size((100, 20)).columns
            self.stream.write("\r\033[K" + self.format_line(now)[: max(columns - 1, 10)])
            self.stream.flush()
        elif self.log_interval is not None and now - self._last_log >= self.log_interval:
            self._last_log = now
            self.stream.write(self.format_line(now) + "\n")
            self.stream.flush()


def progress(
    iterable: Iterable, total: int | None = None, desc: str = "", **kwargs: Any
) -> ProgressBar:
    """`for x in progress(items, total, desc): ...` -> a ProgressBar wrapping `items`."""
    return ProgressBar(iterable, total=total, desc=desc, **kwargs)
