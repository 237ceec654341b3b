"""One integrity check: verify the signed baseline, record the watched files, compare.

`check`, `watch` and `run` all check through `check_now`, so the same rules decide what is a
difference and what is expected in each of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mosquitto_guard.integrity.baseline import Baseline, load_verified
from mosquitto_guard.integrity.compare import Report, compare
from mosquitto_guard.integrity.expected import explain_expected
from mosquitto_guard.integrity.scan import Progress, scan
from mosquitto_guard.integrity.watchlist import WatchedFile, watched_files
from mosquitto_guard.policy.model import Policy


@dataclass(frozen=True)
class Targets:
    """What the baseline covers: the broker's config files, its executable and its unit."""

    configs: tuple[Path, ...]
    broker: Path | None
    unit: Path | None

    def watched(self, policy: Policy) -> list[WatchedFile]:
        """Return the files to watch now; raises `ConfigError` or `HostError` like
        `watchlist.watched_files`."""
        return watched_files(list(self.configs), policy, self.broker, self.unit)


@dataclass(frozen=True)
class CheckResult:
    """The verified baseline, the files as recorded now, and how they differ."""

    baseline: Baseline
    current: Baseline
    report: Report


def check_now(
    baseline_path: Path,
    policy: Policy,
    targets: Targets,
    *,
    workers: int = 1,
    fast: bool = False,
    progress: Progress | None = None,
    watched: list[WatchedFile] | None = None,
) -> CheckResult:
    """Verify the baseline, record the watched files and compare them with it.

    `fast` trusts the baseline's record of a file whose stat data is unchanged. `watched`
    skips deriving the watch list when the caller already has it. Raises `BaselineError` when
    the baseline fails verification, and `GuardError` when the check cannot run.
    """
    baseline = load_verified(baseline_path, policy)
    if watched is None:
        watched = targets.watched(policy)
    known = baseline.entries if fast else None
    current = scan(watched, workers=workers, known=known, progress=progress)
    report = compare(baseline.entries, current.entries)
    report = explain_expected(report, baseline_path, policy)
    return CheckResult(baseline=baseline, current=current, report=report)
