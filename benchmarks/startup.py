"""Start-up overhead of `mosquitto-guard run` against the plain broker.

Both start the same config, which loads three signed plugins compiled from
`tests/plugins/marker.c`. Each measurement is the wall time from spawning the command to the
first accepted TCP connection on the broker's 127.0.0.1 listener, so it includes Python's own
start-up, the verification and the sealing. Runs alternate between the two commands, and the
medians are compared.

The package is byte-compiled first, as `pip install` does for an installed package, so that no
run pays for compiling a module whose `.pyc` is missing (for example under
PYTHONDONTWRITEBYTECODE=1).

Run as root after `make setup`:  .venv/bin/python benchmarks/startup.py [--runs 20]
"""

from __future__ import annotations

import argparse
import compileall
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine_info import cpu_model

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support import compile_plugin, free_port  # noqa: E402

MOSQUITTO = "/usr/sbin/mosquitto"
GUARD = [sys.executable, "-m", "mosquitto_guard"]
GUARD_SCRIPT = Path(sys.executable).parent / "mosquitto-guard"


def time_until_listening(argv: list[str], port: int) -> float:
    """Spawn `argv`, return seconds until 127.0.0.1:`port` accepts, then stop the process."""
    start = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{argv} exited with {process.returncode} before listening")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return time.perf_counter() - start
            except OSError:
                time.sleep(0.0005)
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the broker with SIGTERM, sent again until it exits, and SIGKILL after 10 s.

    Mosquitto's `main()` (read in the 1.6 source) opens its listeners, then installs its
    SIGTERM handler, then sets its run flag, so a SIGTERM that arrives between the last two
    steps is lost. This benchmark sends SIGTERM as soon as the listener accepts, which can hit
    that window: with Debian 12's Mosquitto 2.0.11, 2 of about 60 brokers kept running.
    """
    for _ in range(20):
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=0.5)
            return
        except subprocess.TimeoutExpired:
            continue
    process.kill()
    process.wait(timeout=10)


def prepare(work: Path) -> tuple[Path, Path, int]:
    """Build three signed plugins, a policy and a config in `work`.

    Returns the policy, the config and the config's listener port.
    """
    for name in ("plugins", "manifests", "state", "keys"):
        (work / name).mkdir(mode=0o755)
    key = work / "keys" / "bench"
    guard = [str(GUARD_SCRIPT)] if GUARD_SCRIPT.exists() else GUARD
    subprocess.run([*guard, "keygen", "--type", "ssh", "--no-passphrase", str(key)], check=True,
                   capture_output=True)
    port = free_port()
    lines = [f"listener {port} 127.0.0.1", "allow_anonymous true", "persistence false",
             "log_dest none"]
    for index in range(3):
        plugin = compile_plugin("marker.c", work / "plugins" / f"bench{index}.so")
        subprocess.run([*guard, "sign", str(plugin), "--key", str(key), "--name", f"bench{index}",
                        "--version", "1", "--manifest-dir", str(work / "manifests")],
                       check=True, capture_output=True)
        lines.append(f"plugin {plugin}")
    policy = work / "policy.toml"
    policy.write_text(f"""format_version = 1
threshold = 1
plugin_dirs = ["{work / 'plugins'}"]
manifest_dir = "{work / 'manifests'}"
state_dir = "{work / 'state'}"

[[keys]]
name = "bench"
file = "{key}.pub"
""")
    config = work / "mosquitto.conf"
    config.write_text("\n".join(lines) + "\n")
    return policy, config, port


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="runs of each command (default 20)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run this benchmark as root", file=sys.stderr)
        return 2
    base = Path("/var/lib")
    work = Path(tempfile.mkdtemp(prefix="mosquitto-guard-bench-", dir=base))
    # The broker drops to the mosquitto user, which must reach the plugins and the config.
    os.chmod(work, 0o755)  # noqa: S103
    compileall.compile_dir(ROOT / "mosquitto_guard", quiet=1)
    try:
        policy, config, port = prepare(work)
        guard = [str(GUARD_SCRIPT)] if GUARD_SCRIPT.exists() else GUARD
        commands = {
            "mosquitto": [MOSQUITTO, "-c", str(config)],
            "mosquitto-guard run": [
                *guard, "run", "--policy", str(policy), "--", "-c", str(config)
            ],
        }
        samples: dict[str, list[float]] = {name: [] for name in commands}
        time_until_listening(commands["mosquitto"], port)  # warm the page cache
        time_until_listening(commands["mosquitto-guard run"], port)
        for _ in range(args.runs):
            for name, argv in commands.items():
                samples[name].append(time_until_listening(argv, port))
        report(samples, args.runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def report(samples: dict[str, list[float]], runs: int) -> None:
    plain = statistics.median(samples["mosquitto"])
    guarded = statistics.median(samples["mosquitto-guard run"])
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs, kernel {platform.release()}, "
          f"Python {platform.python_version()}")
    print(f"runs: {runs} of each, interleaved; config with three signed plugins\n")
    print("| command | median (ms) | min (ms) | max (ms) |")
    print("|---|---|---|---|")
    for name, values in samples.items():
        print(f"| {name} | {statistics.median(values) * 1000:.1f} | {min(values) * 1000:.1f} | "
              f"{max(values) * 1000:.1f} |")
    print(f"\nadded by mosquitto-guard: {(guarded - plain) * 1000:.1f} ms (median); "
          f"ratio guarded/plain: {guarded / plain:.2f}")


if __name__ == "__main__":
    sys.exit(main())
