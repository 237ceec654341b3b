"""Property tests: the reader and `flatten` on arbitrary input.

`read_config` must return or raise `ConfigError`/`HostError` for any bytes. For configs built
from real option names, a config that reads cleanly must either be rejected by `flatten` with
`ConfigError` or flatten to a file that reads back with the same options, listeners and plugins.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import example, given, settings
from hypothesis import strategies as st

from mosquitto_guard.config.flatten import flatten
from mosquitto_guard.config.model import BrokerConfig
from mosquitto_guard.config.options import OPTIONS
from mosquitto_guard.config.reader import read_config
from mosquitto_guard.errors import ConfigError, HostError

FUZZ_SETTINGS = settings(max_examples=300, deadline=None)

OPTION_NAMES = sorted(
    name for name, spec in OPTIONS.items() if name != "include_dir" and spec.since == (2, 0)
)
WORDS = st.one_of(
    st.sampled_from(
        [
            "true",
            "false",
            "1",
            "0",
            "1883",
            "8883",
            "127.0.0.1",
            "#",
            "a/",
            "b/",
            '""',
            "both",
            "in",
            "out",
            "file",
            "stdout",
            "mqtt",
            "ipv4",
            "/x.so",
            "/y.so",
            "60",
            "14d",
        ]
    ),
    st.text(alphabet="abc019 \t#+/=", max_size=6),
)
KEYS = st.sampled_from([*OPTION_NAMES, "plugin_opt_key", "auth_opt_abc", "plugin_opt_ab"])
LINES = st.builds(
    lambda indent, key, words, comment: " " * indent + " ".join([key, *words]) + comment,
    st.integers(0, 2),
    KEYS,
    st.lists(WORDS, max_size=4),
    st.sampled_from(["", " ", " # note", "\r"]),
)
# Lines and blocks that are valid on their own, so that many generated configs read cleanly
# and reach `flatten`. The bridge and plugin option lines also appear alone, where they attach
# to whatever bridge or plugin is current, or fail.
VALID_LINES = st.sampled_from(
    [
        *["listener 1883", "listener 8883 127.0.0.1", "plugin /x.so", "plugin_opt_key value"] * 3,
        "listener 0 /run/m.sock",
        "port 1884",
        "allow_anonymous true",
        "allow_zero_length_clientid false",
        "max_connections 10",
        "max_qos 1",
        "protocol websockets",
        "use_username_as_clientid true",
        "socket_domain ipv4",
        "tls_keyform engine",
        "cafile /etc/ca.pem",
        "password_file /etc/passwd.txt",
        "acl_file /etc/acl",
        "plugin /x.so",
        "auth_plugin /y.so # old",
        "plugin /x.so\nplugin_opt_key value",
        "auth_plugin /z.so\nauth_opt_abc 1",
        "connection up\naddress 127.0.0.1:1884\ntopic # both 0",
        "connection down\naddress 127.0.0.2\ntopic a/# in 1 l/ r/",
        "cleansession true",
        "plugin_opt_key value",
        "auth_plugin_deny_special_chars false",
        "per_listener_settings true",
        "per_listener_settings false",
        "persistence true",
        "log_type all",
        "log_dest stdout",
        "max_keepalive 60",
        "  retry_interval 20",
    ]
)
FILES = st.lists(
    st.one_of(*[VALID_LINES] * 16, LINES, st.sampled_from(["", "# comment"])), max_size=5
)


def read_bytes(data: bytes) -> BrokerConfig | None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "fuzz.conf"
        path.write_bytes(data)
        try:
            return read_config([path])
        except (ConfigError, HostError):
            return None


def summary(config: BrokerConfig) -> tuple[object, ...]:
    return (
        [(option.key, option.value) for option in config.options if option.key != "include_dir"],
        [(listener.port, listener.address) for listener in config.listeners],
        [
            (plugin.path, plugin.listener and plugin.listener.port, sorted(plugin.options))
            for plugin in config.plugins
        ],
        config.per_listener_settings,
    )


@FUZZ_SETTINGS
@given(st.binary(max_size=4096))
def test_reader_raises_only_config_errors_for_any_bytes(data: bytes) -> None:
    read_bytes(data)


@FUZZ_SETTINGS
@given(FILES)
def test_reader_raises_only_config_errors_for_option_lines(lines: list[str]) -> None:
    read_bytes("\n".join(lines).encode())


@settings(max_examples=1000, deadline=None)
@given(st.booleans(), FILES, FILES, FILES)
@example(True, ["listener 1883"], ["plugin /x.so"], ["listener 8883"])
@example(False, ["plugin /x.so"], ["plugin_opt_key value"], ["plugin /y.so"])
@example(False, ["listener 1883"], ["max_qos 1"], ["listener 8883"])
@example(True, ["listener 1883"], [], ["password_file /etc/passwd.txt"])
def test_flatten_keeps_meaning_or_rejects(
    per_listener: bool, main_head: list[str], main_tail: list[str], included: list[str]
) -> None:
    # With per_listener_settings true each plugin records its listener, which makes a plugin
    # line that lands on the wrong listener visible in the summary.
    first = ["per_listener_settings true"] if per_listener else []
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        (directory / "conf.d").mkdir()
        (directory / "conf.d" / "extra.conf").write_text("\n".join(included))
        main = directory / "main.conf"
        include_line = f"include_dir {directory / 'conf.d'}"
        main.write_text("\n".join([*first, *main_head, include_line, *main_tail]))
        try:
            original = read_config([main])
        except ConfigError:
            return
        try:
            flat = flatten(original, {})
        except ConfigError:
            return
        flat_path = directory / "flat.conf"
        flat_path.write_bytes(flat)
        assert summary(read_config([flat_path])) == summary(original)
