"""Alerts of `watch` published to an MQTT broker, with QoS 1, from a background thread.

`send` only puts the alert in a bounded queue, so a broker that is slow or unreachable never
delays the watching. paho-mqtt's own thread connects, reconnects, and keeps QoS 1 messages until
the broker acknowledges them (PUBACK). Connection failures are logged through the event log.
"""

from __future__ import annotations

import os
import queue
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mosquitto_guard.integrity.alerts import ALERT_EVENTS, ERROR_EVENT, Event, Reporter

# Alerts waiting for the MQTT thread. More are dropped and counted, not queued without limit.
MQTT_QUEUE_SIZE = 1000
MQTT_CONNECT_TIMEOUT = 3.0
MQTT_KEEPALIVE = 60


@dataclass(frozen=True)
class MqttSettings:
    """The MQTT broker and topic that alerts go to, a broker other than the one watched."""

    host: str
    port: int
    topic: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    cafile: Path | None = None


class MqttSink:
    """Alerts published with QoS 1 by paho-mqtt, whose own thread connects and reconnects.

    `send` only queues the alert. A publisher thread hands it to paho, which keeps QoS 1
    messages until the broker acknowledges them (PUBACK), across reconnects too.
    """

    def __init__(self, settings: MqttSettings, report: Reporter) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

        self.settings = settings
        self._report = report
        self._queue: queue.Queue[str | None] = queue.Queue(maxsize=MQTT_QUEUE_SIZE)
        self._dropped = 0
        self._rejected = 0
        # Message ids handed to paho and not acknowledged yet.
        self._unacknowledged: set[int] = set()
        self._acknowledged = threading.Condition()
        self._failures = 0
        client_id = f"mosquitto-guard-watch-{socket.gethostname()}-{os.getpid()}"
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self._client.connect_timeout = MQTT_CONNECT_TIMEOUT
        self._client.max_queued_messages_set(MQTT_QUEUE_SIZE)
        self._client.reconnect_delay_set(min_delay=1, max_delay=60)
        if settings.username is not None:
            self._client.username_pw_set(settings.username, settings.password)
        if settings.cafile is not None:
            self._client.tls_set(ca_certs=str(settings.cafile), cert_reqs=ssl.CERT_REQUIRED)
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        # NO_CONN: paho keeps the message and sends it once connected.
        self._accepted = (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN)
        self._publisher = threading.Thread(
            target=self._publish_loop, name="mqtt-publisher", daemon=True
        )

    def start(self) -> None:
        """Start connecting in the background. Connection failures are logged as events."""
        self._client.connect_async(self.settings.host, self.settings.port, MQTT_KEEPALIVE)
        self._client.loop_start()
        self._publisher.start()

    def send(self, event: Event, line: str) -> None:
        if event.get("event") not in ALERT_EVENTS:
            return
        try:
            self._queue.put_nowait(line)
        except queue.Full:
            self._dropped += 1
            if self._dropped == 1:
                self._report(
                    ERROR_EVENT,
                    f"{MQTT_QUEUE_SIZE} alerts wait for {self._endpoint()}; further alerts are "
                    "not published",
                )

    def close(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        self._queue.put(None)
        self._publisher.join(timeout)
        with self._acknowledged:
            while self._unacknowledged and time.monotonic() < deadline:
                self._acknowledged.wait(deadline - time.monotonic())
            unsent = len(self._unacknowledged)
        if unsent:
            self._report(
                ERROR_EVENT, f"{unsent} alert(s) not acknowledged by {self._endpoint()} at exit"
            )
        self._client.disconnect()
        self._client.loop_stop()

    def _publish_loop(self) -> None:
        from paho.mqtt.client import error_string

        while True:
            line = self._queue.get()
            if line is None:
                return
            # The lock is held across publish, so on_publish cannot run before the id is added.
            with self._acknowledged:
                info = self._client.publish(self.settings.topic, line.encode(), qos=1)
                if info.rc in self._accepted:
                    self._unacknowledged.add(info.mid)
                    self._rejected = 0
                    continue
            # Only the first rejection in a row is logged, because paho rejects every alert
            # while its queue is full.
            self._rejected += 1
            if self._rejected == 1:
                self._report(
                    ERROR_EVENT,
                    f"cannot publish to {self.settings.topic!r}: {error_string(info.rc)}; "
                    "alerts are dropped while its queue is full",
                )

    def _endpoint(self) -> str:
        return f"MQTT broker {self.settings.host}:{self.settings.port}"

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        with self._acknowledged:
            self._unacknowledged.discard(mid)
            self._acknowledged.notify_all()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self._connect_failed(f"{self._endpoint()} rejected the connection: {reason}")
            return
        if self._failures:
            self._report(
                "mqtt_connected",
                f"connected to {self._endpoint()} after {self._failures} failed attempt(s)",
            )
        self._failures = 0

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        self._connect_failed(f"cannot connect to {self._endpoint()}")

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if reason.is_failure and self._failures == 0:
            self._report(
                ERROR_EVENT, f"lost the connection to {self._endpoint()}: {reason}; reconnecting"
            )

    def _connect_failed(self, message: str) -> None:
        self._failures += 1
        # Only the first failure in a row is logged, because paho retries until it connects.
        if self._failures == 1:
            self._report(
                ERROR_EVENT, f"{message}; retrying in the background, alerts are kept until then"
            )
