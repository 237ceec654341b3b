"""The seccomp filter: each filtering test runs in a forked child, since a filter cannot be removed.

The child installs the filter, runs a probe and sends the probe's result back through a pipe as
JSON. Tests of the exec step let the child `exec` a small Python program that reports the same
way, through a descriptor it inherits.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sandbox_child import outcome, run_in_child
from support import MOSQUITTO, free_port, stop_process, wait_for_port

from mosquitto_guard.sandbox import seccomp
from mosquitto_guard.sandbox.seccomp import SECCOMP_DENIED, install_seccomp

needs_x86_64 = pytest.mark.skipif(
    os.uname().machine != "x86_64", reason="the filter supports x86_64 only"
)

LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.syscall.restype = ctypes.c_long

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
SYS_CLONE = 56


def filtered(probe: Callable[[int], Any], timeout: int = 20) -> dict[str, Any]:
    """Run `probe(report_fd)` in a forked child after `install_seccomp` and return its message.

    A probe that execs writes the message itself to `report_fd`, which stays open across exec.
    """

    def confine() -> dict[str, Any]:
        report = install_seccomp()
        return {
            "denied": list(report.denied),
            "unknown": list(report.unknown),
            "supervisor": report.supervisor,
        }

    return run_in_child(confine, probe, timeout)


def libc_call(result: int) -> None:
    """Raise OSError for a failed C library call (a negative result), from ctypes' errno."""
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


# The program the filtered child execs: it tries to exec again, then reports through the
# descriptor named in its first argument.
AFTER_EXEC = textwrap.dedent(
    """
    import ctypes, errno, json, os, sys
    fd = int(sys.argv[1])
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long

    def outcome(action):
        try:
            action()
        except OSError as exc:
            return errno.errorcode.get(exc.errno or 0, str(exc))
        return "ok"

    def execveat():
        true = os.open("/bin/true", os.O_RDONLY)
        argv = (ctypes.c_char_p * 2)(b"true", None)
        if libc.syscall(322, true, b"", argv, None, 0x1000) < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    def ptrace():
        if libc.ptrace(0, 0, 0, 0) < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    out = {"result": {
        "execv": outcome(lambda: os.execv("/bin/true", ["true"])),
        "execveat": outcome(execveat),
        "ptrace": outcome(ptrace),
    }}
    os.write(fd, json.dumps(out).encode())
    """
)


def exec_probe(report_fd: int) -> None:
    os.set_inheritable(report_fd, True)
    os.execv(sys.executable, [sys.executable, "-c", AFTER_EXEC, str(report_fd)])  # noqa: S606


def test_denied_names_unique_and_numbered() -> None:
    assert len(set(SECCOMP_DENIED)) == len(SECCOMP_DENIED)
    for name in (
        "execve",
        "execveat",
        "ptrace",
        "process_vm_readv",
        "init_module",
        "kexec_load",
        "bpf",
        "mount",
        "umount2",
        "pivot_root",
        "keyctl",
        "perf_event_open",
        "swapon",
        "reboot",
        "setns",
        "unshare",
        "userfaultfd",
        "open_by_handle_at",
        "personality",
    ):
        assert name in SECCOMP_DENIED
    assert set(SECCOMP_DENIED) == set(seccomp._X86_64_NUMBERS)


def test_program_jumps_land_on_returns() -> None:
    checked = {"socket": 41, "ioctl": 16, "mremap": 25}
    program = seccomp.build_program(
        0xC000003E, {"mount": 165}, {"execve": 59}, 56, 435, 1 << 30, checked, udp=True
    )
    assert len(program) % 8 == 0
    count = len(program) // 8
    for index in range(count):
        code, jt, jf, _ = struct.unpack_from("<HBBI", program, 8 * index)
        if code & 0x07 == 0x05:  # a jump
            assert index + 1 + jt < count
            assert index + 1 + jf < count


@needs_x86_64
def test_report_lists_denied_calls() -> None:
    out = filtered(lambda _: None)
    assert "error" not in out, out.get("error")
    assert out["report"]["denied"] == list(SECCOMP_DENIED)
    assert out["report"]["unknown"] == []


@needs_x86_64
def test_ptrace_and_process_memory_denied() -> None:
    def probe(_: int) -> dict[str, str]:
        return {
            "ptrace": outcome(lambda: libc_call(LIBC.ptrace(0, 0, 0, 0))),
            "process_vm_readv": outcome(
                lambda: libc_call(LIBC.process_vm_readv(os.getppid(), None, 0, None, 0, 0))
            ),
        }

    out = filtered(probe)
    assert out["result"] == {"ptrace": "EPERM", "process_vm_readv": "EPERM"}


@needs_x86_64
def test_namespaces_and_mounts_denied() -> None:
    def clone_new_net() -> None:
        # A raw clone that requests a new network namespace. A child, if any, exits at once.
        pid = int(LIBC.syscall(SYS_CLONE, CLONE_NEWNET | signal.SIGCHLD, 0, 0, 0, 0))
        if pid == 0:
            os._exit(0)
        libc_call(pid)
        os.waitpid(pid, 0)

    def probe(_: int) -> dict[str, str]:
        return {
            "unshare": outcome(lambda: libc_call(LIBC.unshare(CLONE_NEWUSER))),
            "mount": outcome(lambda: libc_call(LIBC.mount(b"none", b"/mnt", b"tmpfs", 0, None))),
            "umount2": outcome(lambda: libc_call(LIBC.umount2(b"/proc", 0))),
            "clone_new_net": outcome(clone_new_net),
            "personality": outcome(lambda: libc_call(LIBC.personality(0xFFFFFFFF))),
        }

    out = filtered(probe)
    assert out["result"] == {
        "unshare": "EPERM",
        "mount": "EPERM",
        "umount2": "EPERM",
        "clone_new_net": "EPERM",
        "personality": "EPERM",
    }


@needs_x86_64
def test_normal_work_still_allowed() -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    port = int(listener.getsockname()[1])
    directory = Path(tempfile.mkdtemp(prefix="seccomp-"))

    def files() -> None:
        path = directory / "data.txt"
        path.write_text("broker data")
        assert path.read_text() == "broker data"
        path.unlink()

    def tcp() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
            server.bind(("127.0.0.1", 0))
            server.listen(1)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as client:
            client.settimeout(5)
            client.connect(("127.0.0.1", port))
            client.sendall(b"ping")

    def threads_and_fork() -> None:
        import threading

        worker = threading.Thread(target=lambda: None)
        worker.start()
        worker.join()
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)

    def probe(_: int) -> dict[str, str]:
        return {
            "files": outcome(files),
            "tcp": outcome(tcp),
            "threads_and_fork": outcome(threads_and_fork),
        }

    try:
        out = filtered(probe)
        connection, _ = listener.accept()
        with connection:
            assert connection.recv(4) == b"ping"
    finally:
        listener.close()
        directory.rmdir()
    assert out["result"] == {"files": "ok", "tcp": "ok", "threads_and_fork": "ok"}


@needs_x86_64
def test_first_exec_allowed_later_ones_denied() -> None:
    # ENOSYS is what the kernel returns once no listener is left: the supervisor has exited.
    out = filtered(exec_probe)
    assert "error" not in out, out.get("error")
    assert out["result"]["execv"] == "ENOSYS"
    assert out["result"]["execveat"] == "ENOSYS"
    assert out["result"]["ptrace"] == "EPERM"


@needs_x86_64
def test_failed_first_exec_is_not_retried() -> None:
    def probe(report_fd: int) -> dict[str, str]:
        missing = outcome(lambda: os.execv("/nonexistent/broker", ["broker"]))  # noqa: S606
        retry = outcome(lambda: exec_probe(report_fd))
        return {"missing": missing, "retry": retry}

    out = filtered(probe)
    assert out["result"] == {"missing": "ENOENT", "retry": "ENOSYS"}


@needs_x86_64
def test_exec_from_forked_child_denied() -> None:
    def probe(report_fd: int) -> str:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            message = outcome(lambda: os.execv("/bin/true", ["true"]))  # noqa: S606
            os.write(write_end, message.encode())
            os._exit(0)
        os.close(write_end)
        child = os.read(read_end, 64).decode()
        os.close(read_end)
        os.waitpid(pid, 0)
        if child != "EPERM":
            return f"forked child: {child}"
        exec_probe(report_fd)
        return "exec failed"

    out = filtered(probe)
    assert "error" not in out, out.get("error")
    assert out["result"]["execv"] == "ENOSYS"


@needs_x86_64
def test_report_lists_unknown_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(seccomp._X86_64_NUMBERS, "uselib")
    out = filtered(lambda _: None)
    assert "uselib" in out["report"]["unknown"]
    assert "uselib" not in out["report"]["denied"]
    assert len(out["report"]["denied"]) == len(SECCOMP_DENIED) - 1


@needs_x86_64
def test_supervisor_exits_when_launcher_does_not_exec() -> None:
    out = filtered(lambda _: None)
    assert "error" not in out
    assert supervisor_gone(out["report"]["supervisor"])


def supervisor_gone(pid: int, timeout: float = 10.0) -> bool:
    """Wait until process `pid` has exited (gone, or a zombie not yet reaped by init)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                state = stat.read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.02)
    return False


@pytest.mark.skipif(not Path(MOSQUITTO).exists(), reason="mosquitto is not installed")
@needs_x86_64
def test_broker_serves_after_filtered_exec(
    safe_dir: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    port = free_port()
    config = safe_dir / "mosquitto.conf"
    config.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\n"
    )
    launcher = (
        "import os, sys\n"
        "from mosquitto_guard.sandbox.seccomp import install_seccomp\n"
        "install_seccomp()\n"
        "os.execv(sys.argv[1], sys.argv[1:])\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", launcher, MOSQUITTO, "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=Path(__file__).parents[2],
    )
    processes.append(process)
    assert wait_for_port(port, process), process.stderr.read() if process.stderr else ""

    # MQTT 3.1.1 CONNECT with a clean session and client id "s". The broker replies CONNACK 0.
    connect = b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x01s"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        client.sendall(connect)
        assert client.recv(4) == b"\x20\x02\x00\x00"
        # PINGREQ, PINGRESP
        client.sendall(b"\xc0\x00")
        assert client.recv(2) == b"\xd0\x00"

    with open(f"/proc/{process.pid}/status") as status:
        fields = dict(line.split(":", 1) for line in status if ":" in line)
    assert fields["Seccomp"].strip() == "2"
    assert fields["NoNewPrivs"].strip() == "1"
    assert Path(os.readlink(f"/proc/{process.pid}/exe")).name == "mosquitto"
    stop_process(process)


def socket_outcomes(_: int) -> dict[str, str]:
    """Try each kind of socket the filter decides on, and name the outcome of each."""
    kinds = {
        "unix_stream": (socket.AF_UNIX, socket.SOCK_STREAM, 0),
        "unix_dgram": (socket.AF_UNIX, socket.SOCK_DGRAM, 0),
        "tcp4": (socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_CLOEXEC, 0),
        "tcp6": (socket.AF_INET6, socket.SOCK_STREAM, 0),
        "udp4": (socket.AF_INET, socket.SOCK_DGRAM, 0),
        "udp4_explicit": (socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP),
        "tcp4_explicit": (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP),
        "mptcp": (socket.AF_INET, socket.SOCK_STREAM, 262),
        "raw4": (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
        "raw6": (socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6),
        "packet": (socket.AF_PACKET, socket.SOCK_RAW, 0),
        "netlink_route": (socket.AF_NETLINK, socket.SOCK_RAW, 0),
        "netlink_audit": (socket.AF_NETLINK, socket.SOCK_RAW, 9),
    }
    return {
        name: outcome(lambda spec=spec: socket.socket(*spec).close())
        for name, spec in kinds.items()
    }


def socket_filtered(udp: bool, unix_stream: bool = True) -> dict[str, Any]:
    def confine() -> dict[str, bool]:
        return {"udp": install_seccomp(udp=udp, unix_stream=unix_stream).udp}

    return run_in_child(confine, socket_outcomes)


ALWAYS = {
    "unix_stream": "ok",
    "unix_dgram": "ok",
    "tcp4": "ok",
    "tcp4_explicit": "ok",
    "tcp6": "ok",
    "netlink_route": "ok",
}
NEVER = {
    "raw4": "EPERM",
    "raw6": "EPERM",
    "packet": "EPERM",
    "netlink_audit": "EPERM",
    "mptcp": "EPERM",
}


@needs_x86_64
def test_sockets_without_udp() -> None:
    # As root, every one of these succeeds without the filter.
    assert socket_outcomes(0) == dict.fromkeys(socket_outcomes(0), "ok")
    out = socket_filtered(udp=False)
    assert out["report"] == {"udp": False}
    assert out["result"] == {**ALWAYS, **NEVER, "udp4": "EPERM", "udp4_explicit": "EPERM"}


@needs_x86_64
def test_sockets_with_udp() -> None:
    out = socket_filtered(udp=True)
    assert out["result"] == {**ALWAYS, **NEVER, "udp4": "ok", "udp4_explicit": "ok"}


@needs_x86_64
def test_unix_streams_denied_without_listener() -> None:
    out = socket_filtered(udp=False, unix_stream=False)
    assert out["result"]["unix_stream"] == "EPERM"
    assert out["result"]["unix_dgram"] == "ok"


TIOCSTI = 0x5412


@needs_x86_64
def test_terminal_typing_denied() -> None:
    def probe(_: int) -> str:
        main, _ = os.openpty()
        char = ctypes.c_char(b"x")
        return outcome(lambda: libc_call(LIBC.ioctl(main, TIOCSTI, ctypes.byref(char))))

    # Without the filter the ioctl reaches the terminal driver, which may itself refuse it
    # (dev.tty.legacy_tiocsti); under the filter it never gets there.
    assert run_in_child(lambda: {}, probe)["result"] in ("ok", "EIO", "EPERM")
    assert filtered(probe)["result"] == "EPERM"
    assert (
        filtered(lambda _: outcome(lambda: os.get_terminal_size(os.openpty()[0])))["result"] == "ok"
    )


MREMAP_MAYMOVE = 1
PROT_READ_EXEC = 0x1 | 0x4
MAP_SHARED_ANONYMOUS = 0x01 | 0x20


@needs_x86_64
def test_duplicating_shared_mapping_denied() -> None:
    LIBC.mmap.restype = ctypes.c_void_p
    LIBC.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t] + [ctypes.c_int] * 3 + [ctypes.c_long]
    LIBC.mremap.restype = ctypes.c_void_p
    LIBC.mremap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_int]

    def probe(_: int) -> dict[str, str]:
        page = LIBC.mmap(None, 4096, PROT_READ_EXEC, MAP_SHARED_ANONYMOUS, -1, 0)
        private = LIBC.mmap(None, 8192, 0x3, 0x02 | 0x20, -1, 0)

        def alias() -> None:
            if LIBC.mremap(page, 0, 4096, MREMAP_MAYMOVE) in (None, ctypes.c_void_p(-1).value):
                libc_call(-1)

        def grow() -> None:
            if LIBC.mremap(private, 8192, 16384, MREMAP_MAYMOVE) in (
                None,
                ctypes.c_void_p(-1).value,
            ):
                libc_call(-1)

        return {"alias": outcome(alias), "grow": outcome(grow)}

    assert run_in_child(lambda: {}, probe)["result"] == {"alias": "ok", "grow": "ok"}
    assert filtered(probe)["result"] == {"alias": "EPERM", "grow": "ok"}


@needs_x86_64
def test_memfd_create_denied() -> None:
    def probe(_: int) -> str:
        return outcome(lambda: os.close(os.memfd_create("code")))

    assert run_in_child(lambda: {}, probe)["result"] == "ok"
    assert filtered(probe)["result"] == "EPERM"


def metadata_outcomes(directory: Path) -> dict[str, str]:
    """Try the calls that change files outside Landlock's reach, and name each outcome."""
    directory.mkdir()
    target = directory / "target"
    target.write_text("x")
    created = directory / "created"

    def open_setuid() -> None:
        os.close(os.open(created, os.O_CREAT | os.O_WRONLY, 0o4755))

    def open_plain() -> None:
        os.close(os.open(directory / "plain", os.O_CREAT | os.O_WRONLY, 0o644))

    def other_limits() -> None:
        os.setpriority(os.PRIO_PROCESS, os.getppid(), 0)

    def shared_memory() -> None:
        segment = LIBC.shmget(0, 4096, 0o1600)
        libc_call(segment)
        LIBC.shmctl(segment, 0, None)  # IPC_RMID, so the test leaves no segment behind

    return {
        "chmod": outcome(lambda: os.chmod(target, 0o600)),
        "chown": outcome(lambda: os.chown(target, 0, 0)),
        "utime": outcome(lambda: os.utime(target)),
        "setxattr": outcome(lambda: os.setxattr(target, "user.mark", b"1")),
        "open_setuid": outcome(open_setuid),
        "open_plain": outcome(open_plain),
        "mknod_fifo": outcome(lambda: os.mkfifo(directory / "fifo")),
        "own_priority": outcome(lambda: os.setpriority(os.PRIO_PROCESS, 0, 0)),
        "other_priority": outcome(other_limits),
        "other_rlimit": outcome(
            lambda: libc_call(LIBC.prlimit(os.getppid(), 7, None, ctypes.byref(ctypes.c_ulong())))
        ),
        "own_rlimit": outcome(
            lambda: libc_call(LIBC.prlimit(0, 7, None, ctypes.byref((ctypes.c_ulong * 2)())))
        ),
        "shmget": outcome(shared_memory),
        "inotify": outcome(lambda: libc_call(LIBC.inotify_init1(0))),
        "openat2": outcome(lambda: libc_call(LIBC.syscall(437, -100, b"/", None, 0))),
    }


@needs_x86_64
def test_metadata_and_ipc_calls() -> None:
    directory = Path(tempfile.mkdtemp(prefix="seccomp-meta-"))
    try:
        before = run_in_child(lambda: {}, lambda _: metadata_outcomes(directory / "before"))
        after = run_in_child(
            lambda: {"unix_stream": install_seccomp(unix_stream=False).unix_stream},
            lambda _: metadata_outcomes(directory / "after"),
        )
    finally:
        shutil.rmtree(directory)
    # As root, every call succeeds without the filter (openat2 with no struct fails on its own).
    assert {name: result for name, result in before["result"].items() if name != "openat2"} == (
        dict.fromkeys(
            (name for name in before["result"] if name != "openat2"),
            "ok",
        )
    )
    assert after["result"] == {
        "chmod": "EPERM",
        "chown": "EPERM",
        "utime": "EPERM",
        "setxattr": "EPERM",
        "open_setuid": "EPERM",
        "open_plain": "ok",
        "mknod_fifo": "EPERM",
        "own_priority": "ok",
        "other_priority": "EPERM",
        "other_rlimit": "EPERM",
        "own_rlimit": "ok",
        "shmget": "EPERM",
        "inotify": "EPERM",
        "openat2": "ENOSYS",
    }


@needs_x86_64
def test_chmod_without_setid_allowed_for_unix_listener() -> None:
    directory = Path(tempfile.mkdtemp(prefix="seccomp-chmod-"))
    target = directory / "socket-file"
    target.write_text("")

    def probe(_: int) -> dict[str, str]:
        return {
            "plain": outcome(lambda: os.chmod(target, 0o660)),
            "setuid": outcome(lambda: os.chmod(target, 0o4755)),
        }

    try:
        out = run_in_child(lambda: {"ok": install_seccomp(unix_stream=True).unix_stream}, probe)
    finally:
        shutil.rmtree(directory)
    assert out["result"] == {"plain": "ok", "setuid": "EPERM"}


@needs_x86_64
def test_unix_datagrams_only_when_needed() -> None:
    def probe(_: int) -> str:
        return outcome(lambda: socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).close())

    def confine(dgram: bool) -> Callable[[], dict[str, bool]]:
        return lambda: {"dgram": install_seccomp(unix_dgram=dgram).unix_dgram}

    assert run_in_child(confine(True), probe)["result"] == "ok"
    assert run_in_child(confine(False), probe)["result"] == "EPERM"


def test_fast_path_comes_first_and_allows() -> None:
    with pytest.raises(ValueError, match="fast path"):
        seccomp.build_program(0xC000003E, {"mount": 165}, {}, 56, 435, 1 << 30, fast_allow=(165,))
    program = seccomp.build_program(
        0xC000003E, {"mount": 165}, {}, 56, 435, 1 << 30, fast_allow=(0,)
    )
    count = len(program) // 8
    # After the architecture check, the call number load and the x32 check: read (0).
    code, jump_true, _, k = struct.unpack_from("<HBBI", program, 8 * 4)
    assert (code, k) == (0x15, 0)
    allow = count - 4  # the returns end the program: allow, deny, notify, nosys
    assert 4 + 1 + jump_true == allow
    assert struct.unpack_from("<HBBI", program, 8 * allow) == (0x06, 0, 0, 0x7FFF0000)
