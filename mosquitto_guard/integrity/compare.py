"""Compare a verified baseline with the files as they are now, the way AIDE reports.

A path is added when it is watched now and exists, but the baseline has no entry for it or
recorded it as missing. It is removed when the baseline recorded it as present, but it is
missing now or no longer watched. It is changed when it exists in both and any recorded
attribute differs; each change carries the old and the new value. A path missing in both is
not reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mosquitto_guard.integrity.baseline import Entry
from mosquitto_guard.integrity.record import Record

# Bits of the `check` exit code.
ADDED = 1
REMOVED = 2
CHANGED = 4
BASELINE_INVALID = 8
CHECK_FAILED = 16


@dataclass(frozen=True)
class Change:
    """One attribute of a file whose value differs from the baseline; None means absent."""

    attribute: str
    old: str | int | None
    new: str | int | None


@dataclass(frozen=True)
class Difference:
    """One reported path: `kind` is "added", "removed" or "changed"."""

    kind: str
    path: str
    reasons: tuple[str, ...]
    changes: tuple[Change, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Return the difference as JSON-ready values."""
        result: dict[str, Any] = {"path": self.path, "reasons": list(self.reasons)}
        if self.kind == "changed":
            result["changes"] = {
                change.attribute: {"old": change.old, "new": change.new} for change in self.changes
            }
        return result


@dataclass(frozen=True)
class Report:
    """Every difference, sorted by path within each kind."""

    added: tuple[Difference, ...]
    removed: tuple[Difference, ...]
    changed: tuple[Difference, ...]

    @property
    def exit_code(self) -> int:
        """Return the exit code bits for the kinds of difference found."""
        code = ADDED if self.added else 0
        code |= REMOVED if self.removed else 0
        code |= CHANGED if self.changed else 0
        return code


def compare(baseline: dict[str, Entry], current: dict[str, Entry]) -> Report:
    """Compare the baseline's entries with the current ones, both keyed by path."""
    added: list[Difference] = []
    removed: list[Difference] = []
    changed: list[Difference] = []
    for path in sorted(set(baseline) | set(current)):
        old = baseline.get(path)
        new = current.get(path)
        old_present = old is not None and _present(old.record)
        new_present = new is not None and _present(new.record)
        if new is not None and new_present and not old_present:
            added.append(Difference("added", path, new.reasons))
        elif old is not None and old_present and not new_present:
            removed.append(Difference("removed", path, old.reasons))
        elif old is not None and new is not None and old_present:
            changes = _changes(old.record, new.record)
            if changes:
                changed.append(Difference("changed", path, new.reasons, changes))
    return Report(tuple(added), tuple(removed), tuple(changed))


def _present(record: Record) -> bool:
    return record.get("type") != "missing"


def _changes(old: Record, new: Record) -> tuple[Change, ...]:
    return tuple(
        Change(attribute, old.get(attribute), new.get(attribute))
        for attribute in sorted(set(old) | set(new))
        if old.get(attribute) != new.get(attribute)
    )
