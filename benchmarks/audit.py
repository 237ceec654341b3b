"""How long `mosquitto-guard audit` takes: the whole config corpus, and one host audit.

* corpus: every file of the real-world config corpus audited in this process, one file after
  another, with every rule (host-only rules are skipped). The goal is under 2 s for the corpus.
* host: `mosquitto-guard audit` as a subprocess, auditing this host's default config, package,
  service unit and running broker, with the text report sent to /dev/null. The goal is under
  1 s, which includes Python's start-up.

Each figure is the median wall time of `--runs` runs, after one untimed warm-up run of each.

Run after `make setup`:  .venv/bin/python benchmarks/audit.py [--runs 10]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from mosquitto_guard.audit.context import AuditContext, AuditOptions
from mosquitto_guard.audit.engine import run_audit
from mosquitto_guard.audit.rules import all_rules

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus" / "mosquitto-conf"
GUARD_SCRIPT = Path(sys.executable).parent / "mosquitto-guard"
CORPUS_GOAL_S = 2.0
HOST_GOAL_S = 1.0


def audit_corpus(files: list[Path]) -> int:
    """Audit each file once and return the number of findings."""
    rules = all_rules()
    findings = 0
    for path in files:
        report = run_audit(AuditContext(AuditOptions([path], host=False)), rules)
        findings += len(report.findings)
    return findings


def audit_host() -> int:
    """Run a host audit as a subprocess and return its exit status."""
    completed = subprocess.run(
        [str(GUARD_SCRIPT), "audit"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False
    )
    if completed.returncode not in (0, 1):
        raise SystemExit(f"mosquitto-guard audit failed: {completed.stderr.decode().strip()}")
    return completed.returncode


def median_seconds(action: Callable[[], int], runs: int) -> tuple[float, float, float]:
    """Return the median, minimum and maximum wall time of `runs` calls of `action`."""
    action()  # warm-up: imports, page cache
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times), max(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="timed runs of each (default 10)")
    args = parser.parse_args()
    if not CORPUS.is_dir():
        raise SystemExit(f"config corpus not found at {CORPUS}")
    files = sorted(CORPUS.glob("*.conf"))

    corpus = median_seconds(lambda: audit_corpus(files), args.runs)
    host = median_seconds(audit_host, args.runs)

    print(f"Python {platform.python_version()}, {platform.machine()}, {args.runs} runs each")
    print(f"{'audit':<28} {'median (s)':>10} {'min / max (s)':>16} {'goal (s)':>9}  met")
    rows = [
        (f"corpus, {len(files)} files, in-process", corpus, CORPUS_GOAL_S),
        ("host, subprocess", host, HOST_GOAL_S),
    ]
    for label, (median, low, high), goal in rows:
        met = "yes" if median < goal else "no"
        print(f"{label:<28} {median:>10.3f} {low:>7.3f} / {high:<6.3f} {goal:>9.1f}  {met}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
