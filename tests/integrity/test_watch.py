"""`mosquitto-guard watch`: the real command on real files, with real inotify events.

Each test starts `watch` as a subprocess on a config from `baseline_setup.make_setup`, tampers
with a file and reads the JSON events from its stderr. WAIT_SECONDS bounds how long a test waits
for an event, so that a missing event fails the test instead of hanging it. It is not a latency
requirement.
"""

from __future__ import annotations

import json
import mmap
import os
import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from baseline_setup import Setup
from support import compile_plugin
from watch_support import (
    GUARD,
    NOBODY,
    WAIT_SECONDS,
    Event,
    Watch,
    alerts_for,
    is_alert,
    is_event,
    sha256_of,
    start_watch,
    watch_argv,
)

from mosquitto_guard.cli import main


def test_watch_alerts_on_write(setup: Setup, watches: list[Watch]) -> None:
    watch = start_watch(setup, watches)
    acl = setup.root / "acl"
    old = acl.read_bytes()
    acl.write_text("topic readwrite secret/#\n")
    alert = watch.wait_for(is_alert("changed", acl))
    assert alert["changes"]["sha256"] == {
        "old": sha256_of(old),
        "new": sha256_of(b"topic readwrite secret/#\n"),
    }
    assert alert["reasons"][0].startswith("acl_file (")
    assert alert["host"] == os.uname().nodename
    assert alert["time"].endswith("Z")
    assert len(alert["time"]) == len("2026-01-31T12:00:00.123Z")


def test_watch_alerts_on_rename_over(setup: Setup, watches: list[Watch]) -> None:
    watch = start_watch(setup, watches)
    staged = setup.root / "new.conf"
    staged.write_bytes(setup.config.read_bytes() + b"max_connections 5\n")
    old_inode = setup.config.stat().st_ino
    os.rename(staged, setup.config)
    alert = watch.wait_for(is_alert("changed", setup.config))
    assert alert["changes"]["inode"]["old"] == old_inode
    assert alert["changes"]["inode"]["new"] == setup.config.stat().st_ino
    assert "sha256" in alert["changes"]


def test_watch_follows_renamed_inode(setup: Setup, watches: list[Watch]) -> None:
    """A write through a hard link outside every watched directory reaches only the inode."""
    watch = start_watch(setup, watches)
    elsewhere = setup.root / "elsewhere"
    elsewhere.mkdir()
    staged = setup.root / "new.conf"
    staged.write_bytes(setup.config.read_bytes() + b"max_connections 5\n")
    os.link(staged, elsewhere / "hard-link")
    os.rename(staged, setup.config)
    first = watch.wait_for(is_alert("changed", setup.config))
    mark = watch.mark()
    with open(elsewhere / "hard-link", "ab") as handle:
        handle.write(b"max_connections 6\n")
    second = watch.wait_for(is_alert("changed", setup.config), after=mark)
    assert second["changes"]["sha256"]["new"] == sha256_of(setup.config.read_bytes())
    assert second["changes"]["sha256"]["new"] != first["changes"]["sha256"]["new"]


def test_watch_alerts_on_include_dir_file(setup: Setup, watches: list[Watch]) -> None:
    watch = start_watch(setup, watches)
    added = setup.root / "conf.d" / "zz-extra.conf"
    added.write_text("max_inflight_messages 10\n")
    alert = watch.wait_for(is_alert("added", added))
    assert "included config file" in alert["reasons"]
    assert "changes" not in alert
    # The new file is watched from now on: its next state is reported too.
    mark = watch.mark()
    added.write_text("max_inflight_messages 1\n")
    watch.wait_for(is_alert("added", added), after=mark)


def test_watch_alerts_on_new_drop_in(setup: Setup, watches: list[Watch]) -> None:
    """The drop-in directory is watched even when no drop-in, so no watched file, is in it."""
    (setup.root / "mosquitto.service.d" / "guard.conf").unlink()
    watch = start_watch(setup, watches)
    drop_in = setup.root / "mosquitto.service.d" / "zz-override.conf"
    drop_in.write_text("[Service]\nExecStartPre=/bin/true\n")
    alert = watch.wait_for(is_alert("added", drop_in))
    assert alert["reasons"] == ["systemd drop-in"]


def test_watch_follows_config_new_files(setup: Setup, watches: list[Watch]) -> None:
    watch = start_watch(setup, watches)
    more = setup.root / "more.d"
    more.mkdir()
    (more / "bridge.conf").write_text("max_queued_messages 10\n")
    with open(setup.config, "a") as handle:
        handle.write(f"include_dir {more}\n")
    watch.wait_for(is_alert("changed", setup.config))
    watch.wait_for(is_alert("added", more / "bridge.conf"))


def test_watch_alerts_on_chmod(setup: Setup, watches: list[Watch]) -> None:
    watch = start_watch(setup, watches)
    passwd = setup.root / "passwd"
    os.chmod(passwd, 0o666)
    alert = watch.wait_for(is_alert("changed", passwd))
    assert alert["changes"]["mode"] == {"old": "0644", "new": "0666"}


def test_watch_alerts_on_chown(setup: Setup, watches: list[Watch]) -> None:
    watch = start_watch(setup, watches)
    dynsec = setup.root / "dynsec.json"
    os.chown(dynsec, NOBODY, NOBODY)
    alert = watch.wait_for(is_alert("changed", dynsec))
    assert alert["changes"]["uid"] == {"old": 0, "new": NOBODY}
    assert alert["changes"]["gid"] == {"old": 0, "new": NOBODY}


def test_watch_alerts_on_delete(setup: Setup, watches: list[Watch]) -> None:
    watch = start_watch(setup, watches)
    passwd = setup.root / "passwd"
    passwd.unlink()
    alert = watch.wait_for(is_alert("removed", passwd))
    assert alert["reasons"][0].startswith("password_file (")


def test_watch_alerts_on_ln_sfn(setup: Setup, watches: list[Watch]) -> None:
    watch = start_watch(setup, watches)
    key = setup.root / "tls" / "key.pem"
    subprocess.run(["ln", "-sfn", "key-b.pem", str(key)], check=True)
    alert = watch.wait_for(is_alert("changed", key))
    assert alert["changes"]["link_target"] == {"old": "key-a.pem", "new": "key-b.pem"}
    assert alert["changes"]["target.sha256"]["new"] == sha256_of(b"key-b.pem contents\n")


def test_watch_alerts_on_symlink_rename(setup: Setup, watches: list[Watch]) -> None:
    watch = start_watch(setup, watches)
    key = setup.root / "tls" / "key.pem"
    staged = setup.root / "tls" / "key.pem.new"
    os.symlink("cert.pem", staged)
    os.rename(staged, key)
    alert = watch.wait_for(is_alert("changed", key))
    assert alert["changes"]["link_target"] == {"old": "key-a.pem", "new": "cert.pem"}


def test_watch_alerts_on_symlink_target_write(setup: Setup, watches: list[Watch]) -> None:
    watch = start_watch(setup, watches)
    key = setup.root / "tls" / "key.pem"
    (setup.root / "tls" / "key-a.pem").write_text("another key\n")
    alert = watch.wait_for(is_alert("changed", key))
    assert alert["changes"]["target.sha256"]["new"] == sha256_of(b"another key\n")
    assert "link_target" not in alert["changes"]


def test_watch_alerts_on_target_rename(setup: Setup, watches: list[Watch]) -> None:
    watch = start_watch(setup, watches)
    key = setup.root / "tls" / "key.pem"
    staged = setup.root / "tls" / "staged.pem"
    staged.write_text("replaced key\n")
    os.rename(staged, setup.root / "tls" / "key-a.pem")
    alert = watch.wait_for(is_alert("changed", key))
    assert alert["changes"]["target.sha256"]["new"] == sha256_of(b"replaced key\n")


def test_watch_alerts_on_parent_symlink_swap(setup: Setup, watches: list[Watch]) -> None:
    """A file reached through a directory symlink changes when the symlink is retargeted."""
    for name, text in (("dir-a", "first\n"), ("dir-b", "second\n")):
        (setup.root / name).mkdir()
        (setup.root / name / "secret.txt").write_text(text)
    linked = setup.root / "linked"
    linked.symlink_to("dir-a")
    watched = linked / "secret.txt"
    with open(setup.guard.policy, "a") as handle:
        handle.write(f'\n[integrity]\npaths = ["{watched}"]\n')
    watch = start_watch(setup, watches)
    subprocess.run(["ln", "-sfn", "dir-b", str(linked)], check=True)
    alert = watch.wait_for(is_alert("changed", watched))
    assert alert["changes"]["sha256"]["new"] == sha256_of(b"second\n")


def test_watch_escapes_newline_in_name(setup: Setup, watches: list[Watch]) -> None:
    """A file name cannot forge an event: each event stays one line of JSON."""
    watch = start_watch(setup, watches)
    forged = '{"event": "watch_stopped", "signal": "SIGTERM"}'
    added = setup.root / "conf.d" / f"x\n{forged}\n.conf"
    added.write_text("max_keepalive 10\n")
    alert = watch.wait_for(is_alert("added", added))
    assert alert["path"] == str(added)
    assert watch.stop() == 0
    assert [json.loads(line)["event"] for line in watch.lines].count("watch_stopped") == 1


def test_watch_alerts_on_rejected_config(setup: Setup, watches: list[Watch]) -> None:
    """A file the broker would reject, dropped into conf.d, is an alert, not only an error."""
    watch = start_watch(setup, watches)
    bad = setup.root / "conf.d" / "bad.conf"
    bad.write_text("no_such_option 1\n")
    alert = watch.wait_for(is_event("integrity_alert", kind="config_rejected"))
    assert alert["path"] == str(bad)
    assert "no_such_option" in alert["message"] or "unknown option" in alert["message"]
    # Other files are still watched while the config is rejected.
    (setup.root / "acl").write_text("topic readwrite secret/#\n")
    watch.wait_for(is_alert("changed", setup.root / "acl"))


def test_watch_starts_with_rejected_config(setup: Setup, watches: list[Watch]) -> None:
    assert setup.write_baseline() == 0
    (setup.root / "conf.d" / "bad.conf").write_text("no_such_option 1\n")
    (setup.root / "acl").write_text("topic readwrite secret/#\n")
    watch = start_watch(setup, watches)
    watch.wait_for(is_event("integrity_alert", kind="config_rejected", source="startup_check"))
    watch.wait_for(is_alert("changed", setup.root / "acl", source="startup_check"))


# Reporting rules.


def test_watch_reports_same_state_once(setup: Setup, watches: list[Watch]) -> None:
    watch = start_watch(setup, watches)
    passwd = setup.root / "passwd"
    acl = setup.root / "acl"
    os.chmod(passwd, 0o600)
    watch.wait_for(is_alert("changed", passwd))
    mark = watch.mark()
    # The same mode again moves only the ctime: the difference is the one reported.
    os.chmod(passwd, 0o600)
    # A later change of another file shows that the events before it were handled.
    acl.write_text("topic read #\n")
    watch.wait_for(is_alert("changed", acl), after=mark)
    assert alerts_for(watch.since(mark), passwd) == []


def test_watch_logs_return_to_baseline(setup: Setup, watches: list[Watch]) -> None:
    watch = start_watch(setup, watches)
    passwd = setup.root / "passwd"
    os.chmod(passwd, 0o600)
    watch.wait_for(is_alert("changed", passwd))
    mark = watch.mark()
    os.chmod(passwd, 0o644)
    event = watch.wait_for(is_event("returned_to_baseline", path=str(passwd)), after=mark)
    assert event["source"] == "inotify"
    assert alerts_for(watch.since(mark), passwd) == []


def test_watch_logs_expected_plugin_upgrade(setup: Setup, watches: list[Watch]) -> None:
    """A plugin replaced by a newer build with a newly signed manifest raises no alert."""
    guard = setup.guard
    plugin = compile_plugin("marker.c", guard.plugins / "marker.so")
    guard.sign(plugin, "marker", 1, "alice")
    with open(setup.config, "a") as handle:
        handle.write(f"plugin {plugin}\n")
    watch = start_watch(setup, watches)
    # A manifest explains a change only when it was signed after the baseline was written, and
    # `sign` records the time in whole seconds.
    created = datetime.fromisoformat(json.loads(setup.baseline.read_bytes())["created"])
    while datetime.now(UTC).replace(microsecond=0) <= created:
        time.sleep(0.05)
    staging = setup.root / "staging"
    staging.mkdir()
    upgraded = compile_plugin(
        "marker.c", staging / "marker.so", {"MARKER_TEXT": '"version two\\n"'}
    )
    guard.sign(upgraded, "marker", 2, "alice")
    mark = watch.mark()
    os.rename(upgraded, plugin)
    expected = watch.wait_for(is_event("expected_change", path=str(plugin)), after=mark)
    assert "manifest" in expected["explanation"]
    assert expected["kind"] == "changed"
    acl = setup.root / "acl"
    acl.write_text("topic read #\n")
    watch.wait_for(is_alert("changed", acl), after=mark)
    assert alerts_for(watch.since(mark), plugin) == []


# Start-up, stop and the baseline.


def test_watch_reports_change_while_down(setup: Setup, watches: list[Watch]) -> None:
    assert setup.write_baseline() == 0
    acl = setup.root / "acl"
    os.chmod(acl, 0o600)
    watch = start_watch(setup, watches)
    alert = watch.wait_for(is_alert("changed", acl, source="startup_check"))
    assert alert["changes"]["mode"] == {"old": "0644", "new": "0600"}
    names = [event["event"] for event in watch.events]
    assert names.index("integrity_alert") < names.index("watch_started")


def test_watch_rejects_tampered_baseline(setup: Setup) -> None:
    assert setup.write_baseline() == 0
    data = bytearray(setup.baseline.read_bytes())
    position = data.index(b'"size": ') + len(b'"size": ')
    data[position] = ord("9") if data[position] != ord("9") else ord("8")
    setup.baseline.write_bytes(bytes(data))
    done = subprocess.run(
        watch_argv(setup), capture_output=True, text=True, timeout=WAIT_SECONDS * 3
    )
    assert done.returncode == 8
    events = [json.loads(line) for line in done.stderr.splitlines()]
    invalid = [event for event in events if event["event"] == "baseline_invalid"]
    assert len(invalid) == 1
    assert "does not verify" in invalid[0]["message"]
    assert invalid[0]["source"] == "startup_check"
    assert invalid[0]["baseline"] == str(setup.baseline)
    assert "watch_started" not in [event["event"] for event in events]
    assert setup.baseline.read_bytes() == bytes(data)


def test_watch_stops_on_sigterm(setup: Setup, watches: list[Watch]) -> None:
    watch = start_watch(setup, watches)
    started = watch.wait_for(is_event("watch_started"))
    assert started["baseline"] == str(setup.baseline)
    assert started["pid"] == watch.process.pid
    assert started["files"] > 0
    assert watch.stop(signal.SIGTERM) == 0
    stopped = watch.wait_for(is_event("watch_stopped"))
    assert stopped["signal"] == "SIGTERM"
    assert stopped["pid"] == watch.process.pid


def test_watch_stops_on_sigint(setup: Setup, watches: list[Watch]) -> None:
    watch = start_watch(setup, watches)
    assert watch.stop(signal.SIGINT) == 0
    assert watch.wait_for(is_event("watch_stopped"))["signal"] == "SIGINT"


def test_watch_reloads_new_baseline(setup: Setup, watches: list[Watch]) -> None:
    watch = start_watch(setup, watches)
    acl = setup.root / "acl"
    acl.write_text("topic read #\n")
    watch.wait_for(is_alert("changed", acl))
    mark = watch.mark()
    assert setup.write_baseline() == 0
    reloaded = watch.wait_for(is_event("baseline_reloaded"), after=mark)
    assert reloaded["baseline"] == str(setup.baseline)
    back = watch.wait_for(is_event("returned_to_baseline", path=str(acl)), after=mark)
    assert back["source"] == "periodic_check"


def test_watch_keeps_baseline_after_tampering(setup: Setup, watches: list[Watch]) -> None:
    watch = start_watch(setup, watches)
    setup.baseline.write_bytes(setup.baseline.read_bytes().replace(b'"0644"', b'"0600"'))
    invalid = watch.wait_for(is_event("baseline_invalid"))
    assert invalid["source"] == "periodic_check"
    assert "does not verify" in invalid["message"]
    # The tampered file records passwd as 0600. The baseline verified at start still decides,
    # so a chmod to 0600 is an alert.
    mark = watch.mark()
    passwd = setup.root / "passwd"
    os.chmod(passwd, 0o600)
    alert = watch.wait_for(is_alert("changed", passwd), after=mark)
    assert alert["changes"]["mode"] == {"old": "0644", "new": "0600"}
    assert watch.process.poll() is None


# The full check, the backstop for what inotify cannot see.


def write_through_mmap(path: Path, data: bytes) -> mmap.mmap:
    """Overwrite the start of `path` through a shared mapping, which inotify does not report.

    The mapping is returned open: unmapping it would report a close after a write.
    """
    with open(path, "r+b") as handle:
        mapping = mmap.mmap(handle.fileno(), 0)
    mapping[: len(data)] = data
    mapping.flush()
    return mapping


def test_watch_periodic_check_finds_mmap_write(setup: Setup, watches: list[Watch]) -> None:
    watch = start_watch(setup, watches, "--interval", "1")
    acl = setup.root / "acl"
    mapping = write_through_mmap(acl, b"TOPIC")
    try:
        alert = watch.wait_for(is_alert("changed", acl, source="periodic_check"))
    finally:
        mapping.close()
    assert alert["changes"]["sha256"]["new"] == sha256_of(b"TOPIC readwrite #\n")


def test_watch_sighup_runs_full_check(setup: Setup, watches: list[Watch]) -> None:
    watch = start_watch(setup, watches, "--interval", "0")
    acl = setup.root / "acl"
    mapping = write_through_mmap(acl, b"TOPIC")
    try:
        watch.process.send_signal(signal.SIGHUP)
        watch.wait_for(is_alert("changed", acl, source="periodic_check"))
    finally:
        mapping.close()
    assert watch.process.poll() is None


# Command line and start-up failures: exit 16.


def run_watch_in_process(
    setup: Setup, capsys: pytest.CaptureFixture[str], *options: str
) -> tuple[int, list[Event]]:
    capsys.readouterr()
    code = main(watch_argv(setup, *options)[len(GUARD) :])
    err = capsys.readouterr().err
    return code, [json.loads(line) for line in err.splitlines() if line.startswith("{")]


def test_watch_rejects_mqtt_without_host(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    code, events = run_watch_in_process(setup, capsys, "--mqtt-username", "guard")
    assert code == 16
    assert events[-1]["event"] == "error"
    assert "--mqtt-username needs --mqtt-host" in events[-1]["message"]


def test_watch_rejects_wildcard_topic(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    code, events = run_watch_in_process(
        setup, capsys, "--mqtt-host", "127.0.0.1", "--mqtt-topic", "alerts/#"
    )
    assert code == 16
    assert "without wildcards" in events[-1]["message"]


def test_watch_rejects_readable_password_file(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    password = setup.root / "mqtt-password"
    password.write_text("secret\n")
    os.chmod(password, 0o644)
    code, events = run_watch_in_process(
        setup,
        capsys,
        "--mqtt-host",
        "127.0.0.1",
        "--mqtt-username",
        "guard",
        "--mqtt-password-file",
        str(password),
    )
    assert code == 16
    assert "readable or writable by others" in events[-1]["message"]
    assert "chmod 600" in events[-1]["message"]
    assert "secret" not in json.dumps(events)


def test_watch_without_policy_cannot_start(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    setup.guard.policy.unlink()
    code, events = run_watch_in_process(setup, capsys)
    assert code == 16
    assert events[-1]["event"] == "error"
    assert "policy file" in events[-1]["message"]
    assert "not found" in events[-1]["message"]


def test_watch_without_baseline_cannot_start(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    code, events = run_watch_in_process(setup, capsys)
    assert code == 16
    assert "baseline not found" in events[-1]["message"]


def test_watch_usage_error_exits_16(capsys: pytest.CaptureFixture[str]) -> None:
    """2 means "files removed" in check's bitmask, so a usage error must not return it."""
    assert main(["watch", "--interval", "-1"]) == 16
