"""Network rules on real config files read through the real reader."""

from __future__ import annotations

from pathlib import Path

from mosquitto_guard.audit.context import AuditContext, AuditOptions
from mosquitto_guard.audit.model import Finding, Rule
from mosquitto_guard.audit.rules import network

TLS = "cafile /etc/mosquitto/ca.pem\ncertfile /etc/mosquitto/c.pem\nkeyfile /etc/mosquitto/k.pem\n"
BRIDGE = "connection upstream\naddress broker.example.com:8883\n"


def check(
    rule: Rule, tmp_path: Path, text: str, package_version: str | None = None
) -> tuple[Path, list[Finding]]:
    config = tmp_path / "mosquitto.conf"
    config.write_text(text)
    options = AuditOptions(config_paths=[config], host=False, package_version=package_version)
    return config, list(rule.check(AuditContext(options)))


def places(findings: list[Finding]) -> list[tuple[str, str | None, int | None]]:
    return [(f.rule, f.path, f.line) for f in findings]


# NET-001


def test_listener_without_address_reported(tmp_path: Path) -> None:
    config, findings = check(network.ALL_INTERFACES, tmp_path, "listener 1883\n")
    assert places(findings) == [("NET-001", str(config), 1)]
    assert findings[0].evidence.startswith("listener 1883 on all interfaces has no bind address")


def test_listener_with_address_passes(tmp_path: Path) -> None:
    text = "listener 1883 127.0.0.1\nlistener 1884 192.0.2.1\n"
    _, findings = check(network.ALL_INTERFACES, tmp_path, text)
    assert findings == []


def test_listener_bound_to_interface_passes(tmp_path: Path) -> None:
    _, findings = check(network.ALL_INTERFACES, tmp_path, "listener 1883\nbind_interface eth0\n")
    assert findings == []


def test_default_listener_port_reported(tmp_path: Path) -> None:
    config, findings = check(network.ALL_INTERFACES, tmp_path, "port 1883\n")
    assert places(findings) == [("NET-001", str(config), 1)]
    assert findings[0].evidence.startswith("the default listener on port 1883")


# NET-002


def test_network_listener_without_tls_reported(tmp_path: Path) -> None:
    config, findings = check(network.NO_TLS, tmp_path, "listener 1883 0.0.0.0\n")
    assert places(findings) == [("NET-002", str(config), 1)]
    assert "neither certfile nor psk_hint" in findings[0].evidence


def test_network_listener_with_tls_passes(tmp_path: Path) -> None:
    _, findings = check(network.NO_TLS, tmp_path, "listener 8883 0.0.0.0\n" + TLS)
    assert findings == []


def test_loopback_and_socket_listeners_pass(tmp_path: Path) -> None:
    text = "listener 1883 127.0.0.1\nlistener 1884 ::1\nlistener 0 /run/mosquitto/sock\n"
    _, findings = check(network.NO_TLS, tmp_path, text)
    assert findings == []


# NET-003


def test_global_anonymous_on_network_reported(tmp_path: Path) -> None:
    text = "listener 1883 127.0.0.1\nlistener 8883 0.0.0.0\n" + TLS + "allow_anonymous true\n"
    config, findings = check(network.ANONYMOUS, tmp_path, text)
    assert places(findings) == [("NET-003", str(config), 6)]
    assert "listener 8883 on 0.0.0.0" in findings[0].evidence
    assert "listener 1883" not in findings[0].evidence


def test_global_anonymous_on_loopback_passes(tmp_path: Path) -> None:
    text = "listener 1883 127.0.0.1\nallow_anonymous true\n"
    _, findings = check(network.ANONYMOUS, tmp_path, text)
    assert findings == []


def test_per_listener_anonymous_reported_on_its_listener(tmp_path: Path) -> None:
    text = (
        "per_listener_settings true\n"
        "listener 1883 127.0.0.1\n"
        "allow_anonymous true\n"
        "listener 8883 0.0.0.0\n"
        "allow_anonymous true\n"
    )
    config, findings = check(network.ANONYMOUS, tmp_path, text)
    assert places(findings) == [("NET-003", str(config), 5)]


def test_per_listener_anonymous_on_loopback_passes(tmp_path: Path) -> None:
    text = (
        "per_listener_settings true\n"
        "listener 1883 127.0.0.1\n"
        "allow_anonymous true\n"
        "listener 8883 0.0.0.0\n"
        "allow_anonymous false\n"
    )
    _, findings = check(network.ANONYMOUS, tmp_path, text)
    assert findings == []


# NET-004


def test_local_only_deny_reported(tmp_path: Path) -> None:
    text = "allow_anonymous false\npassword_file /etc/mosquitto/passwd\n"
    config, findings = check(network.LOCAL_ONLY, tmp_path, text)
    assert places(findings) == [("NET-004", str(config), 1)]
    assert "Mosquitto 2.0.11 (before 2.0.21)" in findings[0].evidence
    assert "Debian" not in findings[0].evidence


def test_local_only_deny_names_package(tmp_path: Path) -> None:
    text = "allow_anonymous false\n"
    _, findings = check(network.LOCAL_ONLY, tmp_path, text, package_version="2.0.11-1.2+deb12u2")
    assert len(findings) == 1
    assert "the Debian package 2.0.11-1.2+deb12u2 may carry a backported fix" in (
        findings[0].evidence
    )


def test_deny_with_listener_passes(tmp_path: Path) -> None:
    text = "listener 1883 127.0.0.1\nallow_anonymous false\n"
    _, findings = check(network.LOCAL_ONLY, tmp_path, text)
    assert findings == []


# NET-005


def test_hidden_listener_from_included_file_reported(tmp_path: Path) -> None:
    included = tmp_path / "conf.d"
    included.mkdir()
    (included / "auth.conf").write_text("password_file /etc/mosquitto/passwd\n")
    text = f"per_listener_settings true\nlistener 1883 127.0.0.1\ninclude_dir {included}\n"
    _, findings = check(network.HIDDEN, tmp_path, text)
    assert places(findings) == [("NET-005", str(included / "auth.conf"), 1)]
    assert "0.0.0.0:1883" in findings[0].evidence
    assert "per_listener_settings true" in findings[0].evidence


def test_security_after_listener_in_included_file_passes(tmp_path: Path) -> None:
    included = tmp_path / "conf.d"
    included.mkdir()
    (included / "auth.conf").write_text(
        "listener 1884 127.0.0.1\npassword_file /etc/mosquitto/passwd\n"
    )
    text = f"per_listener_settings true\nlistener 1883 127.0.0.1\ninclude_dir {included}\n"
    _, findings = check(network.HIDDEN, tmp_path, text)
    assert findings == []


def test_anonymous_alone_opens_no_listener(tmp_path: Path) -> None:
    text = "per_listener_settings true\nallow_anonymous false\nlistener 1883 127.0.0.1\n"
    _, findings = check(network.HIDDEN, tmp_path, text)
    assert findings == []


# NET-006


def test_identity_without_certificate_reported(tmp_path: Path) -> None:
    text = "listener 8883 0.0.0.0\n" + TLS + "use_identity_as_username true\n"
    config, findings = check(network.IDENTITY, tmp_path, text)
    assert places(findings) == [("NET-006", str(config), 5)]


def test_identity_with_certificate_passes(tmp_path: Path) -> None:
    text = (
        "listener 8883 0.0.0.0\n"
        + TLS
        + "require_certificate true\nuse_identity_as_username true\n"
    )
    _, findings = check(network.IDENTITY, tmp_path, text)
    assert findings == []


# NET-007


def test_tls_1_1_reported(tmp_path: Path) -> None:
    text = "listener 8883 0.0.0.0\n" + TLS + "tls_version tlsv1.1\n"
    config, findings = check(network.WEAK_TLS, tmp_path, text)
    assert places(findings) == [("NET-007", str(config), 5)]
    assert findings[0].evidence.startswith("'tls_version tlsv1.1'")


def test_tls_1_2_passes(tmp_path: Path) -> None:
    text = "listener 8883 0.0.0.0\n" + TLS + "tls_version tlsv1.2\n"
    _, findings = check(network.WEAK_TLS, tmp_path, text)
    assert findings == []


# NET-008 to NET-011: bridges


def test_bridge_destination_reported(tmp_path: Path) -> None:
    text = "listener 1883 127.0.0.1\n" + BRIDGE + "topic sensors/temp out 1\n"
    config, findings = check(network.BRIDGE, tmp_path, text)
    assert places(findings) == [("NET-008", str(config), 3)]
    assert findings[0].evidence.startswith("bridge 'upstream' connects to broker.example.com:8883")


def test_bridge_default_port_shown(tmp_path: Path) -> None:
    text = "connection up\naddress 192.0.2.7\ntopic a out\n"
    _, findings = check(network.BRIDGE, tmp_path, text)
    assert "connects to 192.0.2.7:1883," in findings[0].evidence


def test_no_bridge_passes(tmp_path: Path) -> None:
    _, findings = check(network.BRIDGE, tmp_path, "listener 1883 127.0.0.1\n")
    assert findings == []


def test_bridge_without_tls_reported(tmp_path: Path) -> None:
    config, findings = check(network.BRIDGE_NO_TLS, tmp_path, BRIDGE + "topic a out\n")
    assert places(findings) == [("NET-009", str(config), 1)]


def test_bridge_with_cafile_passes(tmp_path: Path) -> None:
    text = BRIDGE + "bridge_cafile /etc/ssl/certs/ca-certificates.crt\ntopic a out\n"
    _, findings = check(network.BRIDGE_NO_TLS, tmp_path, text)
    assert findings == []


def test_bridge_insecure_reported(tmp_path: Path) -> None:
    text = BRIDGE + "bridge_cafile /etc/ssl/ca.pem\nbridge_insecure true\ntopic a out\n"
    config, findings = check(network.BRIDGE_INSECURE, tmp_path, text)
    assert places(findings) == [("NET-010", str(config), 4)]


def test_bridge_secure_passes(tmp_path: Path) -> None:
    text = BRIDGE + "bridge_cafile /etc/ssl/ca.pem\nbridge_insecure false\ntopic a out\n"
    _, findings = check(network.BRIDGE_INSECURE, tmp_path, text)
    assert findings == []


def test_bridge_forwarding_hash_reported(tmp_path: Path) -> None:
    text = BRIDGE + "topic # out 0\ntopic in/# in 0\ntopic a/# both 1\ntopic b/#\n"
    config, findings = check(network.BRIDGE_ALL_TOPICS, tmp_path, text)
    assert places(findings) == [
        ("NET-011", str(config), 3),
        ("NET-011", str(config), 5),
        ("NET-011", str(config), 6),
    ]
    assert findings[0].evidence.startswith("bridge 'upstream' sends '#' (out)")


def test_bridge_narrow_topics_pass(tmp_path: Path) -> None:
    text = BRIDGE + "topic sensors/temp out 0\ntopic # in 0\n"
    _, findings = check(network.BRIDGE_ALL_TOPICS, tmp_path, text)
    assert findings == []


# NET-012, NET-013


def test_websockets_listener_reported(tmp_path: Path) -> None:
    text = "listener 9001 127.0.0.1\nprotocol websockets\n"
    config, findings = check(network.WEBSOCKETS, tmp_path, text)
    assert places(findings) == [("NET-012", str(config), 2)]


def test_mqtt_listener_passes(tmp_path: Path) -> None:
    _, findings = check(network.WEBSOCKETS, tmp_path, "listener 1883 127.0.0.1\nprotocol mqtt\n")
    assert findings == []


def test_http_dir_reported(tmp_path: Path) -> None:
    text = "listener 9001 127.0.0.1\nprotocol websockets\nhttp_dir /var/www/mqtt\n"
    config, findings = check(network.HTTP_DIR, tmp_path, text)
    assert places(findings) == [("NET-013", str(config), 3)]
    assert findings[0].evidence.startswith("'http_dir /var/www/mqtt'")


def test_no_http_dir_passes(tmp_path: Path) -> None:
    _, findings = check(network.HTTP_DIR, tmp_path, "listener 9001 127.0.0.1\n")
    assert findings == []
