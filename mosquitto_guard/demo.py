"""The verified-launch demonstration behind `mosquitto-guard demo`.

It needs no existing set-up: everything lives in a fresh directory under /var/lib (a root-owned
path, as the launcher's ownership checks require), which is removed at the end. Each step runs
the real command a user would type, prints it, and shows its output.

1. Generate an Ed25519 signing key and write a trust policy that trusts it.
2. Sign the distribution's own dynamic-security plugin.
3. Start the real broker through `mosquitto-guard run` on a free 127.0.0.1 port.
4. Create an MQTT user with `mosquitto_ctrl` through the plugin, then publish and receive a
   message as that user.
5. Stop the broker.
6. Show that a tampered copy of the plugin and an unsigned plugin are both rejected.
"""

from __future__ import annotations

import grp
import os
import pwd
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from mosquitto_guard.errors import HostError

DYNSEC_PLUGIN_NAMES = ("mosquitto_dynamic_security.so",)
PLUGIN_SEARCH_DIRS = (
    Path("/usr/lib/x86_64-linux-gnu"),
    Path("/usr/lib/aarch64-linux-gnu"),
    Path("/usr/lib"),
    Path("/usr/local/lib"),
)
BROKER_START_TIMEOUT = 15.0


def find_dynsec_plugin() -> Path:
    """Return the path of the dynamic-security plugin that the broker package installed."""
    for directory in PLUGIN_SEARCH_DIRS:
        candidate = directory / DYNSEC_PLUGIN_NAMES[0]
        if candidate.is_file():
            return candidate
    raise HostError(
        "mosquitto_dynamic_security.so not found in " + ", ".join(map(str, PLUGIN_SEARCH_DIRS)),
        fix="apt-get install mosquitto",
    )


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait until 127.0.0.1:`port` accepts connections; False if `process` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


class Demo:
    """One run of the demonstration, printing each step to `out`."""

    def __init__(self, work: Path, out: Callable[[str], None]) -> None:
        self.work = work
        self.out = out
        self.guard = [sys.executable, "-m", "mosquitto_guard"]
        self.plugin = find_dynsec_plugin()
        self.port = free_port()
        self.admin_password = secrets.token_urlsafe(16)
        self.user_password = secrets.token_urlsafe(16)

    # Helpers -----------------------------------------------------------------------------

    def step(self, number: int, title: str) -> None:
        self.out(f"\n== Step {number}: {title}")

    def command(
        self,
        argv: Sequence[str],
        *,
        shown: str | None = None,
        check: bool = True,
        quiet: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """Run `argv`, print it and its output (only on failure if `quiet`), return the result."""
        self.out(f"$ {shown or shlex.join(argv)}")
        result = subprocess.run(list(argv), capture_output=True, text=True, timeout=60, check=False)
        if not quiet or result.returncode != 0:
            for line in (result.stdout + result.stderr).splitlines():
                self.out(f"  {line}")
        if check and result.returncode != 0:
            raise HostError(
                f"demo step failed: {shown or shlex.join(argv)} exited with {result.returncode}"
            )
        return result

    def guard_command(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.command(
            [*self.guard, *args], shown=shlex.join(["mosquitto-guard", *args]), check=check
        )

    def write(self, path: Path, text: str, show: bool = True) -> None:
        path.write_text(text)
        if show:
            self.out(f"wrote {path}:")
            for line in text.splitlines():
                self.out(f"  | {line}")

    # Steps -------------------------------------------------------------------------------

    def run(self) -> None:
        policy = self.make_key_and_policy()
        self.sign_plugin()
        config = self.write_broker_config(self.plugin, "mosquitto.conf")
        broker = self.start_broker(policy, config)
        try:
            self.exchange_message()
        finally:
            self.stop_broker(broker)
        self.show_rejections(policy)
        self.out("\nDemo finished: only the signed plugin was loaded.")

    def make_key_and_policy(self) -> Path:
        self.step(1, "generate a signing key and a trust policy")
        for name in ("keys", "manifests", "state", "plugins", "broker"):
            (self.work / name).mkdir(mode=0o755)
        self.guard_command(
            "keygen",
            "--type",
            "ssh",
            "--no-passphrase",
            "--comment",
            "mosquitto-guard demo",
            str(self.work / "keys" / "demo"),
        )
        policy = self.work / "policy.toml"
        self.write(
            policy,
            f"""format_version = 1
threshold = 1
plugin_dirs = ["{self.plugin.parent}", "{self.work / "plugins"}"]
manifest_dir = "{self.work / "manifests"}"
state_dir = "{self.work / "state"}"

[[keys]]
name = "demo"
file = "{self.work / "keys" / "demo.pub"}"
""",
        )
        return policy

    def sign_plugin(self) -> None:
        self.step(2, f"sign the distribution's plugin {self.plugin}")
        self.guard_command(
            "sign",
            str(self.plugin),
            "--key",
            str(self.work / "keys" / "demo"),
            "--name",
            "dynamic-security",
            "--version",
            "1",
            "--write-option",
            "config_file",
            "--mosquitto",
            ">=2.0",
            "--manifest-dir",
            str(self.work / "manifests"),
        )

    def write_broker_config(self, plugin: Path, name: str) -> Path:
        # The plugin rewrites its file through a new file and a rename, so it gets a directory
        # of its own: the sandbox lets it write there and nowhere near the config.
        dynsec_dir = self.work / "dynsec"
        dynsec = dynsec_dir / "dynamic-security.json"
        if not dynsec.exists():
            dynsec_dir.mkdir(mode=0o700, exist_ok=True)
            self.command(
                ["mosquitto_ctrl", "dynsec", "init", str(dynsec), "admin", self.admin_password],
                shown=f"mosquitto_ctrl dynsec init {dynsec} admin '<password>'",
                quiet=True,
            )
            _give_to_broker_user(dynsec_dir, dynsec)
        config = self.work / "broker" / name
        self.write(
            config,
            f"""listener {self.port} 127.0.0.1
plugin {plugin}
plugin_opt_config_file {dynsec}
persistence false
log_dest stderr
""",
            show=name == "mosquitto.conf",
        )
        return config

    def start_broker(self, policy: Path, config: Path) -> subprocess.Popen[bytes]:
        self.step(3, f"start the broker through mosquitto-guard on 127.0.0.1:{self.port}")
        argv = [*self.guard, "run", "--policy", str(policy), "--", "-c", str(config)]
        self.out(f"$ mosquitto-guard run --policy {policy} -- -c {config} &")
        broker = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if not wait_for_port(self.port, broker, BROKER_START_TIMEOUT):
            _, stderr = _stop(broker)
            raise HostError("the broker did not start: " + stderr.decode(errors="replace").strip())
        exe = os.readlink(f"/proc/{broker.pid}/exe")
        self.out(f"  broker listening; process {broker.pid} is now {exe} (no Python left)")
        return broker

    def exchange_message(self) -> None:
        self.step(4, "create an MQTT user through the plugin, then publish and receive")
        connect = [
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-u",
            "admin",
            "-P",
            self.admin_password,
        ]
        shown_connect = f"-h 127.0.0.1 -p {self.port} -u admin -P '<password>'"
        for action in (
            ["createClient", "demo", "-p", self.user_password],
            ["createRole", "demo-role"],
            ["addRoleACL", "demo-role", "publishClientSend", "demo/#", "allow"],
            ["addRoleACL", "demo-role", "subscribePattern", "demo/#", "allow"],
            ["addRoleACL", "demo-role", "publishClientReceive", "demo/#", "allow"],
            ["addClientRole", "demo", "demo-role"],
        ):
            shown_action = " ".join(
                "'<password>'" if word == self.user_password else word for word in action
            )
            self.command(
                ["mosquitto_ctrl", *connect, "dynsec", *action],
                shown=f"mosquitto_ctrl {shown_connect} dynsec {shown_action}",
                quiet=True,
            )
        received = publish_and_receive(self.port, "demo", self.user_password)
        self.out(f"  subscriber received {received!r} on demo/hello")

    def stop_broker(self, broker: subprocess.Popen[bytes]) -> None:
        self.step(5, "stop the broker, and look at its sandbox and the plugin's saved file")
        code, stderr = _stop(broker)
        self.out(f"  broker exited with status {code}")
        for line in stderr.decode(errors="replace").splitlines():
            if line.startswith("mosquitto-guard: sandbox:"):
                self.out(f"  {line}")
        dynsec = self.work / "dynsec" / "dynamic-security.json"
        saved = '"username":\t"demo"' in dynsec.read_text()
        if not saved:
            raise HostError(f"the plugin did not save the new client in {dynsec}")
        self.out(f"  the plugin saved client 'demo' in {dynsec}, the one directory it may write")

    def show_rejections(self, policy: Path) -> None:
        self.step(6, "a tampered copy and an unsigned plugin are rejected")
        tampered = self.work / "plugins" / self.plugin.name
        data = bytearray(self.plugin.read_bytes())
        data[len(data) // 2] ^= 0xFF
        tampered.write_bytes(bytes(data))
        self.out(f"tampered copy: {tampered} (one byte flipped)")
        self._expect_rejection(policy, self.write_broker_config(tampered, "tampered.conf"))
        unsigned = self.work / "plugins" / "unsigned_auth.so"
        shutil.copyfile(self.plugin, unsigned)
        with unsigned.open("ab") as handle:
            handle.write(b"\0unsigned")
        self.out(f"unsigned plugin: {unsigned} (no manifest signed for it)")
        self._expect_rejection(policy, self.write_broker_config(unsigned, "unsigned.conf"))

    def _expect_rejection(self, policy: Path, config: Path) -> None:
        result = self.guard_command(
            "run", "--policy", str(policy), "--", "-c", str(config), check=False
        )
        if result.returncode == 0:
            raise HostError(f"the broker started with {config}, which should have been rejected")
        self.out(f"  -> rejected with exit status {result.returncode}; the broker never started")


def publish_and_receive(port: int, username: str, password: str) -> str:
    """Subscribe to demo/hello, publish one message, and return the payload received."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    received: list[str] = []
    ready = threading.Event()
    done = threading.Event()

    def on_connect(
        client: mqtt.Client, userdata: object, flags: object, reason: object, properties: object
    ) -> None:
        client.subscribe("demo/hello", qos=1)

    def on_subscribe(client: mqtt.Client, *args: object) -> None:
        ready.set()

    def on_message(client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        received.append(message.payload.decode())
        done.set()

    subscriber = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="demo-subscriber")
    subscriber.username_pw_set(username, password)
    subscriber.on_connect = on_connect
    subscriber.on_subscribe = on_subscribe
    subscriber.on_message = on_message
    subscriber.connect("127.0.0.1", port)
    subscriber.loop_start()
    try:
        if not ready.wait(10):
            raise HostError("the demo subscriber could not subscribe")
        publisher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="demo-publisher")
        publisher.username_pw_set(username, password)
        publisher.connect("127.0.0.1", port)
        publisher.loop_start()
        publisher.publish("demo/hello", "hello through a verified broker", qos=1).wait_for_publish(
            10
        )
        publisher.loop_stop()
        publisher.disconnect()
        if not done.wait(10):
            raise HostError("the demo message was not received")
    finally:
        subscriber.loop_stop()
        subscriber.disconnect()
    return received[0]


def _give_to_broker_user(directory: Path, dynsec: Path) -> None:
    # The broker drops to the mosquitto user before the plugin reads and rewrites its file.
    try:
        user = pwd.getpwnam("mosquitto")
        group = grp.getgrgid(user.pw_gid)
    except KeyError:
        return
    os.chown(directory, user.pw_uid, group.gr_gid)
    os.chown(dynsec, user.pw_uid, group.gr_gid)
    os.chmod(dynsec, 0o600)


def _stop(process: subprocess.Popen[bytes]) -> tuple[int, bytes]:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        _, stderr = process.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate(timeout=10)
    return process.returncode, stderr or b""


def run_demo(out: Callable[[str], None]) -> None:
    """Run the whole demonstration in a throwaway directory, removing it afterwards.

    Raises `HostError` when not run as root or when a step fails.
    """
    if os.geteuid() != 0:
        raise HostError(
            "the demo must run as root, as the broker service does",
            fix="run: sudo mosquitto-guard demo",
        )
    work = Path(tempfile.mkdtemp(prefix="mosquitto-guard-demo-", dir="/var/lib"))
    os.chmod(work, 0o755)  # noqa: S103 (the broker's user must reach the files inside)
    out(f"Working directory: {work}")
    try:
        Demo(work, out).run()
    finally:
        shutil.rmtree(work, ignore_errors=True)
        out(f"Removed {work}")
