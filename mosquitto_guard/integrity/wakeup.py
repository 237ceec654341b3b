"""Signals and a wake-up pipe for the `watch` loop, which sleeps in poll(2).

Python runs a signal handler only between bytecodes, so a loop blocked in poll would not see
SIGTERM at once. `signal.set_wakeup_fd` makes the interpreter write to the pipe on each signal,
and the pipe is one of the descriptors the loop polls. The full check's thread writes to the
same pipe when it is done.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from types import FrameType
from typing import Any


class Wakeup:
    """A non-blocking pipe that wakes the loop, and the signal handlers that use it."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        # Held to write from another thread, and to close: after `close`, the descriptor
        # numbers may belong to other files.
        self._lock = threading.Lock()
        self._closed = False
        self._previous_handlers: dict[int, Any] = {}
        self._previous_wakeup_fd = -1
        self.stop_signal: int | None = None
        self.check_requested = False

    def fileno(self) -> int:
        """Return the pipe's read end, readable when the loop should wake."""
        return self._read

    def install_signal_handlers(self) -> None:
        """Record SIGTERM and SIGINT in `stop_signal` and SIGHUP in `check_requested`."""
        self._previous_wakeup_fd = signal.set_wakeup_fd(self._write)
        for signum, handler in (
            (signal.SIGTERM, self._on_stop),
            (signal.SIGINT, self._on_stop),
            (signal.SIGHUP, self._on_hangup),
        ):
            self._previous_handlers[signum] = signal.signal(signum, handler)

    def wake(self) -> None:
        """Wake the loop. Any thread may call this."""
        with self._lock:
            if self._closed:
                return
            # BlockingIOError: the pipe is full of wake-ups already, and one is enough.
            with contextlib.suppress(BlockingIOError):
                os.write(self._write, b"\0")

    def drain(self) -> None:
        """Read every wake-up waiting in the pipe."""
        with contextlib.suppress(BlockingIOError):
            while os.read(self._read, 512):
                pass

    def close(self) -> None:
        """Put back the previous signal handlers, and close the pipe."""
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        if self._previous_handlers:
            signal.set_wakeup_fd(self._previous_wakeup_fd)
        self._previous_handlers.clear()
        with self._lock:
            self._closed = True
            os.close(self._read)
            os.close(self._write)

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stop_signal = signum

    def _on_hangup(self, signum: int, frame: FrameType | None) -> None:
        self.check_requested = True
