"""Helpers for the sandbox attack tests: the red-team plugin, its broker and an MQTT observer.

The plugin (`tests/plugins/redteam.c` and `redteam_*.c`) attacks from `mosquitto_plugin_init`
(phase "init") and again when a client publishes to `redteam/go` (phase "go"). Each step of the
attack publishes a retained report to `redteam/result/<phase>/<step>` that starts with
"blocked", "SUCCEEDED" or "error". `attack` builds on `prepare`, `start_broker` and `collect`:
it signs the plugin, starts it through `mosquitto-guard run`, and gathers both phases' reports.
"""

from __future__ import annotations

import os
import pwd
import re
import socket
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from support import (
    PLUGIN_SOURCES,
    Guard,
    compile_plugin,
    stop_process,
    wait_for_port,
)

PHASES = ("init", "go")
# Compiled with `redteam.c`. The ATTEMPT_* macro selects which of their attacks is built.
ATTACK_SOURCES = (
    "redteam_files.c",
    "redteam_network.c",
    "redteam_process.c",
    "redteam_escape.c",
)
# The maximum wait for a report or an MQTT reply, in seconds. Reaching it fails the test, and it
# is a limit on waiting, not a measurement.
WAIT_SECONDS = 30.0
SANDBOX_LINE = "mosquitto-guard: sandbox:"
SANDBOX_OFF_LINE = "mosquitto-guard: sandbox: off:"
BROKER_USER = "mosquitto"
REPORT_LINE = re.compile(r"redteam (?P<step>\w+) (?P<phase>init|go): (?P<verdict>.*)$")


@dataclass(frozen=True)
class Mode:
    """How `run` starts the broker, and the outcome each attack step must report."""

    name: str
    options: tuple[str, ...]
    user_root: bool
    sandboxed: bool

    @property
    def expected(self) -> str:
        return "blocked" if self.sandboxed else "SUCCEEDED"

    @property
    def broker_user(self) -> str:
        return "root" if self.user_root else BROKER_USER


# The broker drops to the mosquitto user, as it does by default when started as root.
SANDBOX = Mode("sandbox", (), user_root=False, sandboxed=True)
# `user root` keeps the broker at uid 0, so file permissions stop nothing: only the sandbox can.
SANDBOX_ROOT = Mode("sandbox-user-root", ("--permissive",), user_root=True, sandboxed=True)
# The control: the same plugin without the sandbox, to prove that each attack works.
CONTROL = Mode(
    "control-no-sandbox", ("--no-sandbox", "--permissive"), user_root=True, sandboxed=False
)
MODES = (SANDBOX, SANDBOX_ROOT, CONTROL)


# Building and configuring.


@dataclass
class BrokerFiles:
    """The config of a red-team broker, the directories it names, and the broker's log."""

    config: Path
    conf_d: Path
    persistence: Path
    log: Path


def broker_files(guard: Guard, owner: str = BROKER_USER) -> BrokerFiles:
    """Create an empty root-owned `conf.d` and a persistence directory that `owner` owns.

    The attacks pass the broker's own user as `owner`, so that the broker can write its
    persistence directory whether or not it drops to the mosquitto user.
    """
    conf_d = guard.root / "conf.d"
    conf_d.mkdir(mode=0o755)
    persistence = guard.root / "persistence"
    persistence.mkdir(mode=0o755)
    account = pwd.getpwnam(owner)
    os.chown(persistence, account.pw_uid, account.pw_gid)
    return BrokerFiles(
        guard.root / "mosquitto.conf", conf_d, persistence, guard.root / "broker.log"
    )


def write_config(guard: Guard, files: BrokerFiles, mode: Mode, *lines: str) -> Path:
    """Write the broker config: the guard's listener, persistence, `conf.d`, then `lines`."""
    config = [
        f"listener {guard.port} 127.0.0.1",
        "allow_anonymous true",
        "persistence true",
        f"persistence_location {files.persistence}/",
        "log_dest stderr",
        f"include_dir {files.conf_d}",
    ]
    if mode.user_root:
        config.append("user root")
    files.config.write_text("\n".join([*config, *lines]) + "\n")
    return files.config


def build_redteam(guard: Guard, attempt: str, defines: dict[str, str]) -> Path:
    """Compile the red-team plugin with ATTEMPT_<attempt> and `defines` into the guard's plugins."""
    return compile_plugin(
        "redteam.c",
        guard.plugins / f"redteam-{attempt}.so",
        {f"ATTEMPT_{attempt.upper()}": "1", **defines},
        extra=[str(PLUGIN_SOURCES / name) for name in ATTACK_SOURCES],
    )


def prepare(
    guard: Guard,
    mode: Mode,
    plugin: Path,
    *,
    files: BrokerFiles | None = None,
    sign_options: Sequence[str] = (),
    config_lines: Sequence[str] = (),
) -> tuple[BrokerFiles, list[str]]:
    """Sign `plugin` with the trusted key and write a config that loads it.

    `files` come from `broker_files`, which this calls for the broker's user when they are
    None. Returns the files
    and the argv of `mosquitto-guard run` for `mode`.
    """
    guard.sign(plugin, plugin.stem, 1, "alice", *sign_options)
    if files is None:
        files = broker_files(guard, mode.broker_user)
    config = write_config(guard, files, mode, *config_lines, f"plugin {plugin}")
    return files, guard.run_argv(config, *mode.options)


def start_broker(
    argv: Sequence[str],
    port: int,
    log: Path,
    processes: list[subprocess.Popen[bytes]],
    **popen_options: Any,
) -> subprocess.Popen[bytes]:
    """Start `argv` with its stderr in `log`, and fail when no broker listens on `port`."""
    with open(log, "wb") as stderr:
        process = subprocess.Popen(
            list(argv), stdout=subprocess.DEVNULL, stderr=stderr, **popen_options
        )
    processes.append(process)
    if not wait_for_port(port, process):
        stop_process(process)
        raise AssertionError(f"no broker listens on {port}:\n{log.read_text(errors='replace')}")
    return process


# Observing.


class Observer:
    """An MQTT client that collects the plugin's reports and checks that the broker serves."""

    def __init__(self, port: int, username: str | None = None, password: str | None = None) -> None:
        self.messages: dict[str, str] = {}
        self._changed = threading.Condition()
        self._subscribed: set[int] = set()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"redteam-{uuid.uuid4().hex[:12]}"
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client: object, userdata: object, message: mqtt.MQTTMessage) -> None:
        with self._changed:
            self.messages[message.topic] = message.payload.decode(errors="replace")
            self._changed.notify_all()

    def _on_subscribe(
        self, client: object, userdata: object, mid: int, reasons: object, properties: object
    ) -> None:
        with self._changed:
            self._subscribed.add(mid)
            self._changed.notify_all()

    def subscribe(self, topic: str) -> None:
        """Subscribe at QoS 1 and wait for the broker's SUBACK."""
        _, mid = self.client.subscribe(topic, qos=1)
        with self._changed:
            acknowledged = self._changed.wait_for(lambda: mid in self._subscribed, WAIT_SECONDS)
        assert acknowledged, f"no SUBACK for {topic}"

    def wait_for(self, topics: Iterable[str]) -> dict[str, str]:
        """Wait until a message arrived on each of `topics`, and return the payload of each."""
        wanted = list(topics)
        with self._changed:
            self._changed.wait_for(lambda: all(t in self.messages for t in wanted), WAIT_SECONDS)
            return {topic: self.messages[topic] for topic in wanted if topic in self.messages}

    def publish(self, topic: str, payload: str) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(WAIT_SECONDS)

    def round_trip(self, topic: str) -> bool:
        """Publish a fresh payload to `topic`, subscribed before, and wait for it to return."""
        payload = uuid.uuid4().hex
        self.publish(topic, payload)
        with self._changed:
            return self._changed.wait_for(lambda: self.messages.get(topic) == payload, WAIT_SECONDS)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class AttackRun:
    """The reports of one red-team broker, keyed by phase and then step, and its log.

    `probe` is what the `probe` callback of `collect` returned while the broker ran.
    """

    results: dict[str, dict[str, str]]
    context: dict[str, str]
    descriptors: dict[str, str]
    served_after: bool
    log: str = ""
    missing: list[str] = field(default_factory=list)
    probe: Any = None

    def verdicts(self, phase: str) -> dict[str, str]:
        """Return the first word of each step's report in `phase`."""
        return {
            step: text.split(": ", 1)[1].split(" ", 1)[0]
            for step, text in self.results[phase].items()
        }


def collect(
    port: int,
    steps: Sequence[str],
    probe: Callable[[], Any] | None = None,
    between: Callable[[], None] | None = None,
) -> AttackRun:
    """Gather the reports of both phases from the broker on `port`, then check it serves.

    `probe`, when given, runs after the second phase while the broker still runs. `between`,
    when given, runs after the first phase's reports arrived and before the second phase starts.
    """
    observer = Observer(port)
    try:
        for topic in ("redteam/result/#", "redteam/context/#", "redteam/fds/#", "redteam/echo"):
            observer.subscribe(topic)
        results: dict[str, dict[str, str]] = {}
        missing: list[str] = []
        for phase in PHASES:
            if phase == "go":
                if between is not None:
                    between()
                observer.publish("redteam/go", "go")
            topics = [f"redteam/result/{phase}/{step}" for step in steps]
            received = observer.wait_for([*topics, f"redteam/context/{phase}"])
            missing += [topic for topic in topics if topic not in received]
            results[phase] = {
                topic.rsplit("/", 1)[1]: text
                for topic, text in received.items()
                if topic.startswith("redteam/result/")
            }
        context = {phase: observer.messages.get(f"redteam/context/{phase}", "") for phase in PHASES}
        descriptors = {phase: observer.messages.get(f"redteam/fds/{phase}", "") for phase in PHASES}
        probed = probe() if probe is not None else None
        served_after = observer.round_trip("redteam/echo")
    finally:
        observer.close()
    return AttackRun(results, context, descriptors, served_after, missing=missing, probe=probed)


def attack(
    guard: Guard,
    processes: list[subprocess.Popen[bytes]],
    mode: Mode,
    plugin: Path,
    steps: Sequence[str],
    *,
    files: BrokerFiles | None = None,
    sign_options: Sequence[str] = (),
    wrap: Callable[[list[str]], list[str]] | None = None,
    probe: Callable[[], Any] | None = None,
    between: Callable[[], None] | None = None,
    config_lines: Sequence[str] = (),
) -> AttackRun:
    """Sign `plugin`, start it under `mode`, trigger the second phase and collect the reports.

    `wrap` turns the argv of `run` into the argv to start. `config_lines` go into the config
    before the plugin line, and `probe` and `between` are passed to `collect`. The broker is
    stopped before this returns, so the log is complete.
    """
    files, argv = prepare(
        guard, mode, plugin, files=files, sign_options=sign_options, config_lines=config_lines
    )
    if wrap is not None:
        argv = wrap(argv)
    process = start_broker(argv, guard.port, files.log, processes)
    try:
        run = collect(guard.port, steps, probe, between)
    finally:
        stop_process(process)
    run.log = files.log.read_text(errors="replace")
    return run


def log_reports(log: str) -> dict[str, dict[str, str]]:
    """Return the reports that the plugin logged, by phase and step, for brokers no client reads."""
    reports: dict[str, dict[str, str]] = {phase: {} for phase in PHASES}
    for line in log.splitlines():
        match = REPORT_LINE.search(line)
        if match:
            reports[match["phase"]][match["step"]] = match["verdict"]
    return reports


def check_attack(run: AttackRun, mode: Mode, steps: Sequence[str]) -> None:
    """Assert that every step of both phases reported the outcome `mode` expects.

    Also asserts that the plugin ran as the user `mode` names, that the broker served a client
    after the attack, and that the sandbox was in place exactly when `mode.sandboxed` is set.
    The sandbox shows as its lines in the broker's log, and as no_new_privs and a seccomp filter
    (mode 2) in the plugin.
    """
    assert run.missing == [], f"reports missing: {run.missing}\n{run.log}"
    uid = pwd.getpwnam(mode.broker_user).pw_uid
    for phase in PHASES:
        assert run.context[phase].startswith(f"uid={uid} "), run.context[phase]
    for phase in PHASES:
        verdicts = run.verdicts(phase)
        for step in steps:
            assert verdicts[step] == mode.expected, f"{run.results[phase][step]}\n{run.log}"
    assert run.served_after, run.log
    check_sandbox_state(run, mode)
    for phase in PHASES:
        assert unexpected_descriptors(run.descriptors[phase]) == [], run.descriptors[phase]


def check_sandbox_state(run: AttackRun, mode: Mode) -> None:
    """Assert that the sandbox was on exactly when `mode.sandboxed` is set."""
    if mode.sandboxed:
        assert SANDBOX_LINE in run.log, run.log
        assert SANDBOX_OFF_LINE not in run.log, run.log
        assert "NOT active" not in run.log, run.log
        for phase in PHASES:
            assert "no_new_privs=1 seccomp=2" in run.context[phase], run.context[phase]
    else:
        assert SANDBOX_OFF_LINE in run.log, run.log
        for phase in PHASES:
            assert "no_new_privs=0 seccomp=0" in run.context[phase], run.context[phase]


# F_SEAL_WRITE, from <linux/fcntl.h>.
SEAL_WRITE = 0x0008


def unexpected_descriptors(listing: str) -> list[str]:
    """Return the entries of a "redteam/fds" listing that the broker should not have open.

    Above standard error, the broker keeps sockets, anonymous inodes (such as its epoll
    instance, listed as type "?") and write-sealed memfds (the verified config and plugins).
    Anything else, such as a file or directory left open by the launcher, is returned.
    """
    unexpected = []
    for entry in listing.split():
        fd, kind, _, *extra = entry.split(":")
        if int(fd) <= 2 or kind in ("s", "?"):
            continue
        seals = int(extra[0].removeprefix("seals=")) if extra else 0
        if kind != "f" or not seals & SEAL_WRITE:
            unexpected.append(entry)
    return unexpected


# What the plugin attacks: listeners and processes that the tests set up.


class Listener:
    """A TCP listener on a loopback address that accepts nothing until `count_connections`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        self.socket.bind((host, port))
        self.socket.listen(16)
        self.port: int = self.socket.getsockname()[1]

    def count_connections(self) -> int:
        """Accept and count the connections queued so far, closed ones included."""
        self.socket.setblocking(False)
        count = 0
        while True:
            try:
                connection, _ = self.socket.accept()
            except BlockingIOError:
                return count
            connection.close()
            count += 1

    def close(self) -> None:
        self.socket.close()


class UnixListener(Listener):
    """A UNIX stream listener at a path, or at an abstract name when `path` starts with NUL."""

    def __init__(self, path: str) -> None:  # the base class's TCP set-up does not apply
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.socket.bind(path)
        if not path.startswith("\0"):
            os.chmod(path, 0o777)  # so file permissions let the broker's user connect
        self.socket.listen(16)
        self.port = 0


def connects(host: str, port: int) -> bool:
    """Return True when a TCP connection to host:port is accepted."""
    try:
        with socket.create_connection((host, port), timeout=WAIT_SECONDS):
            return True
    except OSError:
        return False


def start_target(user: str, processes: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    """Start a `sleep` owned by `user`, for the plugin to trace and signal."""
    account = pwd.getpwnam(user)
    process = subprocess.Popen(
        ["sleep", "600"], user=account.pw_uid, group=account.pw_gid, extra_groups=[]
    )
    processes.append(process)
    return process


def process_state(pid: int) -> tuple[str, int]:
    """Return the state letter and the tracer pid of process `pid`."""
    fields = dict(
        line.split(":\t", 1)
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if ":\t" in line
    )
    return fields["State"].split()[0], int(fields["TracerPid"])


def make_host_key(directory: Path) -> Path:
    """Create an SSH host key that file permissions let anyone read (mode 0644)."""
    directory.mkdir(mode=0o755)
    key = directory / "ssh_host_ed25519_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "redteam", "-f", str(key)],
        check=True,
        capture_output=True,
    )
    os.chmod(key, 0o644)
    return key


def with_bind_mount(source: Path, target: Path) -> Callable[[list[str]], list[str]]:
    """Return a `wrap` for `attack` that runs argv in a mount namespace with source on target."""
    script = 'mount --bind "$1" "$2" || exit 97\nshift 2\nexec "$@"\n'

    def wrap(argv: list[str]) -> list[str]:
        return [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
            str(source),
            str(target),
            *argv,
        ]

    return wrap


def count_datagrams(receiver: socket.socket) -> int:
    """Read and count the datagrams queued on `receiver`."""
    receiver.setblocking(False)
    count = 0
    while True:
        try:
            receiver.recv(65536)
        except BlockingIOError:
            return count
        count += 1
