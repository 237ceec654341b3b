"""The event log of `watch`, and its sinks for stderr and syslog; `mqtt_alerts` adds MQTT.

Every event is one JSON object with `time` (UTC, ISO 8601 with milliseconds), `event` and
`host`; docs/integrity-watch.md lists the events and their fields. Each sink gets the same JSON
text. A sink that fails never stops or delays the watching: syslog datagrams are sent without
blocking, and MQTT messages are handed to a background thread through a bounded queue. A sink
logs an "error" event when it starts failing, not for each event it then loses, and an
info event ("syslog_recovered", "mqtt_connected") when it works again.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from mosquitto_guard.integrity.compare import Difference

Event = dict[str, Any]
# Called by a sink with an event name and a message, to log its own failures.
Reporter = Callable[[str, str], None]

# Events that are alerts: syslog priority warning, and published over MQTT.
ALERT_EVENTS = frozenset({"integrity_alert", "baseline_invalid"})
ERROR_EVENT = "error"
DEFAULT_SYSLOG_SOCKET = Path("/dev/log")
SYSLOG_IDENT = "mosquitto-guard"
# authpriv: the syslog facility for security messages.
SYSLOG_FACILITY = 10
SYSLOG_ERR = 3
SYSLOG_WARNING = 4
SYSLOG_INFO = 6


def utc_timestamp() -> str:
    """Return the current time as ISO 8601 UTC with milliseconds, e.g. 2026-01-31T12:00:00.123Z."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def build_event(name: str, **fields: Any) -> Event:
    """Return an event: `time`, `event` and `host`, then `fields`."""
    return {"time": utc_timestamp(), "event": name, "host": socket.gethostname(), **fields}


def render_event(event: Event) -> str:
    """Return `event` as one line of JSON, without the newline."""
    return json.dumps(event, sort_keys=False, separators=(", ", ": "), default=str)


def syslog_severity(name: str) -> int:
    """Return the syslog severity of an event: err, warning for alerts, else info."""
    if name == ERROR_EVENT:
        return SYSLOG_ERR
    if name in ALERT_EVENTS:
        return SYSLOG_WARNING
    return SYSLOG_INFO


class Sink(Protocol):
    """One destination of events."""

    def send(self, event: Event, line: str) -> None:
        """Send one event without blocking. Failures go to the sink's reporter."""

    def close(self, timeout: float) -> None:
        """Deliver what is pending for at most `timeout` seconds, then release resources."""


class StderrSink:
    """JSON lines on stderr, flushed after each event."""

    def __init__(self, report: Reporter) -> None:
        self._report = report
        self._failing = False

    def send(self, event: Event, line: str) -> None:
        # sys.stderr is looked up on each call: a progress bar may redirect it while it runs.
        try:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
        except OSError as error:
            # A closed stderr must not stop the watching while syslog or MQTT still works.
            if not self._failing:
                self._failing = True
                self._report(ERROR_EVENT, f"cannot write to stderr: {error.strerror}")

    def close(self, timeout: float) -> None:
        return None


class SyslogSink:
    """RFC 3164 datagrams on a local syslog socket, facility authpriv, ident mosquitto-guard.

    After a failure the socket is connected again on the next event, so a syslog daemon that
    restarts is picked up without restarting `watch`.
    """

    def __init__(self, path: Path, report: Reporter) -> None:
        self.path = path
        self._report = report
        self._socket: socket.socket | None = None
        self._failing = False
        self._lost = 0

    def open(self) -> None:
        """Connect to the socket now. A failure is reported, and retried with the next event."""
        if self._socket is None:
            self._connect()

    def send(self, event: Event, line: str) -> None:
        sock = self._socket or self._connect()
        if sock is None:
            return
        try:
            sock.send(self._datagram(event, line), socket.MSG_DONTWAIT)
        except BlockingIOError:
            self._failed(f"syslog socket {self.path} is full (the syslog daemon is not reading)")
            return
        except OSError as error:
            sock.close()
            self._socket = None
            self._failed(f"cannot send to syslog socket {self.path}: {error.strerror}")
            return
        if self._failing:
            lost, self._failing, self._lost = self._lost, False, 0
            self._report(
                "syslog_recovered",
                f"syslog socket {self.path} accepts events again; {lost} event(s) were not sent",
            )

    def close(self, timeout: float) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _connect(self) -> socket.socket | None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.connect(str(self.path))
        except OSError as error:
            sock.close()
            self._failed(f"cannot connect to syslog socket {self.path}: {error.strerror}")
            return None
        self._socket = sock
        return sock

    def _datagram(self, event: Event, line: str) -> bytes:
        priority = SYSLOG_FACILITY * 8 + syslog_severity(str(event.get("event")))
        stamp = time.strftime("%b %e %H:%M:%S")
        return f"<{priority}>{stamp} {SYSLOG_IDENT}[{os.getpid()}]: {line}".encode()

    def _failed(self, problem: str) -> None:
        self._lost += 1
        if self._failing:
            return
        self._failing = True
        self._report(
            ERROR_EVENT, f"{problem}; events go to stderr only until syslog accepts them again"
        )


class EventLog:
    """The sinks of `watch`, each of which receives every event. Threads may share it.

    The lock is re-entrant because a sink that fails reports it as an event of its own, from
    inside `emit`.
    """

    def __init__(self) -> None:
        self._sinks: list[Sink] = [StderrSink(self.report)]
        self._lock = threading.RLock()

    def add_sink(self, sink: Sink) -> None:
        """Send later events to `sink` too."""
        with self._lock:
            self._sinks.append(sink)

    def emit(self, name: str, **fields: Any) -> Event:
        """Build the event, send it to every sink and return it."""
        event = build_event(name, **fields)
        line = render_event(event)
        with self._lock:
            for sink in list(self._sinks):
                sink.send(event, line)
        return event

    def report(self, name: str, message: str) -> None:
        """Log event `name` with `message`. Sinks call it to report their own failures."""
        self.emit(name, message=message)

    def error(self, message: str, **fields: Any) -> None:
        """Log an "error" event with `message`."""
        self.emit(ERROR_EVENT, message=message, **fields)

    def close(self, timeout: float) -> None:
        """Close every sink, giving MQTT at most `timeout` seconds to deliver pending alerts."""
        # Last added first: MQTT may still log an event, which syslog then receives.
        with self._lock:
            sinks = self._sinks[1:]
        for sink in reversed(sinks):
            sink.close(timeout)
            with self._lock:
                self._sinks.remove(sink)


def difference_fields(difference: Difference) -> dict[str, Any]:
    """Return the fields of an alert for `difference`: kind, path, reasons, changes."""
    return {"kind": difference.kind, **difference.to_dict()}
