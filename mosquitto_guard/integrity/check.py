"""One integrity check: verify the signed baseline, record the watched files, compare.

`check`, `watch` and `run` all check through `check_now`, so the same rules decide what is a
difference and what is expected in each of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from mosquitto_guard.errors import ConfigError
from mosquitto_guard.integrity.baseline import Baseline, Entry, load_verified
from mosquitto_guard.integrity.compare import Report, compare
from mosquitto_guard.integrity.expected import explain_expected
from mosquitto_guard.integrity.scan import Progress, scan
from mosquitto_guard.integrity.watchlist import Targets, WatchedFile
from mosquitto_guard.policy.model import Policy

# Given the number of files, returns a context that yields the scan's progress callback.
Bar = Callable[[int], AbstractContextManager[Progress | None]]


@dataclass(frozen=True)
class CheckResult:
    """The verified baseline, the targets it was checked for, the files now, how they differ."""

    baseline: Baseline
    targets: Targets
    current: Baseline
    report: Report
    # Set when the watch list could not be derived (the broker would reject the config): the
    # files the baseline lists were compared instead, and the check is incomplete.
    incomplete: str | None = None


def check_now(
    baseline_path: Path,
    policy: Policy,
    targets: Targets,
    *,
    workers: int = 1,
    fast: bool = False,
    bar: Bar | None = None,
) -> CheckResult:
    """Verify the baseline, record the watched files and compare them with it.

    Empty fields of `targets` are taken from the baseline's record of its targets. `fast`
    trusts the baseline's record of a file whose stat data is unchanged. `bar`, called with the
    number of files, gives the progress callback for the scan. Raises `BaselineError` when the
    baseline fails verification, and `GuardError` when the check cannot run.
    """
    baseline = load_verified(baseline_path, policy)
    targets = targets.resolve(baseline.targets)
    incomplete = None
    try:
        watched = targets.watched(policy, exclude=baseline_path)
    except ConfigError as error:
        # A config the broker rejects, such as a bad file dropped into conf.d, must not hide
        # the other changes: compare the files the baseline lists, and mark the check incomplete.
        incomplete = f"the watch list cannot be derived: {error}"
        watched = listed_files(baseline.entries)
    known = baseline.entries if fast else None
    with (bar or _no_bar)(len(watched)) as progress:
        current = scan(watched, workers=workers, known=known, progress=progress)
    report = compare(baseline.entries, current.entries)
    report = explain_expected(report, baseline, baseline_path, policy)
    return CheckResult(baseline, targets, current, report, incomplete)


def listed_files(entries: Mapping[str, Entry]) -> list[WatchedFile]:
    """Return the watch list that `entries`, of a baseline or a check, record."""
    return [WatchedFile(path, entry.reasons) for path, entry in entries.items()]


@contextmanager
def _no_bar(total: int) -> Iterator[Progress | None]:
    yield None
