"""More attacks by a signed plugin on the sandbox of `run`: the calls Landlock does not mediate.

These follow `test_sandbox_attacks.py` and use the same red-team plugin, compiled with one
ATTEMPT_* macro of `tests/plugins/redteam_escape.c` (or of an older file, reused with new
targets), and the same three modes: sandbox, sandbox-user-root and control-no-sandbox. Each
test checks the side effect of the attack outside the broker (a changed file, a process, a
message), not only the plugin's report.

Landlock (ABI 7 on the test kernel, Linux 6.18) mediates opening, creating, renaming and
removing files, TCP bind and connect, and signals and abstract UNIX sockets across the
sandbox's border. It does not mediate changes to file metadata, the limits and priorities of
other processes, System V IPC, inotify, pathname UNIX sockets, or a TCP listen that was never
bound. Where seccomp does not close one of those either, the test fails in the sandboxed
modes, and its docstring describes what a plugin gains.

Every network address is loopback, and every file and process the plugin attacks was created
by the test for it.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import re
import shlex
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from redteam import (
    BROKER_USER,
    MODES,
    PHASES,
    SANDBOX,
    WAIT_SECONDS,
    AttackRun,
    Listener,
    Mode,
    Observer,
    UnixListener,
    attack,
    broker_files,
    build_redteam,
    check_attack,
    check_sandbox_state,
    collect,
    connects,
    count_datagrams,
    prepare,
    process_state,
    start_broker,
    start_target,
)
from support import PLUGIN_SOURCES, Guard, c_string, stop_process

MODE_PARAMS = [pytest.param(mode, id=mode.name) for mode in MODES]

# The control for attacks whose second stage runs as root outside the broker, such as the
# systemd drop-in's ExecStartPre= lines: the broker drops to the mosquitto user, as in the
# sandboxed mode, but without the sandbox.
CONTROL_AS_MOSQUITTO = Mode(
    "control-no-sandbox-mosquitto", ("--no-sandbox",), user_root=False, sandboxed=False
)

NOBODY = 65534
# ioprio_get(2) on x86_64, and its arguments: a process id selects one process, and the class
# is the top 3 bits of the 16-bit priority value.
SYS_IOPRIO_GET = 252
IOPRIO_WHO_PROCESS = 1
IOPRIO_CLASS_SHIFT = 13
IOPRIO_CLASS_IDLE = 3
# What the plugin sets on another process in ATTEMPT_OTHER_PROCESS.
LOWERED_NOFILE = 4
LOWERED_NICE = 19
IPC_TEXT = b"written by the redteam plugin"


def verdict_details(run: AttackRun, phase: str, step: str) -> str:
    """Return the report of `step` in `phase` without its "redteam <step> <phase>: " prefix."""
    report = run.results.get(phase, {}).get(step)
    return report.split(": ", 1)[1] if report is not None else f"no report\n{run.log}"


# Files: metadata and set-user-ID bits, which Landlock has no right for.


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_file_metadata_outside_grants(guard: Guard, processes: list, mode: Mode) -> None:
    """A plugin cannot change the mode, times or extended attributes of a file it may not write.

    The victim is owned by the broker's user, mode 0600, in a directory the sandbox grants
    nothing in. It is a stand-in for a TLS key or a password file that the mosquitto user
    owns, or, under `user root`, for /etc/shadow, and chmod 0666 hands it to every local
    user. Landlock has no access right for chmod, utimensat or setxattr, and the seccomp
    filter allows them.
    """
    directory = guard.root / "outside"
    directory.mkdir(mode=0o755)
    victim = directory / "victim.key"
    victim.write_text("secret\n")
    victim.chmod(0o600)
    owner = pwd.getpwnam(mode.broker_user)
    os.chown(victim, owner.pw_uid, owner.pw_gid)
    before = victim.stat()
    plugin = build_redteam(guard, "file_metadata", {"VICTIM_FILE": c_string(str(victim))})
    steps = ("chmod_outside", "utime_outside", "setxattr_outside")

    run = attack(guard, processes, mode, plugin, steps)

    after = victim.stat()
    check_sandbox_state(run, mode)
    if mode.sandboxed:
        assert stat.S_IMODE(after.st_mode) == 0o600, verdict_details(run, "init", "chmod_outside")
        assert after.st_mtime_ns == before.st_mtime_ns, verdict_details(
            run, "init", "utime_outside"
        )
        assert "user.redteam" not in os.listxattr(victim), verdict_details(
            run, "init", "setxattr_outside"
        )
    else:
        assert stat.S_IMODE(after.st_mode) == 0o666
        assert after.st_mtime_ns == 0
        assert os.getxattr(victim, "user.redteam") == b"planted"
    check_attack(run, mode, steps)


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_write_read_only_file(guard: Guard, processes: list, mode: Mode) -> None:
    """A plugin cannot write a file it may only read, through a hard link or /proc/self/fd.

    The file is the broker's password file, owned by the broker's user, which Landlock lets
    the broker read. A hard link in the writable persistence directory, made from the path or
    from a /proc/self/fd entry, would reach the same inode under a write grant, so Landlock's
    refer rule must refuse the link. Reopening /proc/self/fd/N for writing must be checked
    against the file's own path.
    """
    files = broker_files(guard, mode.broker_user)
    auth = guard.root / "auth"
    auth.mkdir(mode=0o755)
    passwords = auth / "passwords"
    subprocess.run(
        ["mosquitto_passwd", "-c", "-b", str(passwords), "sensor", "sensor-pass"],
        check=True,
        capture_output=True,
    )
    owner = pwd.getpwnam(mode.broker_user)
    os.chown(passwords, owner.pw_uid, owner.pw_gid)
    passwords.chmod(0o600)
    before = passwords.read_bytes()
    defines = {
        "READ_ONLY_FILE": c_string(str(passwords)),
        "LINK_DIR": c_string(str(files.persistence)),
    }
    plugin = build_redteam(guard, "write_read_only", defines)
    steps = ("hardlink_write", "procfd_link_write", "reopen_write")

    run = attack(
        guard,
        processes,
        mode,
        plugin,
        steps,
        files=files,
        config_lines=(f"password_file {passwords}",),
    )

    check_attack(run, mode, steps)
    appended = b"# written by the redteam plugin\n"
    assert passwords.read_bytes() == (before if mode.sandboxed else before + appended * 6)


def compile_program(source: str, output: Path) -> Path:
    """Compile `tests/plugins/<source>` into the executable `output` and return its path."""
    command = ["gcc", "-O1", "-Wall", "-Werror", "-o", str(output), str(PLUGIN_SOURCES / source)]
    subprocess.run(command, check=True, capture_output=True, text=True)
    return output


def run_as_nobody(program: Path) -> str:
    """Run `program` as the nobody user in the test's own mount namespace, and return stdout."""
    result = subprocess.run(
        [str(program)],
        user=NOBODY,
        group=NOBODY,
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=WAIT_SECONDS,
        check=True,
    )
    return result.stdout.strip()


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_setuid_program_left_for_local_users(guard: Guard, processes: list, mode: Mode) -> None:
    """A plugin cannot leave a set-user-ID program for local users to run after it.

    The plugin writes an executable into its persistence directory, which the sandbox lets it
    write, and sets its set-user-ID bit. The noexec and nosuid mount covers that directory only
    in the broker's private mount namespace, so on the host any local user can run the copy
    and gets the broker's user id: the mosquitto user, or root under `user root`. Setting the
    bit is a chmod, which Landlock does not mediate. `RestrictSUIDSGID=` in the systemd drop-in
    would deny it, but the launcher's own seccomp filter does not.
    """
    files = broker_files(guard, mode.broker_user)
    program = compile_program("euid_program.c", guard.root / "euid-program")
    defines = {
        "PROGRAM_FILE": c_string(str(program)),
        "DROP_DIR": c_string(str(files.persistence)),
    }
    plugin = build_redteam(guard, "setuid_file", defines)
    steps = ("setuid_file",)

    run = attack(guard, processes, mode, plugin, steps, files=files)

    dropped = files.persistence / "redteam-setuid-go"
    assert dropped.is_file(), run.log
    output = run_as_nobody(dropped)
    owner = pwd.getpwnam(mode.broker_user).pw_uid
    check_sandbox_state(run, mode)
    if mode.sandboxed:
        assert not dropped.stat().st_mode & stat.S_ISUID, verdict_details(run, "go", "setuid_file")
        assert output == f"uid={NOBODY} euid={NOBODY}"
    else:
        assert output == f"uid={NOBODY} euid={owner}"
    check_attack(run, mode, steps)


# Other processes: calls that take a process id, which Landlock's scoping leaves out.


def file_limit(pid: int) -> tuple[str, str]:
    """Return the soft and hard "Max open files" limits of process `pid`, as /proc prints them."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return soft, hard
    raise AssertionError(f"no 'Max open files' line in /proc/{pid}/limits")


def io_class(pid: int) -> int:
    """Return the I/O scheduling class of process `pid` (3 is idle)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    value = libc.syscall(SYS_IOPRIO_GET, IOPRIO_WHO_PROCESS, pid)
    if value < 0:
        raise OSError(ctypes.get_errno(), f"ioprio_get of {pid} failed")
    return int(value) >> IOPRIO_CLASS_SHIFT


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_limits_of_other_process(guard: Guard, processes: list, mode: Mode) -> None:
    """A plugin cannot lower the resource limit or the priorities of a process outside.

    The target runs as the broker's user: another mosquitto process, or, under `user root`,
    a root daemon such as sshd or the init system. prlimit to 4 open files makes its next
    accept or open fail, and SCHED_IDLE, nice 19 and the idle I/O class starve it. The kernel
    allows all four, with no capability, on a process whose user and group ids match the
    caller's. Landlock's
    scoping covers signals only, and the seccomp filter allows prlimit64 with a process id,
    setpriority, sched_setscheduler and ioprio_set.
    """
    target = start_target(mode.broker_user, processes)
    before = (
        file_limit(target.pid),
        os.getpriority(os.PRIO_PROCESS, target.pid),
        os.sched_getscheduler(target.pid),
        io_class(target.pid),
    )
    plugin = build_redteam(guard, "other_process", {"TARGET_PID": str(target.pid)})
    steps = ("prlimit_other", "renice_other", "sched_idle_other", "ioprio_other")

    run = attack(guard, processes, mode, plugin, steps)

    limit = file_limit(target.pid)
    nice = os.getpriority(os.PRIO_PROCESS, target.pid)
    policy = os.sched_getscheduler(target.pid)
    io_scheduling_class = io_class(target.pid)
    check_sandbox_state(run, mode)
    if mode.sandboxed:
        assert limit == before[0], verdict_details(run, "init", "prlimit_other")
        assert nice == before[1], verdict_details(run, "init", "renice_other")
        assert policy == before[2], verdict_details(run, "init", "sched_idle_other")
        assert io_scheduling_class == before[3], verdict_details(run, "init", "ioprio_other")
    else:
        assert limit == (str(LOWERED_NOFILE), str(LOWERED_NOFILE))
        assert nice == LOWERED_NICE
        assert policy == os.SCHED_IDLE
        assert io_scheduling_class == IOPRIO_CLASS_IDLE
    check_attack(run, mode, steps)


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_stop_other_process(guard: Guard, processes: list, mode: Mode) -> None:
    """A plugin cannot stop a process outside, through a pidfd or through SIGIO.

    pidfd_send_signal and the SIGIO that F_SETOWN arms reach the kernel's signal checks by
    other paths than kill(2), which `test_sandbox_attacks.py` tries. Both targets run as the
    broker's user, so only Landlock's signal scoping can stop the signals.
    """
    target = start_target(mode.broker_user, processes)
    sigio_target = start_target(mode.broker_user, processes)
    defines = {"TARGET_PID": str(target.pid), "SIGIO_PID": str(sigio_target.pid)}
    plugin = build_redteam(guard, "signal_other", defines)
    steps = ("pidfd_signal", "sigio_armed")

    try:
        run = attack(guard, processes, mode, plugin, steps)
        states = (process_state(target.pid)[0], process_state(sigio_target.pid)[0])
    finally:
        for process in (target, sigio_target):
            os.kill(process.pid, signal.SIGCONT)

    check_sandbox_state(run, mode)
    assert run.missing == [], run.log
    for phase in PHASES:
        verdicts = run.verdicts(phase)
        assert verdicts["pidfd_signal"] == mode.expected, run.results[phase]["pidfd_signal"]
        # Arming is allowed in every mode: the kernel checks the signal when it sends it.
        assert verdicts["sigio_armed"] == "SUCCEEDED", run.results[phase]["sigio_armed"]
    assert states == (("S", "S") if mode.sandboxed else ("T", "T"))
    assert run.served_after, run.log


def ipc_object(kind: str, user: str) -> int:
    """Create a System V IPC object owned by `user`, mode 0600, and return its id.

    `kind` is "-M" (a 4096-byte shared memory segment) or "-Q" (a message queue), as ipcmk
    takes them.
    """
    size = ["4096"] if kind == "-M" else []
    result = subprocess.run(
        ["runuser", "-u", user, "--", "ipcmk", kind, *size, "-p", "0600"],
        capture_output=True,
        text=True,
        check=True,
    )
    match = re.search(r"id: (\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    return int(match.group(1))


def segment_text(segment: int) -> bytes:
    """Return the first bytes of shared memory segment `segment`, as many as IPC_TEXT has."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.shmat.restype = ctypes.c_void_p
    libc.shmat.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_int)
    libc.shmdt.argtypes = (ctypes.c_void_p,)
    address = libc.shmat(segment, None, 0)
    if address is None or address == ctypes.c_void_p(-1).value:
        raise OSError(ctypes.get_errno(), f"shmat of segment {segment} failed")
    try:
        return ctypes.string_at(address, len(IPC_TEXT))
    finally:
        libc.shmdt(ctypes.c_void_p(address))


def queued_messages(queue: int) -> int:
    """Receive and count the messages waiting on message queue `queue`, without blocking."""

    class Message(ctypes.Structure):
        _fields_ = (("type", ctypes.c_long), ("text", ctypes.c_char * 256))

    ipc_nowait = 0o4000
    libc = ctypes.CDLL(None, use_errno=True)
    libc.msgrcv.restype = ctypes.c_ssize_t
    message = Message()
    count = 0
    while libc.msgrcv(queue, ctypes.byref(message), 256, 0, ipc_nowait) >= 0:
        count += 1
    return count


@pytest.fixture
def ipc_ids() -> Iterator[list[tuple[str, int]]]:
    """A list of (ipcrm option, id) pairs for System V IPC objects, removed when the test ends."""
    created: list[tuple[str, int]] = []
    yield created
    for option, identifier in created:
        subprocess.run(["ipcrm", option, str(identifier)], capture_output=True, check=False)


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_system_v_ipc_outside(
    guard: Guard, processes: list, ipc_ids: list[tuple[str, int]], mode: Mode
) -> None:
    """A plugin cannot write another process's System V shared memory or message queue.

    The test creates both as the broker's user, mode 0600, outside the broker. They are
    stand-ins for the IPC of another program of that user, or, under `user root`, of a root
    daemon. IPC permissions compare user ids only, Landlock does not mediate System V IPC, the
    seccomp filter allows shmat and msgsnd, and the systemd drop-in has no PrivateIPC=.
    """
    segment = ipc_object("-M", mode.broker_user)
    ipc_ids.append(("-m", segment))
    queue = ipc_object("-Q", mode.broker_user)
    ipc_ids.append(("-q", queue))
    defines = {"SHM_ID": str(segment), "MSG_ID": str(queue)}
    plugin = build_redteam(guard, "sysv_ipc", defines)
    steps = ("shm_write", "msg_send")

    run = attack(guard, processes, mode, plugin, steps)

    text = segment_text(segment)
    messages = queued_messages(queue)
    check_sandbox_state(run, mode)
    if mode.sandboxed:
        assert text == bytes(len(IPC_TEXT)), verdict_details(run, "init", "shm_write")
        assert messages == 0, verdict_details(run, "init", "msg_send")
    else:
        assert text == IPC_TEXT
        assert messages == 2
    check_attack(run, mode, steps)


def open_message_queue(name: str) -> int:
    """Create the POSIX message queue `name`, mode 0666, and return its descriptor."""
    libc = ctypes.CDLL(None, use_errno=True)
    flags = os.O_CREAT | os.O_EXCL | os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
    queue = libc.mq_open(name.encode(), flags, ctypes.c_int(0o600), None)
    if queue < 0:
        raise OSError(ctypes.get_errno(), f"mq_open of {name} failed")
    # mq_open applies the umask, so the mode is set afterwards.
    os.fchmod(queue, 0o666)
    return int(queue)


def drain_message_queue(queue: int) -> int:
    """Receive and count the messages waiting on the POSIX message queue `queue`."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mq_receive.restype = ctypes.c_ssize_t
    buffer = ctypes.create_string_buffer(8192)
    count = 0
    while libc.mq_receive(queue, buffer, len(buffer), None) >= 0:
        count += 1
    return count


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_posix_message_queue_outside(guard: Guard, processes: list, mode: Mode) -> None:
    """A plugin cannot send to a POSIX message queue created outside, even one anyone may use.

    The queue's mode 0666 lets every user send, so the test shows whether the sandbox
    mediates mq_open. The queue lives in the kernel's internal mqueue file system, not under a
    path the sandbox names.
    """
    name = f"/redteam-{os.getpid()}-{guard.port}"
    queue = open_message_queue(name)
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        plugin = build_redteam(guard, "posix_mqueue", {"MQUEUE_NAME": c_string(name)})
        steps = ("mq_send",)
        run = attack(guard, processes, mode, plugin, steps)
        messages = drain_message_queue(queue)
    finally:
        os.close(queue)
        libc.mq_unlink(name.encode())
    check_sandbox_state(run, mode)
    assert messages == (0 if mode.sandboxed else 2), verdict_details(run, "init", "mq_send")
    check_attack(run, mode, steps)


# Watching and reading what the sandbox grants nothing in.


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_watch_directory_outside(guard: Guard, processes: list, mode: Mode) -> None:
    """A plugin cannot watch a directory outside its grants and learn the names created there.

    The directory is readable by everyone, like /home/*, /etc/ssh or a spool, but the sandbox
    grants nothing in it, so the plugin cannot list it. With inotify it still gets the name of
    each file created, opened or written there, and when. Landlock does not mediate
    inotify_add_watch, and the seccomp filter allows it.
    """
    watched = guard.root / "watched"
    watched.mkdir(mode=0o755)
    name = "admin-token.txt"
    plugin = build_redteam(
        guard,
        "inotify",
        {"WATCH_DIR": c_string(str(watched)), "WATCH_NAME": c_string(name)},
    )
    steps = ("inotify_watch",)

    def create_file() -> None:
        (watched / name).write_text("token\n")

    run = attack(guard, processes, mode, plugin, steps, between=create_file)

    check_sandbox_state(run, mode)
    if not mode.sandboxed:
        assert f"saw {name}" in verdict_details(run, "go", "inotify_watch")
    check_attack(run, mode, steps)


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_read_other_process_proc(guard: Guard, processes: list, mode: Mode) -> None:
    """A plugin cannot read another process's environment, command line, root or working directory.

    The plugin tries /proc/PID/environ and /proc/PID/cmdline, and a file through each of the
    /proc/PID/root and /proc/PID/cwd links. The target runs as the broker's user, with a secret
    in its environment and a working directory that the sandbox grants nothing in.
    """
    secrets = guard.root / "secrets"
    secrets.mkdir(mode=0o755)
    root_secret = secrets / "root-secret"
    root_secret.write_text("read through /proc/PID/root\n")
    cwd_secret = secrets / "cwd-secret"
    cwd_secret.write_text("read through /proc/PID/cwd\n")
    account = pwd.getpwnam(mode.broker_user)
    target = subprocess.Popen(
        ["sleep", "600"],
        cwd=secrets,
        env={"REDTEAM_SECRET": "environment secret"},
        user=account.pw_uid,
        group=account.pw_gid,
        extra_groups=[],
    )
    processes.append(target)
    defines = {
        "TARGET_PID": str(target.pid),
        "ROOT_SECRET": c_string(str(root_secret)),
        "CWD_SECRET": c_string(cwd_secret.name),
    }
    plugin = build_redteam(guard, "proc_other", defines)
    steps = ("proc_environ", "proc_cmdline", "proc_root", "proc_cwd")

    run = attack(guard, processes, mode, plugin, steps)

    check_attack(run, mode, steps)


# The network: listeners the plugin opens, and local services it reaches.


def retained_report(port: int, phase: str, step: str) -> str:
    """Return the retained report of `step` in `phase`, read by a new client of the broker."""
    topic = f"redteam/result/{phase}/{step}"
    observer = Observer(port)
    try:
        observer.subscribe(topic)
        return observer.wait_for([topic]).get(topic, "")
    finally:
        observer.close()


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_listen_on_unbound_socket(guard: Guard, processes: list, mode: Mode) -> None:
    """A plugin cannot open a listener of its own by calling listen on a socket never bound.

    Landlock checks the port of bind(2), but listen(2) on an unbound socket binds it to a free
    port on every address without that check. The plugin can publish the port over MQTT, and
    any host that reaches the broker's address then reaches the plugin's listener. The
    systemd drop-in's IPAddressAllow= limits who connects only when every listener is on
    loopback.
    """
    plugin = build_redteam(guard, "listen_any_port", {})
    steps = ("listen_any_port",)

    def probe() -> bool | None:
        report = retained_report(guard.port, "go", "listen_any_port")
        match = re.search(r"listening on port (\d+)", report)
        return connects("127.0.0.1", int(match.group(1))) if match else None

    run = attack(guard, processes, mode, plugin, steps, probe=probe)

    check_sandbox_state(run, mode)
    if mode.sandboxed and run.probe:
        pytest.xfail(
            "known limit: Landlock does not check listen(2) on an unbound socket, and the "
            "broker itself listens after its plugins start, so seccomp cannot deny listen"
        )
    if mode.sandboxed:
        assert run.probe is None, verdict_details(run, "go", "listen_any_port")
    else:
        assert run.probe is True
    check_attack(run, mode, steps)


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_connect_with_fast_open(guard: Guard, processes: list, mode: Mode) -> None:
    """TCP Fast Open reaches no undeclared port either.

    sendto with MSG_FASTOPEN connects an unconnected socket inside the send path, not through
    connect(2), so Landlock must check it there too.
    """
    listener = Listener()
    try:
        plugin = build_redteam(guard, "fast_open", {"UNDECLARED_PORT": str(listener.port)})
        steps = ("fast_open",)
        run = attack(guard, processes, mode, plugin, steps)
        accepted = listener.count_connections()
    finally:
        listener.close()
    check_attack(run, mode, steps)
    assert accepted == (0 if mode.sandboxed else 2)


def datagram_service(path: Path, owner: str) -> socket.socket:
    """Bind a UNIX datagram socket at `path` that only `owner` may send to (mode 0600)."""
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(path))
    account = pwd.getpwnam(owner)
    os.chown(path, account.pw_uid, account.pw_gid)
    path.chmod(0o600)
    return receiver


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_unix_datagram_to_local_service(guard: Guard, processes: list, mode: Mode) -> None:
    """A broker that logs to no syslog and reports to no service manager sends no UNIX datagram.

    The seccomp filter allows UNIX datagram sockets for sd_notify and syslog, and Landlock on
    this kernel does not mediate sending to a socket file. So a plugin reaches every datagram
    service whose socket file permissions let the broker's user write: journald's native
    socket, /dev/log, the service manager, and, under `user root`, root-owned control sockets
    such as wpa_supplicant's. The config here has `log_dest stderr` and no NOTIFY_SOCKET.
    An abstract datagram socket stays out of reach through Landlock's scoping.
    """
    assert "NOTIFY_SOCKET" not in os.environ
    directory = guard.root / "service"
    directory.mkdir(mode=0o755)
    receiver = datagram_service(directory / "control.sock", mode.broker_user)
    abstract_name = f"redteam-dgram-{os.getpid()}-{guard.port}"
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        abstract.bind("\0" + abstract_name)
        defines = {
            "DGRAM_PATH": c_string(str(directory / "control.sock")),
            "DGRAM_ABSTRACT": c_string(abstract_name),
        }
        plugin = build_redteam(guard, "unix_datagram", defines)
        steps = ("unix_datagram", "unix_datagram_abstract")
        run = attack(guard, processes, mode, plugin, steps)
        received = (count_datagrams(receiver), count_datagrams(abstract))
    finally:
        receiver.close()
        abstract.close()
    check_sandbox_state(run, mode)
    expected = 0 if mode.sandboxed else 2
    assert received[1] == expected, verdict_details(run, "init", "unix_datagram_abstract")
    assert received[0] == expected, verdict_details(run, "init", "unix_datagram")
    check_attack(run, mode, steps)


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_unix_stream_with_unix_listener(guard: Guard, processes: list, mode: Mode) -> None:
    """A broker with a UNIX socket listener reaches no other UNIX stream service.

    A UNIX socket listener makes the seccomp filter allow UNIX stream sockets, and Landlock on
    this kernel does not mediate connecting to a socket file. The plugin can then talk to every
    stream service whose socket the broker's user may write: the D-Bus system bus, or, under
    `user root`, the container runtime's root-only socket. The abstract socket stays out of
    reach through Landlock's scoping.
    """
    socket_dir = guard.root / "run"
    socket_dir.mkdir(mode=0o755)
    owner = pwd.getpwnam(mode.broker_user)
    os.chown(socket_dir, owner.pw_uid, owner.pw_gid)
    services = guard.root / "sockets"
    services.mkdir(mode=0o755)
    service = UnixListener(str(services / "service.sock"))
    abstract_name = f"redteam-{os.getpid()}-{guard.port}"
    abstract = UnixListener("\0" + abstract_name)
    try:
        defines = {
            "UNIX_PATH": c_string(str(services / "service.sock")),
            "UNIX_ABSTRACT": c_string(abstract_name),
        }
        plugin = build_redteam(guard, "unix_socket", defines)
        steps = ("connect_unix_path", "connect_unix_abstract")
        run = attack(
            guard,
            processes,
            mode,
            plugin,
            steps,
            config_lines=(f"listener 0 {socket_dir / 'mqtt.sock'}",),
            # The broker removes its socket file when it stops.
            probe=(socket_dir / "mqtt.sock").exists,
        )
        accepted = (service.count_connections(), abstract.count_connections())
    finally:
        service.close()
        abstract.close()
    check_sandbox_state(run, mode)
    assert run.probe is True, run.log
    expected = 0 if mode.sandboxed else 2
    assert accepted[1] == expected, verdict_details(run, "init", "connect_unix_abstract")
    if mode.sandboxed and accepted[0]:
        pytest.xfail(
            "known limit: with a UNIX socket listener, UNIX stream sockets are allowed, and "
            "Landlock on this kernel does not check connecting to a socket file"
        )
    assert accepted[0] == expected, verdict_details(run, "init", "connect_unix_path")
    check_attack(run, mode, steps)


# What outlives the broker: files that root acts on at the next start.


def drop_in(guard: Guard, config: Path) -> str:
    """Return the drop-in that `mosquitto-guard systemd-unit` prints for `config`."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mosquitto_guard",
            "systemd-unit",
            "--policy",
            str(guard.policy),
            "-c",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def run_exec_start_pre(text: str) -> list[str]:
    """Run the drop-in's privileged ExecStartPre=+ commands in order, as systemd would.

    systemd runs a '+' command as root with no sandbox, and stops at the first failure. Returns
    the commands that ran.
    """
    ran = []
    for line in text.splitlines():
        if not line.startswith("ExecStartPre=+"):
            continue
        command = shlex.split(line.removeprefix("ExecStartPre=+"))
        ran.append(shlex.join(command))
        if subprocess.run(command, capture_output=True, check=False).returncode != 0:
            break
    return ran


@pytest.mark.parametrize("nested", ["log", "data/log"])
@pytest.mark.parametrize(
    "mode", [pytest.param(mode, id=mode.name) for mode in (SANDBOX, CONTROL_AS_MOSQUITTO)]
)
def test_drop_in_chown_follows_planted_symlink(
    guard: Guard, processes: list, mode: Mode, nested: str
) -> None:
    """The drop-in's root commands do not follow a symlink the broker planted.

    The config logs to `persistence/<nested>/mosquitto.log`, so the log directory sits inside
    the writable persistence directory. The plugin replaces the first directory of `<nested>`
    with a symlink into a root-owned tree, here a stand-in for /var, so that the log
    directory's path leads to the stand-in's `log` directory, as `data -> /var` leads
    `data/log` to /var/log. A drop-in that ran `+/bin/mkdir -p` and `+/bin/chown mosquitto` on
    the log directory before every start, as root and outside any sandbox, would follow the
    symlink and give that directory to the mosquitto user. The drop-in therefore names no
    directory inside one the broker may write, and the stand-in stays root's after the
    drop-in's root commands run. The control shows that the plugin does plant the symlink.
    """
    files = broker_files(guard, BROKER_USER)
    log_dir = files.persistence / nested
    log_dir.mkdir(mode=0o755, parents=True)
    owner = pwd.getpwnam(BROKER_USER)
    replaced = files.persistence / Path(nested).parts[0]
    for directory in (replaced, log_dir):
        os.chown(directory, owner.pw_uid, owner.pw_gid)
    # The symlink replaces `replaced`, so the log directory's path ends in the stand-in.
    stand_in = guard.root / "var"
    victim = stand_in / Path(nested).relative_to(replaced.name)
    victim.mkdir(mode=0o755, parents=True)
    defines = {"REPLACED_DIR": c_string(str(replaced)), "SYMLINK_TARGET": c_string(str(stand_in))}
    plugin = build_redteam(guard, "plant_symlink", defines)
    log_line = f"log_dest file {log_dir / 'mosquitto.log'}"
    files, argv = prepare(guard, mode, plugin, files=files, config_lines=(log_line,))
    # The admin installs the drop-in while the log directory is still a directory.
    text = drop_in(guard, files.config)
    root_commands = [line for line in text.splitlines() if line.startswith("ExecStartPre=+")]
    assert not [line for line in root_commands if str(log_dir) in line], root_commands

    process = start_broker(argv, guard.port, files.log, processes)
    try:
        run = collect(guard.port, ("plant_symlink",))
    finally:
        stop_process(process)
    run.log = files.log.read_text(errors="replace")
    ran = run_exec_start_pre(text)

    check_sandbox_state(run, mode)
    assert ran, "the drop-in ran no root command at all"
    assert victim.stat().st_uid == 0, verdict_details(run, "init", "plant_symlink")
    if not mode.sandboxed:
        assert replaced.is_symlink(), run.log


@pytest.mark.parametrize("anchor", ["state_dir", "manifest_dir"])
@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_write_trust_anchors(guard: Guard, processes: list, mode: Mode, anchor: str) -> None:
    """A plugin cannot write the rollback state or the manifests, nor the policy or its own file.

    The state directory records the newest version accepted of each plugin, and the manifest
    directory the signed manifests. Writing either would let a later start accept an older
    build. The systemd drop-in lists the state directory in ReadWritePaths= for the launcher,
    so only the sandbox keeps the broker out of it.
    """
    if anchor == "state_dir":
        directory, target = guard.root / "state", guard.policy
    else:
        directory, target = guard.manifests, guard.plugins / "redteam-write_config.so"
    defines = {"CONF_D_DIR": c_string(str(directory)), "CONFIG_FILE": c_string(str(target))}
    plugin = build_redteam(guard, "write_config", defines)
    before = target.read_bytes()
    steps = ("create_conf_d", "append_config")

    run = attack(guard, processes, mode, plugin, steps)

    check_attack(run, mode, steps)
    if mode.sandboxed:
        assert not (directory / "evil.conf").exists()
        assert target.read_bytes() == before
    else:
        assert (directory / "evil.conf").exists()
        assert target.read_bytes() != before
