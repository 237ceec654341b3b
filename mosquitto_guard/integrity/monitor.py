"""The `watch` loop: inotify events become re-recorded paths, and differences become alerts.

Start-up runs in this order, so that no change made before or during it goes unreported:

 1. verify the baseline (`BaselineError` when it fails, and the command exits with 8);
 2. derive the watch list and add the inotify watches;
 3. run a full check, and report its differences with source "startup_check". A change made
    while it runs is recorded by it, or reported from its inotify event afterwards.

After the first event of a burst, the loop goes on reading events until none has come for
SETTLE_QUIET seconds, or SETTLE_MAX seconds have passed. It then watches the inode now behind
each affected name and derives the watch list again, because a config edit or a new file in an
include_dir can change it. Last, it records the affected paths and compares each with its
baseline entry.

The last difference reported for each path is kept, so the same difference is reported once,
and a path that matches the baseline again is logged as "returned_to_baseline".

A full check runs every `interval` seconds as a backstop, in a thread (see `full_check`). Its
records may be older than the loop's, so its result only nominates paths: the loop records
each nominated path again before it reports it.
"""

from __future__ import annotations

import os
import select
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from mosquitto_guard.errors import ConfigError, GuardError
from mosquitto_guard.integrity.alerts import EventLog
from mosquitto_guard.integrity.baseline import (
    SIGNATURE_SUFFIXES,
    Baseline,
    BaselineError,
    Entry,
    load_verified,
    signature_path,
)
from mosquitto_guard.integrity.check import Bar, CheckResult, check_now, listed_files
from mosquitto_guard.integrity.compare import Report, compare
from mosquitto_guard.integrity.expected import explain_expected
from mosquitto_guard.integrity.full_check import FullCheck, FullChecks
from mosquitto_guard.integrity.inotify_watches import Watches
from mosquitto_guard.integrity.progress import progress_bar
from mosquitto_guard.integrity.record import record_file
from mosquitto_guard.integrity.reported import ReportedDifferences
from mosquitto_guard.integrity.store import restore_log_path
from mosquitto_guard.integrity.wakeup import Wakeup
from mosquitto_guard.integrity.watchlist import Targets, WatchedFile
from mosquitto_guard.policy.model import Policy

SETTLE_QUIET = 0.05
SETTLE_MAX = 0.3
STARTUP_CHECK = "startup_check"
INOTIFY = "inotify"
PERIODIC_CHECK = "periodic_check"


@dataclass(frozen=True)
class Settings:
    """The settings of `watch`, from its command line: what it watches, and how."""

    baseline_path: Path
    policy: Policy
    targets: Targets
    # Seconds between full checks, or 0 for none after the start-up check.
    interval: float
    workers: int
    progress: bool


class Monitor:
    """The watch loop over the files of a verified baseline, as the module doc describes."""

    def __init__(self, settings: Settings, events: EventLog) -> None:
        self.settings = settings
        self.events = events
        self.targets = settings.targets
        self.baseline = Baseline(entries={})
        self.watched: dict[str, WatchedFile] = {}
        self.reported = ReportedDifferences(events)
        self._watches = Watches()
        self._wakeup = Wakeup()
        self._full_checks = FullChecks(
            settings.baseline_path,
            settings.policy,
            workers=settings.workers,
            bar=self._bar("periodic check"),
            wake=self._wakeup.wake,
        )
        self._last_errors: dict[str, str] = {}
        # The last "config_rejected" alert, so that it is not repeated for each event.
        self._config_alert: str | None = None
        # The baseline and its signatures: a change to one starts a full check, which reloads
        # the baseline. `write_signed` renames the new signature into place last.
        self._baseline_files = {str(settings.baseline_path)} | {
            str(signature_path(settings.baseline_path, kind)) for kind in SIGNATURE_SUFFIXES
        }
        self._restore_log = str(restore_log_path(settings.baseline_path))

    def install_signal_handlers(self) -> None:
        """Stop on SIGTERM and SIGINT, and run a full check on SIGHUP, until `close`."""
        self._wakeup.install_signal_handlers()

    def close(self) -> None:
        """Put back the signal handlers, and close the inotify instance and the wake pipe."""
        self._wakeup.close()
        self._watches.close()

    def start(self) -> None:
        """Verify the baseline, add the watches and run the start-up check.

        Raises `BaselineError` when the baseline fails verification and `GuardError` when the
        check cannot run.
        """
        settings = self.settings
        baseline = load_verified(settings.baseline_path, settings.policy)
        self.targets = settings.targets.resolve(baseline.targets)
        try:
            watched = self.targets.watched(settings.policy, exclude=settings.baseline_path)
        except ConfigError:
            # check_now below falls back to the baseline's list, and the alert follows it.
            watched = listed_files(baseline.entries)
        self._replace_watchlist(watched)
        self._report_failures(
            "watch", self._watches.watch_paths(sorted(self._baseline_files | {self._restore_log}))
        )
        result = check_now(
            settings.baseline_path,
            settings.policy,
            self.targets,
            workers=settings.workers,
            bar=self._bar("checking"),
        )
        self.baseline = result.baseline
        self.targets = result.targets
        self._replace_watchlist(listed_files(result.current.entries))
        paths = set(result.baseline.entries) | set(result.current.entries)
        self.reported.report(result.report, result.current.entries, paths, STARTUP_CHECK)
        if result.incomplete is not None:
            self._config_rejected(result.incomplete, STARTUP_CHECK)

    def run(self) -> int:
        """Watch until SIGTERM or SIGINT, and return the signal number."""
        poller = select.poll()
        poller.register(self._watches.fileno(), select.POLLIN)
        poller.register(self._wakeup.fileno(), select.POLLIN)
        interval = self.settings.interval
        next_check = time.monotonic() + interval if interval > 0 else None
        wakeup = self._wakeup
        while wakeup.stop_signal is None:
            timeout = None if next_check is None else max(0.0, next_check - time.monotonic())
            poller.poll(None if timeout is None else timeout * 1000 + 1)
            wakeup.drain()
            if wakeup.stop_signal is not None:
                break
            events = self._watches.read()
            if events:
                self._handle(events + self._settle())
            for outcome in self._full_checks.finished():
                self._apply_full_check(outcome)
            if self._full_checks.take_request():
                self._start_full_check()
            due = next_check is not None and time.monotonic() >= next_check
            if due or wakeup.check_requested:
                wakeup.check_requested = False
                next_check = time.monotonic() + interval if interval > 0 else None
                self._start_full_check()
        return wakeup.stop_signal

    def _settle(self) -> list[object]:
        """Read the rest of a burst: until SETTLE_QUIET passes without events, or SETTLE_MAX."""
        poller = select.poll()
        poller.register(self._watches.fileno(), select.POLLIN)
        deadline = time.monotonic() + SETTLE_MAX
        events: list[object] = []
        while (remaining := deadline - time.monotonic()) > 0:
            if not poller.poll(min(SETTLE_QUIET, remaining) * 1000):
                break
            events += self._watches.read()
        return events

    def _handle(self, events: list[object]) -> None:
        changes = self._watches.classify(events)
        if changes.overflow:
            self.events.error("the inotify event queue overflowed; running a full check")
            self._start_full_check()
        if not changes.paths and not changes.relist:
            # Other files in a watched directory: /etc and /usr/lib change often.
            return
        own = changes.paths & (self._baseline_files | {self._restore_log})
        if own:
            self._report_failures("watch", self._watches.watch_paths(sorted(own)))
        if own & self._baseline_files:
            self._start_full_check()
        paths = {path for path in changes.paths if path in self.watched}
        if self._restore_log in own:
            # A restore explains the changes it made: judge the reported paths again.
            paths |= set(self.reported.last)
        self._report_failures("watch", self._watches.watch_paths(sorted(paths)))
        paths |= self._relist()
        self._evaluate(paths, INOTIFY)

    def _relist(self) -> set[str]:
        """Derive the watch list again, and return the paths that joined or left it."""
        try:
            watched = self.targets.watched(
                self.settings.policy, exclude=self.settings.baseline_path
            )
        except ConfigError as error:
            message = f"the watch list cannot be derived: {error}"
            self._config_rejected(message, INOTIFY, error.path)
            return set()
        except GuardError as error:
            self._error_once(
                "relist",
                f"cannot derive the watch list again: {error}; still watching the "
                f"{len(self.watched)} files listed before",
            )
            return set()
        self._last_errors.pop("relist", None)
        self._config_alert = None
        return self._replace_watchlist(watched)

    def _config_rejected(self, message: str, source: str, path: str | None = None) -> None:
        """Alert, once per message, that the broker would reject its config now.

        An alert, not an error, because a file dropped into an include_dir can cause it, and
        it goes to MQTT like the other alerts. The files listed before are still watched.
        """
        if message == self._config_alert:
            return
        self._config_alert = message
        self.events.emit(
            "integrity_alert",
            kind="config_rejected",
            path=path,
            message=message,
            source=source,
        )

    def _replace_watchlist(self, watched: list[WatchedFile]) -> set[str]:
        new = {item.name: item for item in watched}
        joined = new.keys() - self.watched.keys()
        left = self.watched.keys() - new.keys()
        for path in left - self._baseline_files - {self._restore_log}:
            self._watches.forget(path)
        self.watched = new
        failures = self._watches.watch_paths(sorted(joined))
        failures += self._watches.set_listed(self._listed_directories())
        self._report_failures("watch", failures)
        return joined | left

    def _listed_directories(self) -> list[str]:
        """Return the watched directories and the systemd drop-in directory."""
        listed = [path for path in self.watched if os.path.isdir(path) and not os.path.islink(path)]
        if self.targets.unit is not None:
            listed.append(f"{self.targets.unit}.d")
        return listed

    def _evaluate(self, paths: set[str], source: str) -> None:
        """Record `paths` now, compare them with the baseline, and report what is new."""
        current = {
            path: Entry(self.watched[path].reasons, record_file(Path(path)))
            for path in paths
            if path in self.watched
        }
        old = {path: self.baseline.entries[path] for path in paths if path in self.baseline.entries}
        report = self._explain(compare(old, current))
        self.reported.report(report, current, paths, source)

    def _explain(self, report: Report) -> Report:
        return explain_expected(
            report, self.baseline, self.settings.baseline_path, self.settings.policy
        )

    def _start_full_check(self) -> None:
        self._full_checks.request(self.targets, self.baseline)

    def _apply_full_check(self, outcome: FullCheck) -> None:
        if outcome.failure is not None:
            self.events.error(f"the periodic check failed: {outcome.failure!r}")
            raise outcome.failure
        if isinstance(outcome.error, BaselineError):
            message = str(outcome.error)
            if self._last_errors.get("baseline") != message:
                self.events.emit(
                    "baseline_invalid",
                    baseline=str(self.settings.baseline_path),
                    message=f"{message}; still comparing with the baseline verified earlier",
                    source=PERIODIC_CHECK,
                )
            self._last_errors["baseline"] = message
        elif outcome.error is not None:
            self.events.error(f"the periodic check could not run: {outcome.error}")
        else:
            self._last_errors.pop("baseline", None)
        if outcome.result is not None:
            self._adopt(outcome.result)

    def _adopt(self, result: CheckResult) -> None:
        """Take the baseline and watch list of a full check, and judge what it nominates."""
        if result.baseline != self.baseline:
            self.events.emit(
                "baseline_reloaded",
                baseline=str(self.settings.baseline_path),
                files=len(result.baseline.entries),
                signers=list(result.baseline.signers),
            )
            self.baseline = result.baseline
        self.targets = result.targets
        nominated = self._replace_watchlist(listed_files(result.current.entries))
        nominated |= self.reported.unreported(result.report, result.current.entries)
        still_watched = sorted(path for path in nominated if path in self.watched)
        self._report_failures("watch", self._watches.watch_paths(still_watched))
        self._evaluate(nominated, PERIODIC_CHECK)

    def _bar(self, label: str) -> Bar | None:
        if not self.settings.progress:
            return None
        return partial(progress_bar, label=label)

    def _report_failures(self, key: str, failures: list[str]) -> None:
        if failures:
            first = "; ".join(failures[:3])
            more = f" (and {len(failures) - 3} more)" if len(failures) > 3 else ""
            self._error_once(key, f"{first}{more}; the periodic check still covers these files")

    def _error_once(self, key: str, message: str) -> None:
        """Log `message` unless it is the last error logged under `key`."""
        if self._last_errors.get(key) != message:
            self.events.error(message)
        self._last_errors[key] = message
