"""The start-up time of `mosquitto-guard run`, split into its phases.

Builds the same three-plugin set-up as `startup.py`, then runs the phases of `run` in fresh
Python processes, up to the point where `run` would replace itself with the broker. The phases
are interpreter start-up, the CLI's imports, the imports of the checks, loading the policy,
`prepare_launch` and the exit. Each child prints CLOCK_MONOTONIC timestamps, which the parent
compares with its own, so interpreter start-up is measured from the spawn.

Run as root after `make setup`:  .venv/bin/python benchmarks/phases.py [--runs 20]
"""

from __future__ import annotations

import argparse
import compileall
import itertools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from startup import ROOT, prepare

CHILD = """
import os
import sys
import time

started = time.perf_counter()
import mosquitto_guard.cli
import mosquitto_guard.cli.run
cli_imported = time.perf_counter()
from mosquitto_guard.launch.runner import prepare_launch
from mosquitto_guard.policy.model import load_policy
checks_imported = time.perf_counter()
from pathlib import Path

policy = load_policy(Path(sys.argv[1]))
policy_loaded = time.perf_counter()
plan = prepare_launch(policy, ["-c", sys.argv[2]], os.environ, broker=Path("/usr/sbin/mosquitto"))
prepared = time.perf_counter()
if plan.problems:
    sys.exit("\\n".join(plan.problems))
print(started, cli_imported, checks_imported, policy_loaded, prepared, flush=True)
os._exit(0)
"""

PHASES = (
    "interpreter start-up",
    "CLI imports",
    "imports of the checks",
    "load_policy",
    "prepare_launch",
    "exit",
    "total",
)


def measure(policy: Path, config: Path) -> list[float]:
    """Run one child and return the duration of each phase in seconds, then the total."""
    spawned = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(policy), str(config)],
        capture_output=True,
        text=True,
        check=False,
        cwd="/",
    )
    exited = time.perf_counter()
    if result.returncode != 0:
        raise RuntimeError(f"the child failed: {result.stderr}")
    marks = [spawned, *map(float, result.stdout.split()), exited]
    return [after - before for before, after in itertools.pairwise(marks)] + [exited - spawned]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="child processes (default 20)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run this benchmark as root", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="mosquitto-guard-phases-", dir="/var/lib"))
    # The policy's plugin directory must pass the ownership checks, as in startup.py.
    os.chmod(work, 0o755)  # noqa: S103
    compileall.compile_dir(ROOT / "mosquitto_guard", quiet=1)
    try:
        policy, config, _ = prepare(work)
        measure(policy, config)  # warm the page cache
        samples = [measure(policy, config) for _ in range(args.runs)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("| phase | median (ms) | min (ms) |")
    print("|---|---|---|")
    for index, name in enumerate(PHASES):
        values = [sample[index] * 1000 for sample in samples]
        print(f"| {name} | {statistics.median(values):.1f} | {min(values):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
