"""Integrity monitoring: `mosquitto-guard baseline` and `check` against AIDE on the same tree.

The tree contains 20,000 files of 8 KiB in 40 directories and 50 files of 10 MiB in one more,
all seeded random bytes. It is built once under `--tree-dir` and reused by later runs while its
layout file matches.

Both tools record the same attributes of each file, as far as AIDE has them: mosquitto-guard's
type, mode, owner, group, inode, size, ctime, symlink target and SHA-256 are AIDE's ftype, p,
u, g, i, s, c, l and sha256. The AIDE rule also has n (the link count), which comes from the
same stat call. AIDE has no ELF build id, and the tree contains no ELF file. Both tools use
`--workers` threads. Besides the tree, mosquitto-guard's baseline always covers the broker
executable, the libraries and NSS modules it loads, the broker config, the policy and its key,
the systemd unit path and a few host files. AIDE covers the tree alone.

Each pair is timed in the same run, interleaved, with the order of the two tools swapped in
every other round, after one untimed pass of each command to warm the page cache:

* `mosquitto-guard baseline` against `aide --init`;
* `mosquitto-guard check` against `aide --check`, on the unchanged tree;
* `mosquitto-guard check --fast` against the same `aide --check` times.

Each figure is the wall time of the command as a subprocess, so mosquitto-guard's times include
Python's start-up. The ratios are AIDE's median over mosquitto-guard's median. Last, one byte
of one file is changed, and each check must report that file. The file's content is restored
afterwards, but its ctime stays new.

Run as root after `make setup`:  .venv/bin/python benchmarks/integrity.py [--runs 5]

It times the `mosquitto-guard` script beside the Python that runs it, so a regular install
is measured by running this file with that install's Python (see benchmarks/RESULTS.md).
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import json
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from machine_info import cpu_model

ROOT = Path(__file__).resolve().parents[1]
GUARD_SCRIPT = Path(sys.executable).parent / "mosquitto-guard"
BROKER = Path("/usr/sbin/mosquitto")
DEFAULT_TREE_DIR = Path("/var/tmp/mosquitto-guard-integrity-bench")
DEFAULT_SEED = 20250101

SMALL_FILES = 20_000
SMALL_FILE_BYTES = 8 * 1024
SMALL_DIRECTORIES = 40
LARGE_FILES = 50
LARGE_FILE_BYTES = 10 * 1024 * 1024

# Goals for AIDE's median time over mosquitto-guard's, per command.
GOALS = {"baseline": 1.5, "check": 1.5, "check --fast": 10.0}

# The AIDE attributes that match mosquitto-guard's record, see the module docstring.
AIDE_RULE = "p+ftype+i+l+n+u+g+s+c+sha256"

# The exit bit for changed files, the same in `mosquitto-guard check` and `aide --check`.
CHANGED_BIT = 4


@dataclass(frozen=True)
class Layout:
    """The location of the benchmark tree and the seed of its content."""

    root: Path
    seed: int

    @property
    def tree(self) -> Path:
        return self.root / "tree"

    @property
    def stamp(self) -> Path:
        return self.root / "layout.json"

    def description(self) -> dict[str, int]:
        return {
            "seed": self.seed,
            "small_files": SMALL_FILES,
            "small_file_bytes": SMALL_FILE_BYTES,
            "small_directories": SMALL_DIRECTORIES,
            "large_files": LARGE_FILES,
            "large_file_bytes": LARGE_FILE_BYTES,
        }

    def files(self) -> list[tuple[Path, int]]:
        """Return every file of the tree with its size, in the order they are generated."""
        per_directory = SMALL_FILES // SMALL_DIRECTORIES
        result = [
            (
                self.tree / "small" / f"{index // per_directory:02d}" / f"{index:05d}.bin",
                SMALL_FILE_BYTES,
            )
            for index in range(SMALL_FILES)
        ]
        result += [
            (self.tree / "large" / f"{index:02d}.bin", LARGE_FILE_BYTES)
            for index in range(LARGE_FILES)
        ]
        return result


def ensure_tree(layout: Layout) -> str:
    """Build the tree unless a complete one with the same layout exists.

    Returns whether the tree was built or reused, as a line to print.
    """
    expected = json.dumps(layout.description(), sort_keys=True)
    if layout.stamp.exists() and layout.stamp.read_text(encoding="utf-8") == expected:
        if all(path.is_file() and path.stat().st_size == size for path, size in layout.files()):
            return f"reused the tree in {layout.tree}"
    elif layout.tree.exists() and not layout.stamp.exists():
        raise SystemExit(
            f"{layout.tree} exists but has no {layout.stamp.name}, so this benchmark did not "
            "build it: remove it or choose another --tree-dir"
        )
    layout.stamp.unlink(missing_ok=True)
    shutil.rmtree(layout.tree, ignore_errors=True)
    # A seeded generator gives the same bytes on every build, and none of them is a secret.
    generator = random.Random(layout.seed)  # noqa: S311
    for path, size in layout.files():
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        path.write_bytes(generator.randbytes(size))
    os.sync()
    # The layout file is written last, so an interrupted build is rebuilt next time.
    layout.stamp.write_text(expected, encoding="utf-8")
    return f"built the tree in {layout.tree}"


def ensure_aide() -> str:
    """Install Debian's aide package when `aide` is missing, and return its version line."""
    if shutil.which("aide") is None:
        # Without the recommended aide-common, only /usr/bin/aide and its documentation are
        # installed, and no daily check job.
        environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", "aide"],
            check=True,
            env=environment,
            stdout=subprocess.DEVNULL,
        )
    completed = subprocess.run(["aide", "--version"], capture_output=True, text=True, check=True)
    text = completed.stdout + completed.stderr
    version = next((line.strip() for line in text.splitlines() if line.strip()), "unknown")
    package = subprocess.run(
        ["dpkg-query", "--show", "--showformat=${Version}", "aide"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return f"{version} (package {package or 'not from dpkg'})"


@dataclass(frozen=True)
class Setup:
    """The command lines of both tools, each reading its own files in the work directory."""

    guard_baseline: list[str]
    guard_check: list[str]
    aide_init: list[str]
    aide_check: list[str]
    aide_new_database: Path
    aide_database: Path
    aide_config: Path


def prepare(work: Path, tree: Path, workers: int) -> Setup:
    """Write a key, a policy, a broker config and an AIDE config into `work`."""
    guard = [str(GUARD_SCRIPT)]
    key = work / "bench-key"
    subprocess.run([*guard, "keygen", "--no-passphrase", str(key)], check=True, capture_output=True)
    policy = work / "policy.toml"
    policy.write_text(
        f"""format_version = 1
state_dir = "{work / "state"}"

[[keys]]
name = "bench"
file = "{key}.pub"

[integrity]
paths = ["{tree}"]
baseline = "{work / "baseline.json"}"
""",
        encoding="utf-8",
    )
    config = work / "mosquitto.conf"
    config.write_text("listener 1883 127.0.0.1\n", encoding="utf-8")
    targets = [
        "--policy",
        str(policy),
        "-c",
        str(config),
        "--broker",
        str(BROKER),
        # A unit file that does not exist is recorded as missing.
        "--unit",
        str(work / "mosquitto.service"),
        "--workers",
        str(workers),
        "--no-progress",
    ]
    database = work / "aide.db"
    new_database = work / "aide.db.new"
    aide_config = work / "aide.conf"
    aide_config.write_text(
        f"""database_in=file:{database}
database_out=file:{new_database}
gzip_dbout=no
report_url=stdout
num_workers={workers}
Bench = {AIDE_RULE}
{re.escape(str(tree))} Bench
""",
        encoding="utf-8",
    )
    return Setup(
        guard_baseline=[*guard, "baseline", *targets, "--key", str(key)],
        guard_check=[*guard, "check", *targets],
        aide_init=["aide", "--config", str(aide_config), "--init"],
        aide_check=["aide", "--config", str(aide_config), "--check"],
        aide_new_database=new_database,
        aide_database=database,
        aide_config=aide_config,
    )


def run_timed(argv: list[str]) -> tuple[float, str]:
    """Run `argv` and return its wall time in seconds and its stdout and stderr together.

    Exits when the command fails: every timed command must succeed, and every timed check must
    find the tree unchanged.
    """
    start = time.perf_counter()
    completed = subprocess.run(argv, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if completed.returncode != 0:
        raise SystemExit(
            f"{' '.join(argv)} exited with {completed.returncode}, expected 0:\n"
            f"{completed.stdout}{completed.stderr}"
        )
    return elapsed, completed.stdout + completed.stderr


class Bench:
    """Runs the commands of a `Setup` and keeps the wall time of each."""

    def __init__(self, setup: Setup) -> None:
        self.setup = setup
        self.samples: dict[str, list[float]] = {}
        self.outputs: dict[str, str] = {}

    def guard_baseline(self) -> float:
        return self.run("mosquitto-guard baseline", self.setup.guard_baseline)

    def aide_init(self) -> float:
        elapsed = self.run("aide --init", self.setup.aide_init)
        # Putting the new database in place is not part of AIDE's time.
        os.replace(self.setup.aide_new_database, self.setup.aide_database)
        return elapsed

    def guard_check(self) -> float:
        return self.run("mosquitto-guard check", self.setup.guard_check)

    def guard_check_fast(self) -> float:
        return self.run("mosquitto-guard check --fast", [*self.setup.guard_check, "--fast"])

    def aide_check(self) -> float:
        return self.run("aide --check", self.setup.aide_check)

    def run(self, name: str, argv: list[str]) -> float:
        elapsed, output = run_timed(argv)
        self.samples.setdefault(name, []).append(elapsed)
        self.outputs[name] = output
        return elapsed

    def measure(self, runs: int) -> None:
        """Run every command once untimed, then `runs` timed rounds of every command.

        Odd rounds run the two tools of each group in the opposite order.
        """
        groups = [
            (self.guard_baseline, self.aide_init),
            (self.guard_check, self.aide_check),
            (self.guard_check_fast,),
        ]
        for group in groups:
            for action in group:
                action()
        self.samples.clear()
        for index in range(runs):
            for group in groups:
                for action in group if index % 2 == 0 else reversed(group):
                    action()


def check_detection(setup: Setup, layout: Layout) -> list[str]:
    """Change one byte of one file, require every check to report it, then restore the file.

    Returns one line per check.
    """
    path = layout.files()[SMALL_FILES // 2][0]
    original = path.read_bytes()
    lines = []
    try:
        path.write_bytes(bytes([original[0] ^ 0xFF]) + original[1:])
        checks = {
            "mosquitto-guard check": setup.guard_check,
            "mosquitto-guard check --fast": [*setup.guard_check, "--fast"],
            "aide --check": setup.aide_check,
        }
        for name, argv in checks.items():
            completed = subprocess.run(argv, capture_output=True, text=True, check=False)
            if not completed.returncode & CHANGED_BIT:
                raise SystemExit(
                    f"{name} exited with {completed.returncode} after {path} changed, expected "
                    f"the changed bit {CHANGED_BIT}:\n{completed.stdout}{completed.stderr}"
                )
            if str(path) not in completed.stdout:
                raise SystemExit(f"{name} did not name {path} on stdout:\n{completed.stdout}")
            lines.append(f"{name}: exit {completed.returncode}, names {path}")
    finally:
        path.write_bytes(original)
    return lines


def count_entries(bench: Bench, layout: Layout) -> list[str]:
    """Return the number of entries in the tree and in each tool's record, one line each."""
    tree_entries = sum(1 for _ in layout.tree.rglob("*")) + 1
    lines = [f"tree: {tree_entries} entries (files, directories and the top directory)"]
    guard = re.search(r"(\d+) file\(s\) checked", bench.outputs.get("mosquitto-guard check", ""))
    if guard is not None:
        total = int(guard.group(1))
        lines.append(
            f"mosquitto-guard: {total} entries, that is the tree and {total - tree_entries} "
            "others (broker executable, its libraries, broker config, policy, key, unit path, "
            "host files)"
        )
    aide = re.search(r"Number of entries:\s*(\d+)", bench.outputs.get("aide --init", ""))
    if aide is not None:
        lines.append(f"AIDE: {aide.group(1)} entries, the tree only")
    return lines


def report(bench: Bench, runs: int, workers: int) -> bool:
    """Print the table and the ratios, and return whether every goal was met."""
    print(f"\nruns: {runs} of each, interleaved; workers: {workers} for each tool\n")
    print("| command | median (s) | min (s) | max (s) |")
    print("|---|---|---|---|")
    for name, values in bench.samples.items():
        print(
            f"| {name} | {statistics.median(values):.3f} | {min(values):.3f} | {max(values):.3f} |"
        )
    pairs = {
        "baseline": ("aide --init", "mosquitto-guard baseline"),
        "check": ("aide --check", "mosquitto-guard check"),
        "check --fast": ("aide --check", "mosquitto-guard check --fast"),
    }
    print("\n| comparison | AIDE / mosquitto-guard (medians) | goal | met |")
    print("|---|---|---|---|")
    all_met = True
    for label, (aide, guard) in pairs.items():
        ratio = statistics.median(bench.samples[aide]) / statistics.median(bench.samples[guard])
        met = ratio >= GOALS[label]
        all_met = all_met and met
        print(
            f"| {aide} / mosquitto-guard {label} | {ratio:.2f} | at least {GOALS[label]:g} | "
            f"{'yes' if met else 'no'} |"
        )
    return all_met


def machine(aide_version: str) -> str:
    """Return one line with the CPU, kernel, Python, AIDE and the mosquitto-guard commit."""
    commit = (
        subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        or "unknown"
    )
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    if dirty:
        commit += " with uncommitted changes"
    return (
        f"machine: {cpu_model()}, {os.cpu_count()} CPUs, kernel {platform.release()}, "
        f"Python {platform.python_version()}, {aide_version}, mosquitto-guard {commit}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each (default 5)")
    parser.add_argument(
        "--workers",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="threads each tool reads and hashes with (default: the CPUs this process may use, "
        f"{len(os.sched_getaffinity(0))} here)",
    )
    parser.add_argument(
        "--tree-dir",
        type=Path,
        default=DEFAULT_TREE_DIR,
        help=f"where the tree is built and kept between runs (default {DEFAULT_TREE_DIR})",
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the file content")
    parser.add_argument(
        "--remove-tree",
        action="store_true",
        help="delete the tree at the end instead of keeping it",
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        print(
            "run this benchmark as root: it may install aide, and baselines read root's files",
            file=sys.stderr,
        )
        return 2
    if args.runs < 1 or args.workers < 1:
        parser.error("--runs and --workers must be at least 1")

    if not GUARD_SCRIPT.exists():
        print(f"{GUARD_SCRIPT} not found: run `make setup` first", file=sys.stderr)
        return 2
    aide_version = ensure_aide()
    print(machine(aide_version))
    layout = Layout(args.tree_dir, args.seed)
    args.tree_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    print(ensure_tree(layout))
    # Byte-compile the package, as `pip install` does, so that no timed run compiles a module.
    compileall.compile_dir(ROOT / "mosquitto_guard", quiet=1)

    work = Path(tempfile.mkdtemp(prefix="mosquitto-guard-integrity-", dir=args.tree_dir))
    try:
        setup = prepare(work, layout.tree, args.workers)
        bench = Bench(setup)
        bench.measure(args.runs)
        for line in count_entries(bench, layout):
            print(line)
        print(
            f"AIDE rule: {AIDE_RULE}, num_workers={args.workers}, database uncompressed; "
            "mosquitto-guard --workers " + str(args.workers)
        )
        met = report(bench, args.runs, args.workers)
        print("\nchange detection, after the timed runs, with one byte of one file changed:")
        for line in check_detection(setup, layout):
            print(f"  {line}")
        print("\nevery goal met" if met else "\nat least one goal missed")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if args.remove_tree:
            shutil.rmtree(layout.tree, ignore_errors=True)
            layout.stamp.unlink(missing_ok=True)
            # The directory stays when it contains anything this benchmark did not create.
            with contextlib.suppress(OSError):
                args.tree_dir.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
