"""The full checks of `watch`, run in a thread so that inotify alerts keep coming during a scan.

One full check runs at a time. A request made while one runs starts another once the loop has
taken the outcome. When the baseline file fails verification, the files are compared with the
baseline verified earlier instead, and the outcome carries both that comparison and the error.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mosquitto_guard.errors import GuardError
from mosquitto_guard.integrity.baseline import Baseline, BaselineError
from mosquitto_guard.integrity.check import Bar, CheckResult, check_now
from mosquitto_guard.integrity.compare import compare
from mosquitto_guard.integrity.expected import explain_expected
from mosquitto_guard.integrity.scan import scan
from mosquitto_guard.integrity.watchlist import Targets
from mosquitto_guard.policy.model import Policy


@dataclass(frozen=True)
class FullCheck:
    """The outcome of one full check."""

    result: CheckResult | None = None
    error: GuardError | None = None
    # An exception no check raises on purpose: a bug, which the loop logs and raises again.
    failure: Exception | None = None


class FullChecks:
    """Full checks of one baseline, each in its own thread, one at a time."""

    def __init__(
        self,
        baseline_path: Path,
        policy: Policy,
        *,
        workers: int,
        bar: Bar | None,
        wake: Callable[[], None],
    ) -> None:
        self.baseline_path = baseline_path
        self.policy = policy
        self.workers = workers
        self.bar = bar
        # Called from the thread once an outcome is queued, to wake the loop.
        self._wake = wake
        self._outcomes: queue.SimpleQueue[FullCheck] = queue.SimpleQueue()
        self._running = False
        self._again = False

    def request(self, targets: Targets, baseline: Baseline) -> None:
        """Start a full check now, or after the one that runs now.

        `baseline` is the one verified earlier, compared with when the file no longer verifies.
        """
        if self._running:
            self._again = True
            return
        self._running = True
        thread = threading.Thread(
            target=self._run, args=(targets, baseline), name="full-check", daemon=True
        )
        thread.start()

    def finished(self) -> list[FullCheck]:
        """Return the outcomes queued since the last call."""
        outcomes: list[FullCheck] = []
        while not self._outcomes.empty():
            outcomes.append(self._outcomes.get())
            self._running = False
        return outcomes

    def take_request(self) -> bool:
        """Return True once when a request waits for the last check to end, and it has ended."""
        if self._again and not self._running:
            self._again = False
            return True
        return False

    def _run(self, targets: Targets, baseline: Baseline) -> None:
        try:
            outcome = FullCheck(
                result=check_now(
                    self.baseline_path, self.policy, targets, workers=self.workers, bar=self.bar
                )
            )
        except BaselineError as error:
            outcome = self._check_against(baseline, targets, error)
        except GuardError as error:
            outcome = FullCheck(error=error)
        except Exception as error:  # a bug: the loop logs it and raises it again
            outcome = FullCheck(failure=error)
        self._outcomes.put(outcome)
        self._wake()

    def _check_against(
        self, baseline: Baseline, targets: Targets, error: BaselineError
    ) -> FullCheck:
        """Compare with `baseline`, verified earlier, because the file fails verification now."""
        try:
            watched = targets.watched(self.policy, exclude=self.baseline_path)
            current = scan(watched, workers=self.workers)
        except GuardError:
            return FullCheck(error=error)
        report = compare(baseline.entries, current.entries)
        report = explain_expected(report, baseline, self.baseline_path, self.policy)
        return FullCheck(result=CheckResult(baseline, targets, current, report), error=error)
