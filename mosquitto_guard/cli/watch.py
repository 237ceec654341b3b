"""`mosquitto-guard watch --policy P [-c CONF] [--baseline FILE] [--interval SECONDS] ...`.

Verifies the signed baseline, checks every watched file once, then watches them with inotify
and logs an alert for each change until SIGTERM or SIGINT. Events are JSON lines on stderr and
in syslog; alerts can also be published to an MQTT broker. docs/integrity-watch.md describes
the events and their fields.

Exit codes are bits of `check`'s bitmask:

- 0: stopped by SIGTERM or SIGINT;
- 8: the baseline is invalid, so an alert is logged, and the baseline is left as it is;
- 16: watch could not start, because the command line, policy, baseline, config or inotify
  failed. A bad command line exits with 16 too, because 2 would read as "removed".
"""

from __future__ import annotations

import argparse
import os
import signal
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mosquitto_guard.cli.baseline import add_target_arguments
from mosquitto_guard.cli.check import add_baseline_argument
from mosquitto_guard.errors import GuardError, UsageError
from mosquitto_guard.integrity.alerts import DEFAULT_SYSLOG_SOCKET
from mosquitto_guard.integrity.compare import BASELINE_INVALID, CHECK_FAILED

if TYPE_CHECKING:
    from mosquitto_guard.integrity.alerts import EventLog
    from mosquitto_guard.integrity.monitor import Monitor, Settings
    from mosquitto_guard.integrity.mqtt_alerts import MqttSettings

DEFAULT_INTERVAL = 3600.0
DEFAULT_MQTT_PORT = 1883
DEFAULT_MQTT_TOPIC = "mosquitto-guard/alerts"
# Seconds the MQTT broker gets at exit to acknowledge the alerts still pending.
MQTT_FLUSH_SECONDS = 5.0
MAX_PASSWORD_BYTES = 4096


def add_parser(subparsers: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    """Add the `watch` subcommand to `subparsers`."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name,
        help=help_text,
        description="Verify the signed baseline and check every watched file, then watch them "
        "with inotify and log an alert for each file written, replaced, added, removed, "
        "chmod-ed, chown-ed or relinked, until SIGTERM or SIGINT. Events are JSON lines on "
        "stderr and in syslog; alerts can also go to an MQTT topic. Exit status: 0 stopped "
        "by a signal, 8 the baseline is invalid, 16 watch could not start.",
    )
    add_target_arguments(parser)
    add_baseline_argument(parser)
    parser.add_argument(
        "--interval",
        type=_interval,
        default=DEFAULT_INTERVAL,
        metavar="SECONDS",
        help=f"seconds between full checks, a backstop for inotify (default {DEFAULT_INTERVAL:g}"
        "; 0 runs none after the start-up check)",
    )
    syslog = parser.add_mutually_exclusive_group()
    syslog.add_argument(
        "--syslog-socket",
        type=Path,
        default=DEFAULT_SYSLOG_SOCKET,
        metavar="PATH",
        help=f"the local syslog socket (default {DEFAULT_SYSLOG_SOCKET})",
    )
    syslog.add_argument("--no-syslog", action="store_true", help="log to stderr only")
    _add_mqtt_arguments(parser)
    return parser


def _add_mqtt_arguments(parser: argparse.ArgumentParser) -> None:
    mqtt = parser.add_argument_group(
        "MQTT", "publish each alert with QoS 1 to a broker (not the one watched)"
    )
    mqtt.add_argument("--mqtt-host", metavar="HOST", help="the broker's host name or address")
    mqtt.add_argument(
        "--mqtt-port",
        type=_port,
        default=DEFAULT_MQTT_PORT,
        metavar="N",
        help=f"the broker's TCP port (default {DEFAULT_MQTT_PORT})",
    )
    mqtt.add_argument(
        "--mqtt-topic",
        default=DEFAULT_MQTT_TOPIC,
        metavar="TOPIC",
        help=f"the topic to publish on (default {DEFAULT_MQTT_TOPIC})",
    )
    mqtt.add_argument("--mqtt-username", metavar="NAME", help="the user name to connect as")
    mqtt.add_argument(
        "--mqtt-password-file",
        type=Path,
        metavar="FILE",
        help="a file whose first line is the password, readable and writable by its owner only",
    )
    mqtt.add_argument(
        "--mqtt-cafile",
        type=Path,
        metavar="CA",
        help="connect with TLS and verify the broker's certificate against this CA file",
    )


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, not {text}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be from 1 to 65535, not {value}")
    return value


def run(args: argparse.Namespace) -> int:
    """Watch until a signal stops it, and return the exit code."""
    from mosquitto_guard.integrity.alerts import EventLog

    events = EventLog()
    try:
        return _watch(args, events)
    finally:
        events.close(MQTT_FLUSH_SECONDS)


def _watch(args: argparse.Namespace, events: EventLog) -> int:
    from mosquitto_guard.cli.baseline import targets_from
    from mosquitto_guard.integrity.monitor import Monitor, Settings
    from mosquitto_guard.policy.model import load_policy

    _open_syslog(args, events)
    try:
        _open_mqtt(args, events)
        policy = load_policy(args.policy)
        settings = Settings(
            baseline_path=args.baseline or policy.integrity.baseline,
            policy=policy,
            targets=targets_from(args),
            interval=args.interval,
            workers=args.workers,
            progress=not args.no_progress,
        )
        monitor = Monitor(settings, events)
    except GuardError as error:
        events.error(f"cannot start: {error}")
        return CHECK_FAILED
    try:
        return _monitor(monitor, settings, events)
    finally:
        monitor.close()


def _monitor(monitor: Monitor, settings: Settings, events: EventLog) -> int:
    from mosquitto_guard.integrity.baseline import BaselineError
    from mosquitto_guard.integrity.monitor import STARTUP_CHECK

    monitor.install_signal_handlers()
    try:
        monitor.start()
    except BaselineError as error:
        events.emit(
            "baseline_invalid",
            baseline=str(settings.baseline_path),
            message=str(error),
            source=STARTUP_CHECK,
        )
        return BASELINE_INVALID
    except GuardError as error:
        events.error(f"cannot start: {error}")
        return CHECK_FAILED
    events.emit(
        "watch_started",
        baseline=str(settings.baseline_path),
        files=len(monitor.watched),
        pid=os.getpid(),
        interval=settings.interval,
    )
    signum = monitor.run()
    events.emit("watch_stopped", signal=signal.Signals(signum).name, pid=os.getpid())
    return 0


def _open_syslog(args: argparse.Namespace, events: EventLog) -> None:
    from mosquitto_guard.integrity.alerts import SyslogSink

    if args.no_syslog:
        return
    sink = SyslogSink(args.syslog_socket, events.report)
    # Connecting now logs a missing socket once, at start, rather than with the first alert.
    sink.open()
    events.add_sink(sink)


def _open_mqtt(args: argparse.Namespace, events: EventLog) -> None:
    """Start publishing alerts when --mqtt-host is given. Raises `UsageError` on bad options."""
    from mosquitto_guard.integrity.mqtt_alerts import MqttSink

    settings = mqtt_settings(args)
    if settings is None:
        return
    try:
        sink = MqttSink(settings, events.report)
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot use --mqtt-cafile {settings.cafile}: {error}") from None
    events.add_sink(sink)
    sink.start()


def mqtt_settings(args: argparse.Namespace) -> MqttSettings | None:
    """Return the MQTT options, or None without --mqtt-host. Raises `UsageError` when invalid."""
    from mosquitto_guard.integrity.mqtt_alerts import MqttSettings

    if args.mqtt_host is None:
        without_host = [
            option
            for option, value in (
                ("--mqtt-username", args.mqtt_username),
                ("--mqtt-password-file", args.mqtt_password_file),
                ("--mqtt-cafile", args.mqtt_cafile),
            )
            if value is not None
        ]
        if without_host:
            raise UsageError(f"{without_host[0]} needs --mqtt-host")
        return None
    topic = args.mqtt_topic
    if not topic or "+" in topic or "#" in topic or "\0" in topic:
        raise UsageError(f"--mqtt-topic must be a topic without wildcards, not {topic!r}")
    if args.mqtt_password_file is not None and args.mqtt_username is None:
        raise UsageError("--mqtt-password-file needs --mqtt-username")
    password = None
    if args.mqtt_password_file is not None:
        password = read_password(args.mqtt_password_file)
    return MqttSettings(
        host=args.mqtt_host,
        port=args.mqtt_port,
        topic=topic,
        username=args.mqtt_username,
        password=password,
        cafile=args.mqtt_cafile,
    )


def read_password(path: Path) -> str:
    """Return the first line of `path`. Raises `UsageError` when it is unsafe or unreadable."""
    try:
        with open(path, "rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            data = handle.read(MAX_PASSWORD_BYTES + 1)
    except OSError as error:
        raise UsageError(f"cannot read --mqtt-password-file {path}: {error.strerror}") from None
    if mode & (stat.S_IROTH | stat.S_IWOTH):
        raise UsageError(
            f"--mqtt-password-file {path} is readable or writable by others",
            fix=f"chmod 600 {path}",
        )
    if len(data) > MAX_PASSWORD_BYTES:
        raise UsageError(f"--mqtt-password-file {path} is over {MAX_PASSWORD_BYTES} bytes")
    password = data.decode("utf-8", errors="replace").splitlines()[0] if data else ""
    if not password:
        raise UsageError(f"--mqtt-password-file {path} is empty", fix="write the password in it")
    return password
