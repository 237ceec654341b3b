"""Parsing the broker's own command line."""

from __future__ import annotations

import pytest

from mosquitto_guard.errors import UsageError
from mosquitto_guard.inventory.argv import MAX_PORTS, BrokerArgs, parse_broker_args


def test_argv_repeated_config_files() -> None:
    args = parse_broker_args(["-c", "a.conf", "--config-file", "/etc/b.conf", "-c", "a.conf"])
    assert args.config_files == ("a.conf", "/etc/b.conf", "a.conf")


def test_argv_all_flags() -> None:
    args = parse_broker_args(
        [
            "-d",
            "-v",
            "-q",
            "-p",
            "1884",
            "--port",
            "1885",
            "--tls-keylog",
            "/tmp/keys",
            "--test-config",
            "--daemon",
            "--verbose",
            "--quiet",
        ]
    )
    assert args == BrokerArgs(
        daemon=True,
        ports=(1884, 1885),
        verbose=True,
        quiet=True,
        tls_keylog="/tmp/keys",
        test_config=True,
    )


def test_argv_help() -> None:
    assert parse_broker_args(["-h"]).help
    assert parse_broker_args(["--help"]).help


def test_argv_empty_means_default_config() -> None:
    assert parse_broker_args([]) == BrokerArgs()


def test_argv_port_like_atoi() -> None:
    assert parse_broker_args(["-p", "1884abc"]).ports == (1884,)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-x"], "unknown broker option '-x'"),
        (["--config-file=a.conf"], "unknown broker option '--config-file=a.conf'"),
        (["-ca.conf"], "unknown broker option '-ca.conf'"),
        (["a.conf"], "unknown broker option 'a.conf'"),
        (["-c"], "-c needs a config file"),
        (["--tls-keylog"], "--tls-keylog needs a file"),
        (["-p", "0"], "invalid broker port '0'"),
        (["-p", "70000"], "invalid broker port '70000'"),
        (["-p", "http"], "invalid broker port 'http'"),
        (["-p"], "-p needs a port"),
    ],
    ids=[
        "unknown flag",
        "equals form",
        "joined value",
        "positional",
        "-c without file",
        "keylog without file",
        "port zero",
        "port too big",
        "port not a number",
        "-p alone",
    ],
)
def test_argv_rejected(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_broker_args(argv)


def test_argv_port_limit() -> None:
    argv = [word for port in range(1, MAX_PORTS + 2) for word in ("-p", str(port))]
    with pytest.raises(UsageError, match="at most 10"):
        parse_broker_args(argv)


def test_argv_2_0_rejects_2_1_options() -> None:
    with pytest.raises(UsageError, match=r"Mosquitto 2\.0 would refuse"):
        parse_broker_args(["-q"], version=(2, 0))
    assert parse_broker_args(["-q"], version=(2, 1)).quiet


def test_argv_usage_error_exit_code() -> None:
    with pytest.raises(UsageError) as caught:
        parse_broker_args(["--bogus"])
    assert caught.value.exit_code == 2
    assert caught.value.fix is not None
