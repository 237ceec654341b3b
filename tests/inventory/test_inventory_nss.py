"""nsswitch.conf parsing, and the NSS modules glibc loads for the broker's account lookup."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest

from mosquitto_guard.inventory.nss import ACCOUNT_DATABASES, nss_modules, parse_nsswitch

DEBIAN_DEFAULT = """\
# /etc/nsswitch.conf
passwd:         files systemd
group:          files systemd
shadow:         files systemd
hosts:          files dns
netgroup:       nis
"""


def test_parse_nsswitch_lines() -> None:
    lines = parse_nsswitch(DEBIAN_DEFAULT)
    assert lines["passwd"].services == ("files", "systemd")
    assert lines["passwd"].line == 2
    assert lines["hosts"].services == ("files", "dns")


def test_parse_nsswitch_actions_and_comments() -> None:
    text = "passwd: files [NOTFOUND=return] sss#comment ldap\ngroup : compat\n  hosts files mdns4\n"
    lines = parse_nsswitch(text)
    assert lines["passwd"].services == ("files", "sss")
    assert lines["passwd"].problem is None
    assert lines["group"].services == ("compat",)
    # glibc takes spaces alone as the separator, and leading spaces are allowed.
    assert lines["hosts"].services == ("files", "mdns4")


def test_parse_nsswitch_later_line_wins() -> None:
    lines = parse_nsswitch("passwd: files sss\npasswd: files ldap\n")
    assert lines["passwd"].services == ("files", "ldap")
    assert lines["passwd"].line == 2


def test_parse_nsswitch_bad_action_keeps_services() -> None:
    lines = parse_nsswitch("passwd: files ldap [BOGUS=stop] sss\n")
    assert lines["passwd"].services == ("files", "ldap")
    assert lines["passwd"].problem is not None


def test_nss_modules_skip_builtin(tmp_path: Path) -> None:
    path = tmp_path / "nsswitch.conf"
    path.write_text("passwd: files systemd\ngroup: files dns hesiod systemd\nhosts: mdns4\n")
    modules, warnings = nss_modules(path, ACCOUNT_DATABASES)
    assert [(m.file_name, m.databases, m.source) for m in modules] == [
        ("libnss_systemd.so.2", ("passwd", "group"), f"{path}:1"),
        ("libnss_hesiod.so.2", ("group",), f"{path}:2"),
    ]
    assert warnings == []


def test_nss_modules_initgroups_line(tmp_path: Path) -> None:
    path = tmp_path / "nsswitch.conf"
    path.write_text("passwd: files\ngroup: files\ninitgroups: files sss\n")
    modules, _ = nss_modules(path, ACCOUNT_DATABASES)
    assert [module.file_name for module in modules] == ["libnss_sss.so.2"]


def test_nss_modules_compat_warns(tmp_path: Path) -> None:
    path = tmp_path / "nsswitch.conf"
    path.write_text("passwd: compat\n")
    modules, warnings = nss_modules(path, ACCOUNT_DATABASES)
    assert [module.service for module in modules] == ["compat"]
    assert "passwd_compat" in warnings[0]


def test_nss_modules_missing_file(tmp_path: Path) -> None:
    assert nss_modules(tmp_path / "absent.conf", ACCOUNT_DATABASES) == ([], [])


def test_files_and_dns_are_stubs_here() -> None:
    # glibc 2.34+ builds files and dns into libc; the files left on disk define no function.
    libc = subprocess.run(
        ["nm", "-D", "--defined-only", "/lib/x86_64-linux-gnu/libc.so.6"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "_nss_files_getpwnam_r" in libc
    stub = Path("/lib/x86_64-linux-gnu/libnss_files.so.2")
    if stub.exists():
        symbols = subprocess.run(
            ["nm", "-D", "--defined-only", str(stub)], capture_output=True, text=True, check=True
        ).stdout
        assert "_nss_files_getpwnam_r" not in symbols


def test_real_initgroups_loads_listed_module() -> None:
    if os.geteuid() != 0:
        pytest.skip("initgroups needs root")
    try:
        account = pwd.getpwnam("mosquitto")
    except KeyError:
        pytest.skip("no mosquitto account")
    modules, _ = nss_modules(Path("/etc/nsswitch.conf"), ACCOUNT_DATABASES)
    code = (
        "import os, sys\n"
        f"os.initgroups('mosquitto', {account.pw_gid})\n"
        "print('\\n'.join(sorted({line.split()[-1] for line in open('/proc/self/maps')"
        " if 'libnss_' in line})))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = {Path(line).name for line in result.stdout.split()}
    assert loaded == {module.file_name for module in modules}
