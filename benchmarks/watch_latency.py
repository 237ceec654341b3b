"""Alert latency of `mosquitto-guard watch`: from a change of a watched file to its alert.

The tree is a broker config with a password file, an ACL file, a TLS CA file and an
include_dir of six files, baselined and signed. Each run starts `watch` on it
(`--interval 0 --no-syslog`) and makes `--changes` changes, one at a time, cycling through
three kinds. Each kind has three files of its own, so that a write or a rename-over always
changes the content alone, as an upgrade would, and goes through the expected-change lookup:

* write: the file is rewritten in place with new content;
* rename-over: new content is written to a temporary file in the same directory, which is then
  renamed over the file (a new inode);
* chmod: the mode is switched between 0600 and 0640 (the baseline has 0644).

Each latency runs from `time.monotonic()` just before the system call to the moment the
benchmark reads the alert for that file from watch's stderr. So it includes watch's wait for
the burst to settle (50 ms without events, see `integrity.monitor`), the recording and the
comparison. It also includes the expected-change lookup (a content change runs `dpkg-query`
once per file), the JSON encoding and the pipe. The next change starts after the alert is
read, so the changes do not queue behind each other.

Run as root after `make setup`:  .venv/bin/python benchmarks/watch_latency.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from startup import cpu_model

GUARD_SCRIPT = Path(sys.executable).parent / "mosquitto-guard"
GUARD = [str(GUARD_SCRIPT)] if GUARD_SCRIPT.exists() else [sys.executable, "-m", "mosquitto_guard"]
KINDS = ("write", "rename-over", "chmod")
# Seconds to wait for one alert before the run is reported as failed.
ALERT_WAIT = 30.0


class AlertReader:
    """A thread that reads watch's stderr and keeps each alert with the time it was read."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.alerts: list[tuple[float, dict[str, object]]] = []
        self.started = threading.Event()
        self._arrived = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            read_at = time.monotonic()
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "watch_started":
                self.started.set()
            elif event.get("event") == "integrity_alert":
                with self._arrived:
                    self.alerts.append((read_at, event))
                    self._arrived.notify_all()

    def wait_for(self, path: Path, after: int) -> float:
        """Return when the first alert for `path` from index `after` on was read."""
        deadline = time.monotonic() + ALERT_WAIT
        with self._arrived:
            while True:
                for read_at, event in self.alerts[after:]:
                    if event["path"] == str(path):
                        return read_at
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RuntimeError(f"no alert for {path} within {ALERT_WAIT} s")
                self._arrived.wait(remaining)

    def count(self) -> int:
        with self._arrived:
            return len(self.alerts)


def prepare(work: Path) -> tuple[list[str], list[Path]]:
    """Write keys, policy, config and a signed baseline, and return watch's argv and files."""
    for name in ("keys", "state", "conf.d", "manifests"):
        (work / name).mkdir(mode=0o755)

    key = work / "keys" / "bench"
    run_guard("keygen", "--type", "ssh", "--no-passphrase", str(key))
    policy = work / "policy.toml"
    policy.write_text(
        f'format_version = 1\nthreshold = 1\nplugin_dirs = []\nmanifest_dir = "{work}/manifests"'
        f'\nstate_dir = "{work}/state"\n\n[[keys]]\nname = "bench"\nfile = "{key}.pub"\n'
    )

    files = [work / "passwd", work / "acl", work / "ca.pem"]
    files += [work / "conf.d" / f"part{index}.conf" for index in range(6)]
    for path in files:
        path.write_text(f"{path.name} 0\n")
        os.chmod(path, 0o644)

    config = work / "mosquitto.conf"
    config.write_text(
        "listener 1883 127.0.0.1\n"
        f"password_file {work / 'passwd'}\n"
        f"acl_file {work / 'acl'}\n"
        f"cafile {work / 'ca.pem'}\n"
        f"include_dir {work / 'conf.d'}\n"
    )
    # The include_dir files must parse as config lines.
    for index, path in enumerate(files[3:]):
        path.write_text(f"max_keepalive {60 + index}\n")

    baseline = work / "state" / "baseline.json"
    targets = ["--policy", str(policy), "-c", str(config), "--no-progress"]
    run_guard("baseline", *targets, "--key", str(key), "--output", str(baseline))
    argv = [*GUARD, "watch", *targets, "--baseline", str(baseline)]
    return [*argv, "--interval", "0", "--no-syslog"], files


def run_guard(*args: str) -> None:
    subprocess.run([*GUARD, *args], check=True, capture_output=True)


def change(kind: str, path: Path, serial: int) -> Callable[[], None]:
    """Return the change of `kind` to make to `path`, with new content made from `serial`."""
    # A comment line keeps the include_dir files valid config.
    content = f"# change {serial}\n{path.read_text().splitlines()[-1]}\n".encode()

    def write() -> None:
        with open(path, "wb") as handle:
            handle.write(content)

    def rename_over() -> None:
        staged = path.with_name(f".{path.name}.new")
        staged.write_bytes(content)
        os.chmod(staged, 0o644)
        os.rename(staged, path)

    def chmod() -> None:
        mode = 0o640 if (path.stat().st_mode & 0o777) == 0o600 else 0o600
        os.chmod(path, mode)

    return {"write": write, "rename-over": rename_over, "chmod": chmod}[kind]


def measure(argv: list[str], files: list[Path], changes: int) -> dict[str, list[float]]:
    """Start watch, make the changes, and return the latencies in seconds by kind."""
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    reader = AlertReader(process)
    latencies: dict[str, list[float]] = {kind: [] for kind in KINDS}
    try:
        if not reader.started.wait(ALERT_WAIT):
            raise RuntimeError(f"watch did not start within {ALERT_WAIT} s")
        for serial in range(changes):
            kind = KINDS[serial % len(KINDS)]
            own_files = files[serial % len(KINDS) :: len(KINDS)]
            path = own_files[serial // len(KINDS) % len(own_files)]
            make_change = change(kind, path, serial)
            mark = reader.count()
            start = time.monotonic()
            make_change()
            latencies[kind].append(reader.wait_for(path, mark) - start)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    return latencies


def report(samples: dict[str, list[float]], runs: int, changes: int) -> None:
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} CPUs, kernel {platform.release()}, "
        f"Python {platform.python_version()}"
    )
    print(f"runs: {runs} of {changes} changes, one at a time\n")
    print("| change | count | p50 (ms) | p90 (ms) | p99 (ms) | max (ms) |")
    print("|---|---|---|---|---|---|")
    everything = [value for values in samples.values() for value in values]
    for name, values in [*samples.items(), ("all", everything)]:
        cells = " | ".join(f"{value:.1f}" for value in quantiles(values))
        print(f"| {name} | {len(values)} | {cells} |")


def quantiles(values: list[float]) -> list[float]:
    """Return p50, p90, p99 and the maximum of `values`, in milliseconds."""
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return [cuts[49] * 1000, cuts[89] * 1000, cuts[98] * 1000, max(values) * 1000]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1, help="runs, each a new watch (default 1)")
    parser.add_argument(
        "--changes", type=int, default=200, help="changes in each run (default 200)"
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run this benchmark as root", file=sys.stderr)
        return 2
    samples: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for _ in range(args.runs):
        work = Path(tempfile.mkdtemp(prefix="mosquitto-guard-watch-bench-", dir="/var/lib"))
        os.chmod(work, 0o755)  # noqa: S103
        try:
            argv, files = prepare(work)
            for kind, values in measure(argv, files, args.changes).items():
                samples[kind] += values
        finally:
            shutil.rmtree(work, ignore_errors=True)
    report(samples, args.runs, args.changes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
