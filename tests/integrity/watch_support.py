"""Start `mosquitto-guard watch` in a child process and read its JSON event lines."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from baseline_setup import Setup

GUARD = [sys.executable, "-m", "mosquitto_guard"]
WAIT_SECONDS = 10.0
NOBODY = 65534

Event = dict[str, Any]
Predicate = Callable[[Event], bool]


class Watch:
    """A running `mosquitto-guard watch`, and the JSON events it has written to stderr."""

    def __init__(self, argv: list[str]) -> None:
        self.process = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        self.lines: list[str] = []
        self.events: list[Event] = []
        self._closed = False
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._changed:
                self.lines.append(line)
                try:
                    event = json.loads(line)
                except ValueError:
                    event = None
                if isinstance(event, dict):
                    self.events.append(event)
                self._changed.notify_all()
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def mark(self) -> int:
        """Return the number of events so far, to look only at later ones."""
        with self._changed:
            return len(self.events)

    def wait_for(self, predicate: Predicate, after: int = 0) -> Event:
        """Return the first event from index `after` on that matches; fail after WAIT_SECONDS."""
        deadline = time.monotonic() + WAIT_SECONDS
        with self._changed:
            index = after
            while True:
                for event in self.events[index:]:
                    if predicate(event):
                        return event
                index = len(self.events)
                remaining = deadline - time.monotonic()
                if self._closed or remaining <= 0:
                    raise AssertionError("no matching event; stderr:\n" + "".join(self.lines))
                self._changed.wait(remaining)

    def since(self, after: int) -> list[Event]:
        with self._changed:
            return list(self.events[after:])

    def stop(self, signum: int = signal.SIGTERM) -> int:
        """Send `signum`, and return the exit code once stderr is read to the end."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
        code = self.process.wait(timeout=WAIT_SECONDS)
        self._reader.join(WAIT_SECONDS)
        return code


def watch_argv(setup: Setup, *options: str) -> list[str]:
    argv = [*GUARD, "watch", *setup.target_args(), "--baseline", str(setup.baseline)]
    if not any(option.startswith("--syslog-socket") for option in options):
        argv.append("--no-syslog")
    return [*argv, *options]


def start_watch(setup: Setup, watches: list[Watch], *options: str) -> Watch:
    """Write the baseline, start watch and wait until it reports that it watches."""
    if not setup.baseline.exists():
        assert setup.write_baseline() == 0
    watch = Watch(watch_argv(setup, *options))
    watches.append(watch)
    watch.wait_for(is_event("watch_started"))
    return watch


def is_event(name: str, **fields: Any) -> Predicate:
    def matches(event: Event) -> bool:
        return event.get("event") == name and all(
            event.get(key) == value for key, value in fields.items()
        )

    return matches


def is_alert(kind: str, path: Path, source: str = "inotify") -> Predicate:
    return is_event("integrity_alert", kind=kind, path=str(path), source=source)


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def alerts_for(events: list[Event], path: Path) -> list[Event]:
    return [
        event
        for event in events
        if event.get("event") == "integrity_alert" and event.get("path") == str(path)
    ]


# Tampering, one kind per test.
