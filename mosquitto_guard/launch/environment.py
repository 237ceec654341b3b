"""The broker's environment: variables that load code or disable its privilege drop.

Facts about Mosquitto 2.0 and 2.1 behind these lists:
- `SNAP_NAME` makes the broker skip its privilege drop entirely, with no warning.
- `PUID`/`PGID` (2.1) replace the `user` option; the value 0 keeps the broker root.
- `MOSQUITTO_UNSAFE_ALLOW_SYMLINKS` (2.1.1) lets restricted files be symlinks.
- `UMASK_SET` (2.1) sets the broker's umask.
The dynamic loader, glibc and OpenSSL read the others, and each of them can make the process
load code that was never verified.
"""

from __future__ import annotations

from collections.abc import Mapping

# Variables removed before the broker starts. Names ending in "*" are prefixes.
REMOVED_VARIABLES = (
    "LD_*",
    "GCONV_PATH",
    "GLIBC_TUNABLES",
    "LOCPATH",
    "OPENSSL_CONF",
    "OPENSSL_CONF_INCLUDE",
    "OPENSSL_ENGINES",
    "OPENSSL_MODULES",
    "MOSQUITTO_UNSAFE_ALLOW_SYMLINKS",
    "UMASK_SET",
)


def _is_removed(name: str) -> bool:
    for pattern in REMOVED_VARIABLES:
        if pattern.endswith("*") and name.startswith(pattern[:-1]):
            return True
        if name == pattern:
            return True
    return False


def scrub_environment(env: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """Return a copy of `env` without the variables that load code, and the names removed."""
    clean = {name: value for name, value in env.items() if not _is_removed(name)}
    removed = sorted(name for name in env if _is_removed(name))
    return clean, removed


def environment_problems(env: Mapping[str, str]) -> list[str]:
    """Return one message for each variable that would keep the broker running as root."""
    problems = []
    if "SNAP_NAME" in env:
        problems.append(
            f"environment: SNAP_NAME={env['SNAP_NAME']!r} makes the broker skip its privilege "
            "drop, so every plugin runs as root; fix: unset SNAP_NAME in the service environment"
        )
    for name in ("PUID", "PGID"):
        if env.get(name, "").strip() == "0":
            problems.append(
                f"environment: {name}=0 keeps the broker running as root; fix: set {name} to the "
                "id of an unprivileged account, or unset it"
            )
    return problems


# Variables that make the dynamic loader or the Python interpreter run code in mosquitto-guard's
# own process before any check, in the process that then becomes the broker. Removing them from
# the broker's environment is too late: a library named by LD_PRELOAD, or a sitecustomize module
# found through PYTHONPATH, has already run as root.
LAUNCHER_CODE_VARIABLES = (
    "LD_PRELOAD",
    "LD_AUDIT",
    "LD_LIBRARY_PATH",
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSTARTUP",
    "PYTHONUSERBASE",
    "PYTHONEXECUTABLE",
)


def launcher_problems(env: Mapping[str, str]) -> list[str]:
    """Return one message for each variable that loaded code into this launcher itself."""
    return [
        f"environment: {name} is set for mosquitto-guard itself, so code it names ran inside "
        "this process before any check; fix: remove it from the service environment (the "
        "drop-in printed by `mosquitto-guard systemd-unit` unsets it)"
        for name in LAUNCHER_CODE_VARIABLES
        if env.get(name)
    ]
