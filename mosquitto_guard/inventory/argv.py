"""Parse the broker's own command line the way `config__parse_args()` in Mosquitto does.

Mosquitto takes each option as a separate word (`-c FILE`, never `-cFILE` or `--config-file=F`),
rejects any word it does not know, and reads each `-c` file in turn into the same config, so
repeated `-c` options add up. 2.0 accepts `-c`/`--config-file`, `-d`/`--daemon`, `-h`/`--help`,
`-p`/`--port` (up to 10 times) and `-v`/`--verbose`; 2.1 adds `-q`/`--quiet`, `--test-config`
and `--tls-keylog FILE`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mosquitto_guard.config.options import c_atoi
from mosquitto_guard.errors import UsageError

# CMD_PORT_LIMIT in the broker's `src/mosquitto_broker_internal.h`.
MAX_PORTS = 10
_OPTIONS_2_1 = frozenset({"-q", "--quiet", "--test-config", "--tls-keylog"})


@dataclass(frozen=True)
class BrokerArgs:
    """The broker options found on a command line.

    `config_files` are the `-c` values in order, exactly as written (relative paths resolve
    against the broker's working directory). `help` means the broker prints its usage and
    exits without starting.
    """

    config_files: tuple[str, ...] = ()
    daemon: bool = False
    ports: tuple[int, ...] = ()
    verbose: bool = False
    quiet: bool = False
    tls_keylog: str | None = None
    test_config: bool = False
    help: bool = False


def parse_broker_args(argv: Sequence[str], *, version: tuple[int, int] | None = None) -> BrokerArgs:
    """Parse the broker's arguments `argv`, without the program name.

    `version` (2, 0) rejects the options that only 2.1 accepts; None accepts the options of both.
    Raises `UsageError` for an unknown option or a missing or invalid value, because the broker
    would not start either.
    """
    config_files: list[str] = []
    ports: list[int] = []
    flags = {"daemon": False, "verbose": False, "quiet": False, "test_config": False, "help": False}
    tls_keylog: str | None = None
    index = 0
    while index < len(argv):
        arg = argv[index]
        if version is not None and version < (2, 1) and arg in _OPTIONS_2_1:
            raise _unknown(arg, version)
        if arg in ("-c", "--config-file"):
            config_files.append(_value(argv, index, "a config file"))
            index += 1
        elif arg in ("-p", "--port"):
            ports.append(_port(_value(argv, index, "a port"), len(ports)))
            index += 1
        elif arg == "--tls-keylog":
            tls_keylog = _value(argv, index, "a file")
            index += 1
        elif arg in ("-d", "--daemon"):
            flags["daemon"] = True
        elif arg in ("-v", "--verbose"):
            flags["verbose"] = True
        elif arg in ("-q", "--quiet"):
            flags["quiet"] = True
        elif arg == "--test-config":
            flags["test_config"] = True
        elif arg in ("-h", "--help"):
            flags["help"] = True
        else:
            raise _unknown(arg, version)
        index += 1
    return BrokerArgs(tuple(config_files), ports=tuple(ports), tls_keylog=tls_keylog, **flags)


def _value(argv: Sequence[str], index: int, what: str) -> str:
    if index + 1 >= len(argv):
        raise UsageError(
            f"broker option {argv[index]} needs {what}, but none follows",
            fix=f"write {argv[index]} followed by {what}",
        )
    return argv[index + 1]


def _port(text: str, count: int) -> int:
    port = c_atoi(text)
    if port < 1 or port > 65535:
        raise UsageError(f"invalid broker port {text!r}", fix="give -p a port from 1 to 65535")
    if count >= MAX_PORTS:
        raise UsageError(
            f"the broker accepts at most {MAX_PORTS} -p options",
            fix="use listener lines in the config for more ports",
        )
    return port


def _unknown(arg: str, version: tuple[int, int] | None) -> UsageError:
    release = f" {version[0]}.{version[1]}" if version is not None else ""
    return UsageError(
        f"unknown broker option {arg!r}: Mosquitto{release} would refuse to start",
        fix="remove it; the broker takes -c FILE, -d, -p PORT, -v, -q, -h, --test-config "
        "and --tls-keylog FILE, each as a separate word",
    )
