"""The real-world config corpus: where Mosquitto 2.0.11 stops on each file, if anywhere.

Each `include_dir` line is pointed at an empty directory first, keeping the line count, so
that the result depends on the file alone and not on the directories of the machine running
the test. `EXPECTED` was checked against the Debian 12 build of the 2.0.11 broker, and
`test_corpus_matches_real_broker` checks it again wherever that broker can run in a private
network namespace.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mosquitto_guard.config.flatten import flatten
from mosquitto_guard.config.model import BrokerConfig
from mosquitto_guard.config.reader import read_config
from mosquitto_guard.errors import ConfigError

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus" / "mosquitto-conf"
MOSQUITTO = shutil.which("mosquitto", path="/usr/sbin:/usr/bin")
CLEAN = "reads cleanly"

# File name -> CLEAN, or the line at which the broker reports "Error found at FILE:LINE".
EXPECTED: dict[str, str | int] = {
    "001.conf": 3,  # unknown option `z#log_type`
    "002.conf": 20,  # template placeholder `listener [mqtt-broker-port]` reads as port 0
    "004.conf": CLEAN,
    "005.conf": CLEAN,
    "007.conf": 1,  # auth_opt_backends before any auth_plugin line
    "008.conf": CLEAN,
    "010.conf": CLEAN,
    "011.conf": CLEAN,
    "013.conf": CLEAN,
    "014.conf": CLEAN,
    "016.conf": CLEAN,
    "017.conf": CLEAN,
    "019.conf": CLEAN,
    "020.conf": CLEAN,
    "022.conf": CLEAN,
    "023.conf": CLEAN,
    "025.conf": CLEAN,
    "026.conf": CLEAN,
    "028.conf": 19,  # max_keepalive 0, below the 2.0 minimum of 10
    "029.conf": CLEAN,
    "031.conf": CLEAN,
    "032.conf": CLEAN,
    "034.conf": CLEAN,
    "035.conf": CLEAN,
    "037.conf": CLEAN,
    "038.conf": 8,  # protocol http_api exists only in 2.1
    "040.conf": CLEAN,  # `autosave_interval seconds 30` reads as 0 through atoi()
    "041.conf": CLEAN,
    "043.conf": CLEAN,
    "044.conf": CLEAN,
    "046.conf": CLEAN,
    "047.conf": CLEAN,
    "049.conf": CLEAN,
    "050.conf": CLEAN,
    "052.conf": CLEAN,
    "053.conf": 4,  # unknown option `graph_interval`
    "055.conf": CLEAN,  # a template, but every placeholder sits inside a value
    "056.conf": CLEAN,
    "058.conf": 3,  # Jinja `{% if mqtt_tls %}`
    "059.conf": CLEAN,
    "061.conf": CLEAN,
    "062.conf": CLEAN,
    "064.conf": CLEAN,
    "065.conf": CLEAN,
    "067.conf": 20,  # allow_anonymous = false
    "068.conf": CLEAN,
    "070.conf": CLEAN,
    "071.conf": CLEAN,
    "073.conf": 16,  # store_clean_interval, removed in 2.0
    "074.conf": CLEAN,
    "076.conf": CLEAN,
    "077.conf": CLEAN,
    "079.conf": CLEAN,
    "080.conf": CLEAN,
    "082.conf": CLEAN,
    "083.conf": CLEAN,
    "085.conf": CLEAN,
    "086.conf": CLEAN,
    "088.conf": CLEAN,
    "089.conf": CLEAN,
    "091.conf": CLEAN,
    "092.conf": CLEAN,
    "094.conf": CLEAN,
    "095.conf": CLEAN,
    "097.conf": CLEAN,
    "098.conf": CLEAN,
    "100.conf": CLEAN,
}

needs_corpus = pytest.mark.skipif(
    not CORPUS.is_dir(), reason=f"config corpus not found at {CORPUS}"
)


def corpus_copy(name: str, directory: Path) -> Path:
    """Copy corpus file `name` into `directory` with each include_dir aimed at an empty dir."""
    empty = directory / "empty.d"
    empty.mkdir(exist_ok=True)
    lines = (CORPUS / name).read_bytes().split(b"\n")
    for index, line in enumerate(lines):
        if line.lstrip(b" ").startswith(b"include_dir ") and not line.startswith(b"#"):
            ending = b"\r" if line.endswith(b"\r") else b""
            lines[index] = b"include_dir " + bytes(empty) + ending
    copy = directory / name
    copy.write_bytes(b"\n".join(lines))
    return copy


def our_result(path: Path) -> str | int:
    try:
        read_config([path])
    except ConfigError as error:
        return error.line
    return CLEAN


@needs_corpus
def test_corpus_expectations_cover_every_file() -> None:
    assert sorted(EXPECTED) == sorted(path.name for path in CORPUS.glob("*.conf"))


@needs_corpus
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_file_reads_like_broker(tmp_path: Path, name: str) -> None:
    assert our_result(corpus_copy(name, tmp_path)) == EXPECTED[name]


@needs_corpus
@pytest.mark.parametrize("name", sorted(name for name in EXPECTED if EXPECTED[name] == CLEAN))
def test_corpus_file_flattens_to_same_options(tmp_path: Path, name: str) -> None:
    original = read_config([corpus_copy(name, tmp_path)])
    flat = tmp_path / "flat.conf"
    flat.write_bytes(flatten(original, {}))
    again = read_config([flat])
    expected = [option for option in original.options if option.key != "include_dir"]
    assert [(option.key, option.value) for option in again.options] == [
        (option.key, option.value) for option in expected
    ]
    assert endpoints(again) == endpoints(original)
    assert plugin_summary(again) == plugin_summary(original)


def endpoints(config: BrokerConfig) -> list[tuple[int, str | None]]:
    return [(listener.port, listener.address) for listener in config.listeners]


def plugin_summary(config: BrokerConfig) -> list[tuple[str, str, list[str]]]:
    return [(plugin.kind, plugin.path, sorted(plugin.options)) for plugin in config.plugins]


def broker_result(path: Path, stop: Path) -> str | int | None:
    """Run the 2.0 broker on `path` in a new network namespace and return where it stops.

    `stop` contains an unknown option, so a file that parses cleanly makes the broker stop at
    `stop` before it opens a listener, loads a plugin or writes a file. Returns None if the
    broker reports no line, as for its end-of-file bridge checks.
    """
    assert MOSQUITTO is not None
    command = ["unshare", "-n", MOSQUITTO, "-c", str(path), "-c", str(stop)]
    completed = subprocess.run(command, capture_output=True, timeout=30, check=False)
    output = (completed.stdout + completed.stderr).decode("utf-8", "replace")
    found = re.search(r"Error found at (.*):(\d+)\.", output)
    if found is None:
        return None
    return CLEAN if found.group(1) == str(stop) else int(found.group(2))


def can_unshare_network() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, check=False)
    return probe.returncode == 0


@needs_corpus
@pytest.mark.skipif(MOSQUITTO is None, reason="the mosquitto broker is not installed")
@pytest.mark.skipif(not can_unshare_network(), reason="needs root and `unshare -n`")
def test_corpus_matches_real_broker(tmp_path: Path) -> None:
    version = subprocess.run([MOSQUITTO or "mosquitto", "-h"], capture_output=True, check=False)
    if b"mosquitto version 2.0." not in version.stdout:
        pytest.skip("the expectations are for a Mosquitto 2.0 broker")
    stop = tmp_path / "stop.conf"
    stop.write_text("stop_after_the_file_under_test\n")
    results = {}
    for name in sorted(EXPECTED):
        directory = tmp_path / name.removesuffix(".conf")
        directory.mkdir()
        results[name] = broker_result(corpus_copy(name, directory), stop)
    assert results == EXPECTED
