"""`mosquitto-guard watch` events in syslog and on MQTT, received by real endpoints.

Syslog is a UNIX datagram socket that the test binds. MQTT is a real Mosquitto broker on
127.0.0.1, separate from the watched config, read by a paho subscriber.
"""

from __future__ import annotations

import ipaddress
import json
import os
import pwd
import queue
import re
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from baseline_setup import Setup
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion
from support import MOSQUITTO, free_port, stop_process, wait_for_port
from watch_support import (
    GUARD,
    WAIT_SECONDS,
    Event,
    Watch,
    is_alert,
    is_event,
    start_watch,
    watch_argv,
)

from mosquitto_guard.cli import main

TOPIC = "guard/alerts"
MQTT_USER = "guard"
MQTT_PASSWORD = "correct horse battery staple"
# Syslog priority = facility * 8 + severity; the facility is authpriv (10).
INFO, WARNING, ERR = 86, 84, 83
SYSLOG_LINE = re.compile(
    r"^<(?P<priority>\d+)>\w{3} [ \d]\d \d\d:\d\d:\d\d mosquitto-guard\[(?P<pid>\d+)\]: "
    r"(?P<json>\{.*\})$"
)


# Syslog.


class SyslogServer:
    """A bound UNIX datagram socket that collects what watch sends to it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(str(path))
        self.socket.settimeout(WAIT_SECONDS)

    def receive_until(self, name: str) -> list[tuple[int, int, Event]]:
        """Return (priority, pid, event) of each datagram up to the first event `name`."""
        received: list[tuple[int, int, Event]] = []
        while True:
            data = self.socket.recv(65536).decode()
            match = SYSLOG_LINE.match(data)
            assert match is not None, data
            event = json.loads(match["json"])
            received.append((int(match["priority"]), int(match["pid"]), event))
            if event["event"] == name:
                return received


@pytest.fixture
def syslog(setup: Setup) -> Iterator[SyslogServer]:
    server = SyslogServer(setup.root / "log.sock")
    yield server
    server.socket.close()


def test_watch_sends_events_to_syslog(
    setup: Setup, watches: list[Watch], syslog: SyslogServer
) -> None:
    watch = start_watch(setup, watches, "--syslog-socket", str(syslog.path))
    passwd = setup.root / "passwd"
    os.chmod(passwd, 0o600)
    alert = watch.wait_for(is_alert("changed", passwd))
    assert watch.stop() == 0
    received = syslog.receive_until("watch_stopped")
    by_name = {event["event"]: (priority, pid, event) for priority, pid, event in received}
    assert by_name["watch_started"][0] == INFO
    assert by_name["integrity_alert"][0] == WARNING
    assert by_name["watch_stopped"][0] == INFO
    assert {pid for _, pid, _ in received} == {watch.process.pid}
    # The same JSON text as on stderr.
    assert by_name["integrity_alert"][2] == alert


def test_watch_syslogs_errors_as_err(
    setup: Setup, watches: list[Watch], syslog: SyslogServer
) -> None:
    closed_port = str(free_port())
    watch = start_watch(
        setup,
        watches,
        "--syslog-socket",
        str(syslog.path),
        "--mqtt-host",
        "127.0.0.1",
        "--mqtt-port",
        closed_port,
    )
    error = watch.wait_for(is_event("error"))
    assert f"cannot connect to MQTT broker 127.0.0.1:{closed_port}" in error["message"]
    received = syslog.receive_until("error")
    assert received[-1][0] == ERR
    assert received[-1][2] == error


def test_watch_runs_without_syslog_socket(setup: Setup, watches: list[Watch]) -> None:
    missing = setup.root / "no-such.sock"
    watch = start_watch(setup, watches, "--syslog-socket", str(missing))
    passwd = setup.root / "passwd"
    os.chmod(passwd, 0o600)
    watch.wait_for(is_alert("changed", passwd))
    assert watch.stop() == 0
    errors = [event for event in watch.events if event["event"] == "error"]
    assert len(errors) == 1
    assert f"cannot connect to syslog socket {missing}" in errors[0]["message"]
    assert [event["event"] for event in watch.events][-1] == "watch_stopped"


# MQTT.


@pytest.fixture
def broker(setup: Setup) -> Iterator[Broker]:
    server = Broker(setup.root / "alert-broker")
    yield server
    server.stop()


@dataclass(frozen=True)
class Tls:
    """A CA, and a certificate for 127.0.0.1 that it signed, with the certificate's key."""

    ca: Path
    certificate: Path
    key: Path


def make_tls(directory: Path, name: str) -> Tls:
    """Write a new CA and a server certificate for IP address 127.0.0.1 into `directory`."""
    now = datetime.now(UTC)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )

    tls = Tls(directory / f"{name}-ca.pem", directory / f"{name}.pem", directory / f"{name}.key")
    tls.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    tls.certificate.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    tls.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return tls


class Broker:
    """A Mosquitto broker on 127.0.0.1 that requires a password, for the alerts only."""

    def __init__(self, directory: Path, tls: Tls | None = None) -> None:
        directory.mkdir(mode=0o755, exist_ok=True)
        user = pwd.getpwnam("mosquitto")
        os.chown(directory, user.pw_uid, user.pw_gid)
        self.port = free_port()
        self.config = directory / "broker.conf"
        passwords = directory / "passwd"
        subprocess.run(
            ["mosquitto_passwd", "-c", "-b", str(passwords), MQTT_USER, MQTT_PASSWORD],
            check=True,
            capture_output=True,
        )
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous false",
            f"password_file {passwords}",
            "persistence true",
            f"persistence_location {directory}/",
            "log_dest none",
        ]
        if tls is not None:
            lines += [f"cafile {tls.ca}", f"certfile {tls.certificate}", f"keyfile {tls.key}"]
            os.chown(tls.key, user.pw_uid, user.pw_gid)
        for private in (passwords, *([tls.key] if tls else [])):
            os.chown(private, user.pw_uid, user.pw_gid)
            os.chmod(private, 0o600)
        self.config.write_text("\n".join(lines) + "\n")
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert wait_for_port(self.port, self.process), self.process.communicate()[1].decode()

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None


class Subscriber:
    """A paho client subscribed to TOPIC with QoS 1, with a session that outlives it."""

    def __init__(self, port: int, cafile: Path | None = None) -> None:
        self.port = port
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="alert-reader", clean_session=False
        )
        self.client.username_pw_set(MQTT_USER, MQTT_PASSWORD)
        if cafile is not None:
            self.client.tls_set(ca_certs=str(cafile))
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    def connect(self) -> None:
        self._subscribed.clear()
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        assert self._subscribed.wait(WAIT_SECONDS), "no SUBACK from the alert broker"

    def disconnect(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def next_event(self) -> tuple[int, Event]:
        """Return the QoS and the JSON event of the next message."""
        message = self.messages.get(timeout=WAIT_SECONDS)
        return message.qos, json.loads(message.payload)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        client.subscribe(TOPIC, qos=1)

    def _on_subscribe(self, client: Any, userdata: Any, mid: Any, reasons: Any, props: Any) -> None:
        self._subscribed.set()

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self.messages.put(message)


@pytest.fixture
def subscriber(broker: Broker) -> Iterator[Subscriber]:
    reader = Subscriber(broker.port)
    reader.connect()
    yield reader
    reader.disconnect()


def mqtt_options(setup: Setup, broker: Broker) -> list[str]:
    password_file = setup.root / "mqtt-password"
    password_file.write_text(MQTT_PASSWORD + "\n")
    os.chmod(password_file, 0o600)
    return [
        "--mqtt-host",
        "127.0.0.1",
        "--mqtt-port",
        str(broker.port),
        "--mqtt-topic",
        TOPIC,
        "--mqtt-username",
        MQTT_USER,
        "--mqtt-password-file",
        str(password_file),
    ]


def test_watch_publishes_alert_over_mqtt(
    setup: Setup, watches: list[Watch], broker: Broker, subscriber: Subscriber
) -> None:
    watch = start_watch(setup, watches, *mqtt_options(setup, broker))
    acl = setup.root / "acl"
    acl.write_text("topic read #\n")
    alert = watch.wait_for(is_alert("changed", acl))
    qos, published = subscriber.next_event()
    assert qos == 1
    assert published == alert
    assert watch.stop() == 0
    # Only alerts are published: not watch_started, not watch_stopped.
    assert subscriber.messages.empty()
    assert not [event for event in watch.events if event["event"] == "error"]


def test_watch_publishes_invalid_baseline(
    setup: Setup, broker: Broker, subscriber: Subscriber
) -> None:
    assert setup.write_baseline() == 0
    setup.baseline.with_name("baseline.json.sig").unlink()
    done = subprocess.run(
        watch_argv(setup, *mqtt_options(setup, broker)),
        capture_output=True,
        text=True,
        timeout=WAIT_SECONDS * 3,
    )
    assert done.returncode == 8
    qos, published = subscriber.next_event()
    assert qos == 1
    assert published["event"] == "baseline_invalid"
    assert "no signature found" in published["message"]
    assert MQTT_PASSWORD not in done.stderr


def test_watch_keeps_alerts_for_broker(
    setup: Setup, watches: list[Watch], broker: Broker, subscriber: Subscriber
) -> None:
    subscriber.disconnect()
    broker.stop()
    watch = start_watch(setup, watches, *mqtt_options(setup, broker))
    watch.wait_for(is_event("error"))
    acl = setup.root / "acl"
    acl.write_text("topic read #\n")
    alert = watch.wait_for(is_alert("changed", acl))
    broker.start()
    watch.wait_for(is_event("mqtt_connected"))
    subscriber.connect()
    qos, published = subscriber.next_event()
    assert qos == 1
    assert published == alert


def test_watch_survives_mqtt_down(setup: Setup, watches: list[Watch]) -> None:
    watch = start_watch(setup, watches, "--mqtt-host", "127.0.0.1", "--mqtt-port", str(free_port()))
    watch.wait_for(is_event("error"))
    passwd = setup.root / "passwd"
    os.chmod(passwd, 0o600)
    watch.wait_for(is_alert("changed", passwd))
    assert watch.process.poll() is None
    assert watch.stop(signal.SIGTERM) == 0
    assert watch.wait_for(is_event("watch_stopped"))["signal"] == "SIGTERM"


def test_watch_publishes_over_tls(setup: Setup, watches: list[Watch]) -> None:
    directory = setup.root / "alert-broker"
    directory.mkdir(mode=0o755)
    tls = make_tls(directory, "alerts")
    server = Broker(directory, tls)
    try:
        reader = Subscriber(server.port, tls.ca)
        reader.connect()
        options = [*mqtt_options(setup, server), "--mqtt-cafile", str(tls.ca)]
        watch = start_watch(setup, watches, *options)
        acl = setup.root / "acl"
        acl.write_text("topic read #\n")
        alert = watch.wait_for(is_alert("changed", acl))
        qos, published = reader.next_event()
        reader.disconnect()
        assert watch.stop() == 0
    finally:
        server.stop()
    assert qos == 1
    assert published == alert
    assert not [event for event in watch.events if event["event"] == "error"]


def test_watch_rejects_untrusted_broker_certificate(setup: Setup, watches: list[Watch]) -> None:
    directory = setup.root / "alert-broker"
    directory.mkdir(mode=0o755)
    tls = make_tls(directory, "alerts")
    other = make_tls(directory, "other")
    server = Broker(directory, tls)
    try:
        options = [*mqtt_options(setup, server), "--mqtt-cafile", str(other.ca)]
        watch = start_watch(setup, watches, *options)
        error = watch.wait_for(is_event("error"))
    finally:
        server.stop()
    assert f"cannot connect to MQTT broker 127.0.0.1:{server.port}" in error["message"]
    assert [event for event in watch.events if event["event"] == "mqtt_connected"] == []


def test_watch_rejects_missing_cafile(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    assert setup.write_baseline() == 0
    missing = setup.root / "no-such-ca.pem"
    capsys.readouterr()
    code = main(
        [
            *watch_argv(setup, "--mqtt-host", "127.0.0.1", "--mqtt-cafile", str(missing)),
        ][len(GUARD) :]
    )
    events = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert code == 16
    assert f"cannot use --mqtt-cafile {missing}" in events[-1]["message"]
