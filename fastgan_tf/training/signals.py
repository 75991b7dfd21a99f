"""Stopping a run cleanly: the first request finishes the step, saves and exits; a second one
quits at once (the last saved checkpoint stays intact).

A request is Ctrl-C (SIGINT) anywhere; SIGTERM on POSIX (what `kill`, systemd and job schedulers
send); on Windows, where no SIGTERM arrives from outside, Ctrl-Break and a supervisor's
CTRL_BREAK_EVENT (SIGBREAK). Signal handlers can only be installed from the main thread: a run
started from another thread (a GUI, a notebook's worker) leaves signals to its host program, which
can call `request()` to stop it the same way.
"""

from __future__ import annotations

import logging
import signal
import threading

log = logging.getLogger(__name__)

# SIGINT everywhere, SIGTERM where it exists and can be sent (POSIX), SIGBREAK on Windows.
STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGBREAK")


class GracefulStop:
    """Within the block, stop requests set `requested`; a second one raises KeyboardInterrupt."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is not threading.main_thread():
            log.debug("not the main thread: stop signals are left to the host program")
            return self
        for name in STOP_SIGNALS:
            number = getattr(signal, name, None)
            if number is not None:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def request(self) -> None:
        """Ask the run to stop after the current step (what a first Ctrl-C does)."""
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.info("Stopping: saving a checkpoint after this step (press Ctrl-C again to quit "
                 "now; the last saved checkpoint stays intact).")

    def _handle(self, signum, frame):
        self.request()

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
