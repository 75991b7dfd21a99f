"""Progress bars (tqdm) that follow the logging configuration.

    for path in progress(files, desc="decoding", unit="img"):
        ...

A bar is drawn on stderr only when the "fastgan_tf" logger is enabled for INFO, which the CLIs
arrange: a notebook or a program that imports the package stays quiet unless it configures
logging. On a terminal the bar is redrawn in place; when stderr is not a terminal (a log file, CI)
the final line is logged once when the bar closes, instead of a stream of carriage returns.
"""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterable

from tqdm import tqdm

log = logging.getLogger("fastgan_tf.progress")


class _LoggedWhenClosed(tqdm):
    """A bar that draws nothing and logs its final line, if it moved at all (for stderr that is
    not a terminal)."""

    def close(self):
        if not self.disable and self.n:
            log.info(str(self))
        super().close()


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def progress(iterable: Iterable | None = None, total: int | None = None, desc: str = "",
             unit: str = "it", disable: bool = False, **kwargs) -> tqdm:
    """A tqdm bar over `iterable` (or updated by hand with `.update(n)`); see the module doc.

    `disable=True` hides it whatever the logging configuration (e.g. for a handful of items).
    """
    if disable or not log.isEnabledFor(logging.INFO):
        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=True, **kwargs)
    if _is_terminal(sys.stderr):
        return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr,
                    dynamic_ncols=True, **kwargs)
    return _LoggedWhenClosed(iterable, total=total, desc=desc, unit=unit, file=io.StringIO(),
                             mininterval=3600, **kwargs)
