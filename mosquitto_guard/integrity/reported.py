"""The difference last reported for each path, so that each difference is reported once.

Two differences are the same when they have the same kind, the same changed attributes with
the same old and new values, and the same recorded state now. A ctime, alone, never makes
them differ: a chmod to the mode a file already has, or a touch, moves only the ctime.
"""

from __future__ import annotations

from collections.abc import Iterable

from mosquitto_guard.integrity.alerts import EventLog, difference_fields
from mosquitto_guard.integrity.baseline import Entry
from mosquitto_guard.integrity.compare import INFORMATIONAL, Difference, Report

Judgement = tuple[object, ...]


def judge(difference: Difference | None, entry: Entry | None) -> Judgement | None:
    """Return what identifies `difference` for a path whose entry now is `entry`."""
    if difference is None:
        return None
    changes = tuple(
        (change.attribute, change.old, change.new)
        for change in difference.changes
        if change.attribute not in INFORMATIONAL
    )
    record = () if entry is None else _state(entry)
    return (difference.kind, difference.explanation is not None, changes, record)


def _state(entry: Entry) -> tuple[tuple[str, object], ...]:
    return tuple(
        (key, value) for key, value in sorted(entry.record.items()) if key not in INFORMATIONAL
    )


def _by_path(report: Report) -> dict[str, Difference]:
    return {difference.path: difference for difference in (*report.alerts, *report.expected)}


class ReportedDifferences:
    """Report each new difference as an event, and remember it per path."""

    def __init__(self, events: EventLog) -> None:
        self.events = events
        self.last: dict[str, Judgement] = {}

    def report(
        self, report: Report, current: dict[str, Entry], paths: Iterable[str], source: str
    ) -> None:
        """Log each difference of `paths` not reported yet, and each path that matches again.

        An unexpected difference is an "integrity_alert", an expected one an
        "expected_change", and a path that differed and matches the baseline now is
        "returned_to_baseline".
        """
        found = _by_path(report)
        for path in sorted(paths):
            difference = found.get(path)
            judgement = judge(difference, current.get(path))
            if judgement == self.last.get(path):
                continue
            if difference is None or judgement is None:
                del self.last[path]
                self.events.emit("returned_to_baseline", path=path, source=source)
                continue
            self.last[path] = judgement
            name = "integrity_alert" if difference.explanation is None else "expected_change"
            self.events.emit(name, **difference_fields(difference), source=source)

    def unreported(self, report: Report, current: dict[str, Entry]) -> set[str]:
        """Return the paths whose difference in `report` is not the one last reported."""
        found = _by_path(report)
        return {
            path
            for path in found.keys() | self.last.keys()
            if judge(found.get(path), current.get(path)) != self.last.get(path)
        }
