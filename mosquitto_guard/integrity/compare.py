"""Compare a verified baseline with the files as they are now, the way AIDE reports.

A path is added when it is watched now and exists, but the baseline has no entry for it or
recorded it as missing. It is removed when the baseline recorded it as present, but it is
missing now or no longer watched. It is changed when it exists in both and any recorded
attribute differs; each change carries the old and the new value. A path missing in both is
not reported. A changed ctime alone is not a change: the content, mode and owner that decide
what the broker runs are the same. When something else changed, the ctime is listed too.
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

# Attributes that are reported only beside another change.
INFORMATIONAL = frozenset({"ctime", "target.ctime"})


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
    # Set when the change is expected: what explains it.
    explanation: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the difference as JSON-ready values."""
        result: dict[str, Any] = {"path": self.path, "reasons": list(self.reasons)}
        if self.kind == "changed":
            result["changes"] = {
                change.attribute: {"old": change.old, "new": change.new} for change in self.changes
            }
        if self.explanation is not None:
            result["explanation"] = self.explanation
        return result


@dataclass(frozen=True)
class Report:
    """Every difference, sorted by path within each kind.

    `expected` contains the changes that something trusted explains (see
    `integrity.expected`); they set no exit bit and raise no alert.
    """

    added: tuple[Difference, ...]
    removed: tuple[Difference, ...]
    changed: tuple[Difference, ...]
    expected: tuple[Difference, ...] = ()

    @property
    def alerts(self) -> tuple[Difference, ...]:
        """Return every unexpected difference: added, then removed, then changed."""
        return self.added + self.removed + self.changed

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
        if old is not None and new is not None and old.record is new.record:
            continue  # `check --fast` kept the baseline's own record
        old_present = old is not None and _present(old.record)
        new_present = new is not None and _present(new.record)
        if new is not None and new_present and not old_present:
            added.append(Difference("added", path, new.reasons))
        elif old is not None and old_present and not new_present:
            removed.append(Difference("removed", path, old.reasons))
        elif old is not None and new is not None and old_present:
            if old.record == new.record:
                continue
            changes = _changes(old.record, new.record)
            if changes:
                changed.append(Difference("changed", path, new.reasons, changes))
    return Report(tuple(added), tuple(removed), tuple(changed))


def _present(record: Record) -> bool:
    return record.get("type") != "missing"


def _changes(old: Record, new: Record) -> tuple[Change, ...]:
    changes = tuple(
        Change(attribute, old.get(attribute), new.get(attribute))
        for attribute in sorted(set(old) | set(new))
        if old.get(attribute) != new.get(attribute)
    )
    if all(change.attribute in INFORMATIONAL for change in changes):
        return ()
    return changes
