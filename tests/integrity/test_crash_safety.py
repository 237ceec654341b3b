"""A baseline write killed with SIGKILL at any moment leaves the old or the new signed baseline.

Two kinds of writer are killed many times over:

- a loop that rewrites the baseline again and again, alternating two contents and two key
  kinds (SSH and minisign), so that kills land inside every step of the write;
- the real `mosquitto-guard baseline` command, killed at delays spread over its run time.

After each kill, `load_verified` must accept the baseline and return one of the two contents.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from baseline_setup import Setup
from support import Guard

from mosquitto_guard.integrity.baseline import Baseline, Entry, load_verified, render_baseline
from mosquitto_guard.integrity.baseline import write_signed as write_baseline_signed
from mosquitto_guard.policy.model import load_policy
from mosquitto_guard.signing.keys import load_private_key

KILLS = 200
CLI_KILLS = 25

WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from mosquitto_guard.integrity.baseline import write_signed
    from mosquitto_guard.signing.keys import load_private_key

    target = Path(sys.argv[1])
    contents = [Path(sys.argv[2]).read_bytes(), Path(sys.argv[3]).read_bytes()]
    keys = [load_private_key(Path(sys.argv[4])), load_private_key(Path(sys.argv[5]))]
    print("ready", flush=True)
    turn = 0
    while True:
        write_signed(target, contents[turn % 2], keys[(turn // 2) % 2])
        turn += 1
    """
)


def document(label: str) -> bytes:
    entry = Entry(reasons=(label,), record={"type": "file", "sha256": label * 64})
    return render_baseline(Baseline(entries={f"/{label}": entry}))


def test_killed_write_loop_leaves_a_valid_baseline(guard: Guard, tmp_path: Path) -> None:
    guard.keygen("mini", "minisign")
    guard.write_policy(["alice", "mini"])
    policy = load_policy(guard.policy)
    target = guard.root / "state" / "baseline.json"
    contents = {"a": document("a"), "b": document("b")}
    for label, data in contents.items():
        (tmp_path / label).write_bytes(data)
    write_baseline_signed(target, contents["a"], load_private_key(guard.keys["alice"]))

    rng = random.Random(20261204)
    outcomes = {"a": 0, "b": 0}
    interrupted = 0
    for _ in range(KILLS):
        writer = subprocess.Popen(
            [
                sys.executable,
                "-c",
                WRITER,
                str(target),
                str(tmp_path / "a"),
                str(tmp_path / "b"),
                str(guard.keys["alice"]),
                str(guard.keys["mini"]),
            ],
            stdout=subprocess.PIPE,
        )
        assert writer.stdout is not None
        assert writer.stdout.readline() == b"ready\n"
        time.sleep(rng.uniform(0, 0.05))
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        assert writer.returncode == -signal.SIGKILL

        # A pending signature or temporary file left behind: the kill landed inside a write.
        leftovers = [path for path in target.parent.iterdir() if path.name.count(".") > 2]
        interrupted += bool(leftovers)
        baseline = load_verified(target, policy)
        [label] = [path.strip("/") for path in baseline.entries]
        outcomes[label] += 1

    assert outcomes["a"] > 0, outcomes
    assert outcomes["b"] > 0, outcomes
    assert interrupted > 0


def test_killed_baseline_command_leaves_old_or_new(setup: Setup) -> None:
    policy = load_policy(setup.guard.policy)
    acl = setup.root / "acl"
    texts = ["topic read #\n", "topic write #\n"]
    digests = {hashlib.sha256(text.encode()).hexdigest() for text in texts}
    acl.write_text(texts[0])
    assert setup.write_baseline() == 0

    argv = [
        sys.executable,
        "-m",
        "mosquitto_guard",
        "baseline",
        *setup.target_args(),
        "--key",
        str(setup.guard.keys["alice"]),
        "--output",
        str(setup.baseline),
        "--no-progress",
    ]
    started = time.monotonic()
    subprocess.run(argv, check=True, capture_output=True)
    duration = time.monotonic() - started

    rng = random.Random(4)
    seen: set[str] = set()
    for index in range(CLI_KILLS):
        # Alternate the ACL, so each run would turn the baseline's record into the other one.
        acl.write_text(texts[index % 2])
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0, duration * 1.2))
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        recorded = load_verified(setup.baseline, policy).entries[str(acl)].record["sha256"]
        assert recorded in digests
        seen.add(str(recorded))

    # Some kills came after the write and some before it.
    assert seen == digests
