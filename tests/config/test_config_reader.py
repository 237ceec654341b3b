"""Tests for `read_config`: each parsing rule with a line that triggers it and one that does not.

Expected outcomes were checked against the Debian 12 build of Mosquitto 2.0.11 where the rule
comes from the broker (see `test_config_corpus.py` for the broker-backed comparison).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mosquitto_guard.config.model import BrokerConfig, Listener, Location
from mosquitto_guard.config.reader import read_config
from mosquitto_guard.errors import ConfigError, HostError


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def read(tmp_path: Path, content: str | bytes, version: tuple[int, int] = (2, 0)) -> BrokerConfig:
    return read_config([write(tmp_path / "mosquitto.conf", content)], version=version)


def reject(tmp_path: Path, content: str | bytes, version: tuple[int, int] = (2, 0)) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        read(tmp_path, content, version)
    return info.value


# Lines and words


def test_reader_skips_comment_in_column_0(tmp_path: Path) -> None:
    config = read(tmp_path, "# listener 1\nlistener 1883\n")
    assert [option.key for option in config.options] == ["listener"]


def test_reader_rejects_indented_comment(tmp_path: Path) -> None:
    error = reject(tmp_path, "listener 1883\n   # a comment\n")
    assert error.line == 2
    assert error.reason == "unknown option '#': a comment must start in the first column"
    assert error.fix == "remove the spaces before #"


def test_reader_accepts_space_indent(tmp_path: Path) -> None:
    config = read(tmp_path, "   listener 1883\n")
    assert config.listeners[0].port == 1883


def test_reader_rejects_tab_indent(tmp_path: Path) -> None:
    error = reject(tmp_path, "\tlistener 1883\n")
    assert error.line == 1
    assert error.reason == (
        "unknown option '\\tlistener': Mosquitto separates words with spaces only"
    )
    assert error.fix == "replace the tabs with spaces"


def test_reader_rejects_tab_between_name_and_value(tmp_path: Path) -> None:
    error = reject(tmp_path, "pid_file\t/run/m.pid\n")
    assert error.reason.startswith("unknown option 'pid_file\\t/run/m.pid'")


def test_reader_skips_blank_and_space_only_lines(tmp_path: Path) -> None:
    config = read(tmp_path, "\n   \n\r\nlistener 1883\n")
    assert len(config.options) == 1


def test_reader_skips_line_starting_with_carriage_return(tmp_path: Path) -> None:
    config = read(tmp_path, "\rnot_an_option at all\n")
    assert config.options == []


def test_reader_strips_crlf_line_endings(tmp_path: Path) -> None:
    config = read(tmp_path, "listener 1883\r\npersistence true\r\n")
    assert config.options[1].raw == "persistence true"
    assert config.options[1].args == ("true",)


def test_reader_reads_last_line_without_newline(tmp_path: Path) -> None:
    config = read(tmp_path, "listener 1883\npid_file /run/m.pid")
    assert config.last("pid_file") is not None


def test_reader_splits_value_and_args(tmp_path: Path) -> None:
    option = read(tmp_path, "  listener  1883   127.0.0.1  \n").options[0]
    assert option.key == "listener"
    assert option.value == " 1883   127.0.0.1  "
    assert option.args == ("1883", "127.0.0.1")
    assert option.raw == "  listener  1883   127.0.0.1  "
    assert option.location == Location(tmp_path / "mosquitto.conf", 1)


def test_reader_keeps_trailing_comment_in_string_value(tmp_path: Path) -> None:
    config = read(tmp_path, "plugin /usr/lib/x.so # the x plugin\n")
    assert config.plugins[0].path == "/usr/lib/x.so # the x plugin"


def test_reader_trims_plugin_path_but_keeps_option_value(tmp_path: Path) -> None:
    config = read(tmp_path, "plugin    /usr/lib/x.so   \n")
    assert config.plugins[0].path == "/usr/lib/x.so"
    assert config.plugins[0].option.value == "   /usr/lib/x.so   "


# Option names and values


def test_reader_rejects_unknown_option(tmp_path: Path) -> None:
    error = reject(tmp_path, "listener 1883\nplugin_dir /usr/lib\n")
    assert error.line == 2
    assert error.reason == "unknown option 'plugin_dir'"
    assert error.text == "plugin_dir /usr/lib"


def test_reader_accepts_deprecated_aliases(tmp_path: Path) -> None:
    config = read(tmp_path, "port 1884\nretained_persistence true\nauth_plugin /x.so\n")
    assert config.plugins[0].kind == "auth_plugin"
    assert config.listeners == [Listener(1884, None, None)]


def test_reader_rejects_missing_string_value(tmp_path: Path) -> None:
    error = reject(tmp_path, "pid_file    \n")
    assert error.reason == "missing value for pid_file"
    assert error.fix == "write a value after pid_file"


def test_reader_accepts_missing_value_where_broker_does(tmp_path: Path) -> None:
    text = "listener 1883\nmax_connections\nlog_type\nprotocol\npersistent_client_expiration\n"
    config = read(tmp_path, text + "retry_interval\n")
    assert len(config.options) == 6


def test_reader_ignores_extra_words_after_value(tmp_path: Path) -> None:
    config = read(tmp_path, "allow_anonymous true false\nlog_dest stdout nonsense\n")
    assert config.options[0].args == ("true", "false")


def test_reader_reads_integers_like_atoi(tmp_path: Path) -> None:
    config = read(tmp_path, "max_keepalive 60abc\nmax_queued_messages 0x10\nsys_interval +5\n")
    assert len(config.options) == 3


def test_reader_rejects_integer_out_of_range(tmp_path: Path) -> None:
    error = reject(tmp_path, "max_keepalive 5\n")
    assert error.reason == "invalid max_keepalive value '5'"
    assert error.fix == "use a whole number from 10 to 65535"


def test_reader_rejects_non_numeric_port(tmp_path: Path) -> None:
    error = reject(tmp_path, "port abc\n")
    assert error.reason == "invalid port value 'abc' (read as 0)"


def test_reader_rejects_negative_message_size_limit(tmp_path: Path) -> None:
    error = reject(tmp_path, "message_size_limit -1\n")
    assert error.fix == "use a whole number from 0 to 268435455"


def test_reader_accepts_boolean_words(tmp_path: Path) -> None:
    config = read(tmp_path, "persistence true\npersistence 0\nset_tcp_nodelay 1\n")
    assert len(config.options) == 3


def test_reader_rejects_capitalised_boolean(tmp_path: Path) -> None:
    error = reject(tmp_path, "persistence True\n")
    assert error.reason == "invalid persistence value 'True'"
    assert error.fix == "write true or false (lowercase), or 1 or 0"


def test_reader_rejects_equals_sign_as_value(tmp_path: Path) -> None:
    error = reject(tmp_path, "allow_anonymous = false\n")
    assert error.reason == "invalid allow_anonymous value '='"


def test_reader_rejects_unknown_keyword(tmp_path: Path) -> None:
    error = reject(tmp_path, "log_dest stdout\nlog_dest journal\n")
    assert error.line == 2
    assert error.reason == "invalid log_dest value 'journal'"
    assert error.fix == "use one of: dlt, file, none, stderr, stdout, syslog, topic"


def test_reader_rejects_raw_keyword_with_trailing_space(tmp_path: Path) -> None:
    text = "connection b\naddress 127.0.0.1\nbridge_protocol_version mqttv311 \n"
    error = reject(tmp_path, text)
    assert error.reason == "invalid bridge_protocol_version value 'mqttv311 '"


def test_reader_rejects_duplicate_string_option(tmp_path: Path) -> None:
    error = reject(tmp_path, "pid_file /run/a.pid\npid_file /run/b.pid\n")
    assert error.line == 2
    assert error.reason == "duplicate pid_file value"
    assert error.fix == "keep only one pid_file line per config"


def test_reader_rejects_second_user_line(tmp_path: Path) -> None:
    error = reject(tmp_path, "user mosquitto\nuser nobody\n")
    assert error.reason == "duplicate user value"


def test_reader_accepts_same_string_on_two_listeners(tmp_path: Path) -> None:
    config = read(tmp_path, "listener 1883\ncafile /a\nlistener 1884\ncafile /b\n")
    assert [listener.port for listener in config.listeners] == [1883, 1884]


def test_reader_rejects_duplicate_cafile_on_one_listener(tmp_path: Path) -> None:
    error = reject(tmp_path, "listener 1883\ncafile /a\ncafile /b\n")
    assert error.fix == "keep only one cafile line per listener"


def test_reader_rejects_second_log_dest_file(tmp_path: Path) -> None:
    error = reject(tmp_path, "log_dest file /var/log/a\nlog_dest stdout\nlog_dest file /b\n")
    assert error.line == 3
    assert error.reason == "second `log_dest file` line"


def test_reader_rejects_certificate_with_psk_hint(tmp_path: Path) -> None:
    error = reject(tmp_path, "listener 8883\npsk_hint hint\ncafile /ca.pem\n")
    assert error.reason == "certificate and PSK encryption on the same listener"


def test_reader_accepts_keyfile_with_psk_hint(tmp_path: Path) -> None:
    assert read(tmp_path, "listener 8883\npsk_hint hint\nkeyfile /k.pem\n").options


def test_reader_rejects_mount_point_before_listener(tmp_path: Path) -> None:
    error = reject(tmp_path, "mount_point site/\nlistener 1883\n")
    assert error.reason == "mount_point before any listener line"


def test_reader_rejects_wildcard_mount_point(tmp_path: Path) -> None:
    error = reject(tmp_path, "listener 1883\nmount_point site/#\n")
    assert error.reason == "invalid mount_point 'site/#'"


def test_reader_rejects_port_0_without_socket_path(tmp_path: Path) -> None:
    error = reject(tmp_path, "listener 0\n")
    assert error.reason == "a listener with port 0 needs a Unix socket path"


def test_reader_reads_unix_socket_listener(tmp_path: Path) -> None:
    config = read(tmp_path, "listener 0 /run/mosquitto.sock\n")
    assert config.listeners[0].port == 0
    assert config.listeners[0].address == "/run/mosquitto.sock"


def test_reader_ignores_comment_after_listener_port(tmp_path: Path) -> None:
    config = read(tmp_path, "listener 1883 #all interfaces\n")
    assert config.listeners[0].address is None


def test_reader_rejects_second_kpass_in_one_file(tmp_path: Path) -> None:
    digest = "0123456789abcdef0123456789abcdef01234567"
    line = f"tls_engine_kpass_sha1 {digest}\n"
    text = f"listener 1\n{line}listener 2\n{line}"
    error = reject(tmp_path, text)
    assert error.line == 4
    assert error.reason == "second tls_engine_kpass_sha1 line in the same file"


def test_reader_accepts_kpass_in_two_files(tmp_path: Path) -> None:
    digest = "0123456789abcdef0123456789abcdef01234567"
    first = write(tmp_path / "a.conf", f"listener 1\ntls_engine_kpass_sha1 {digest}\n")
    second = write(tmp_path / "b.conf", f"listener 2\ntls_engine_kpass_sha1 {digest}\n")
    assert len(read_config([first, second]).listeners) == 2


# Bridges


def test_reader_rejects_bridge_option_before_connection(tmp_path: Path) -> None:
    error = reject(tmp_path, "address 127.0.0.1\n")
    assert error.reason == "bridge option before any connection line in this file"


def test_reader_reads_complete_bridge(tmp_path: Path) -> None:
    text = "connection up\naddress 127.0.0.1:1884 127.0.0.2\ntopic # both 0 local/ remote/\n"
    assert len(read(tmp_path, text).options) == 3


def test_reader_rejects_bridge_without_address(tmp_path: Path) -> None:
    error = reject(tmp_path, "connection up\ntopic # both 0\n")
    assert error.line == 1
    assert error.reason == "bridge 'up' has no address line"


def test_reader_rejects_bridge_without_topic(tmp_path: Path) -> None:
    error = reject(tmp_path, "connection up\naddress 127.0.0.1\n")
    assert error.reason == "bridge 'up' has no topic line"


def test_reader_rejects_duplicate_bridge_name(tmp_path: Path) -> None:
    text = "connection up\naddress 127.0.0.1\ntopic #\nconnection up\n"
    assert reject(tmp_path, text).reason == "duplicate bridge name 'up'"


def test_reader_rejects_duplicate_local_clientid(tmp_path: Path) -> None:
    bridge = "address 127.0.0.1\ntopic #\nlocal_clientid same\n"
    error = reject(tmp_path, f"connection a\n{bridge}connection b\n{bridge}")
    assert error.line == 5
    assert error.reason == "bridge local_clientid 'same' is not unique"


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("# sideways 0", "invalid bridge topic direction 'sideways'"),
        ("# both 3", "invalid bridge QoS '3'"),
        ("# both 0 a/+ b/", "invalid bridge topic local prefix 'a/+'"),
        ('"" both 0 a/', 'a bridge topic of "" needs both a local and a remote prefix'),
        ("a# both 0 x/ y/", "invalid bridge topic 'x/a#' after adding the prefix"),
    ],
)
def test_reader_rejects_invalid_bridge_topic(tmp_path: Path, topic: str, reason: str) -> None:
    error = reject(tmp_path, f"connection b\naddress 127.0.0.1\ntopic {topic}\n")
    assert error.line == 3
    assert error.reason == reason


@pytest.mark.parametrize("topic", ["# BOTH 256", "x both # c+ d#", '"" in 1 a/ b/', "a/b"])
def test_reader_accepts_bridge_topic(tmp_path: Path, topic: str) -> None:
    assert read(tmp_path, f"connection b\naddress 127.0.0.1\ntopic {topic}\n").options


def test_reader_rejects_bridge_certificate_with_psk(tmp_path: Path) -> None:
    text = "connection b\naddress 127.0.0.1\nbridge_cafile /ca\nbridge_identity me\n"
    assert reject(tmp_path, text).reason == "certificate and PSK encryption in the same bridge"


# per_listener_settings and plugins


def test_reader_rejects_per_listener_settings_after_security_option(tmp_path: Path) -> None:
    error = reject(tmp_path, "allow_anonymous true\nper_listener_settings true\n")
    assert error.line == 2
    assert error.reason == "per_listener_settings must be set before any other security option"


def test_reader_accepts_per_listener_settings_first(tmp_path: Path) -> None:
    config = read(tmp_path, "per_listener_settings true\nallow_anonymous true\n")
    assert config.per_listener_settings is True


def test_reader_accepts_late_per_listener_settings_false(tmp_path: Path) -> None:
    config = read(tmp_path, "allow_anonymous true\nper_listener_settings false\n")
    assert config.per_listener_settings is False


def test_reader_attaches_plugin_globally_by_default(tmp_path: Path) -> None:
    config = read(tmp_path, "listener 1883\nplugin /x.so\n")
    assert config.plugins[0].listener is None


def test_reader_attaches_plugin_to_current_listener(tmp_path: Path) -> None:
    text = "per_listener_settings true\nlistener 1883\nlistener 1884\nplugin /x.so\n"
    config = read(tmp_path, text)
    assert config.plugins[0].listener == config.listeners[1]


def test_reader_resets_listener_in_included_file(tmp_path: Path) -> None:
    write(tmp_path / "conf.d" / "p.conf", "plugin /x.so\n")
    main = "per_listener_settings true\nlistener 18830 127.0.0.1\ninclude_dir {}\n"
    config = read(tmp_path, main.format(tmp_path / "conf.d"))
    default = Listener(1883, None, None)
    assert config.plugins[0].listener == default
    assert config.listeners == [config.listeners[0], default]


def test_reader_opens_no_default_listener_when_unused(tmp_path: Path) -> None:
    config = read(tmp_path, "per_listener_settings true\nlistener 1883\nallow_anonymous true\n")
    assert [listener.option is not None for listener in config.listeners] == [True]


def test_reader_opens_default_listener_for_password_file(tmp_path: Path) -> None:
    config = read(tmp_path, "per_listener_settings true\npassword_file /p\nlistener 8883\n")
    assert config.listeners[-1] == Listener(1883, None, None)


def test_reader_leaves_listeners_empty_in_local_only_mode(tmp_path: Path) -> None:
    assert read(tmp_path, "allow_anonymous false\npassword_file /p\n").listeners == []


def test_reader_attaches_plugin_options_to_latest_plugin(tmp_path: Path) -> None:
    text = "plugin /a.so\nplugin_opt_one 1\nplugin /b.so\nplugin_opt_two 2\nauth_opt_two 3\n"
    config = read(tmp_path, text)
    assert sorted(config.plugins[0].options) == ["one"]
    assert [option.value for option in config.plugins[1].options["two"]] == ["2", "3"]


def test_reader_keeps_plugin_option_value_verbatim(tmp_path: Path) -> None:
    config = read(tmp_path, "plugin /a.so\nplugin_opt_iprange   allow ::1 #  \n")
    assert config.plugins[0].options["iprange"][0].value == "  allow ::1 #  "


def test_reader_rejects_plugin_option_without_plugin(tmp_path: Path) -> None:
    error = reject(tmp_path, "auth_opt_backends mysql\nauth_plugin /a.so\n")
    assert error.line == 1
    assert error.reason == "auth_opt_backends without an earlier plugin line in the same file"


def test_reader_rejects_plugin_option_across_files(tmp_path: Path) -> None:
    included = write(tmp_path / "conf.d" / "opts.conf", "plugin_opt_config_file /d.json\n")
    error = reject(tmp_path, f"plugin /a.so\ninclude_dir {tmp_path / 'conf.d'}\n")
    assert error.path == str(included)
    assert error.line == 1


def test_reader_rejects_short_plugin_option_key(tmp_path: Path) -> None:
    error = reject(tmp_path, "plugin /a.so\nplugin_opt_ab value\n")
    assert error.reason == "plugin option name 'ab' is shorter than 3 characters"


def test_reader_rejects_plugin_option_without_value(tmp_path: Path) -> None:
    error = reject(tmp_path, "plugin /a.so\nplugin_opt_abc \t \n")
    assert error.reason == "missing value for plugin_opt_abc"


def test_reader_rejects_deny_special_chars_without_plugin(tmp_path: Path) -> None:
    error = reject(tmp_path, "auth_plugin_deny_special_chars false\n")
    assert error.reason.startswith("auth_plugin_deny_special_chars without an earlier plugin")


# include_dir


def test_reader_orders_include_dir_like_broker(tmp_path: Path) -> None:
    names = [
        "b.conf",
        "é.conf",
        "~t.conf",
        "a.conf",
        "Ab.conf",
        "10-x.conf",
        ".hidden.conf",
        "2-x.conf",
        "B.conf",
        "aB.conf",
        "A.conf",
        "ab.conf",
        "Z.conf",
        "_u.conf",
    ]
    for name in names:
        write(tmp_path / "conf.d" / name, "# empty\n")
    config = read(tmp_path, f"include_dir {tmp_path / 'conf.d'}\n")
    assert [path.name for path in config.files[1:]] == [
        ".hidden.conf",
        "10-x.conf",
        "2-x.conf",
        "A.conf",
        "Ab.conf",
        "a.conf",
        "aB.conf",
        "ab.conf",
        "B.conf",
        "b.conf",
        "Z.conf",
        "_u.conf",
        "~t.conf",
        "é.conf",
    ]


def test_reader_orders_undecodable_names_like_broker(tmp_path: Path) -> None:
    directory = tmp_path / "conf.d"
    directory.mkdir()
    for name in (b"\xffz.conf", b"a.conf\xc3.conf", b"a.conf", b"Ab.conf", b".h.conf"):
        (Path(os.fsdecode(bytes(directory) + b"/" + name))).write_bytes(b"")
    config = read(tmp_path, f"include_dir {directory}\n")
    assert [os.fsencode(path.name) for path in config.files[1:]] == [
        b"\xffz.conf",
        b".h.conf",
        b"Ab.conf",
        b"a.conf\xc3.conf",
        b"a.conf",
    ]


def test_reader_filters_include_dir_names(tmp_path: Path) -> None:
    for name in ("x.conf", "c.CONF", "x.conf.bak", ".conf", "nested/inner.conf"):
        write(tmp_path / "conf.d" / name, "listener 1\n")
    config = read(tmp_path, f"include_dir {tmp_path / 'conf.d'}\n")
    assert [path.name for path in config.files] == ["mosquitto.conf", "x.conf"]


def test_reader_follows_include_dir_symlinks(tmp_path: Path) -> None:
    target = write(tmp_path / "elsewhere" / "settings.txt", "listener 1884\n")
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "link.conf").symlink_to(target)
    config = read(tmp_path, f"include_dir {tmp_path / 'conf.d'}\n")
    assert config.listeners[0].port == 1884


def test_reader_records_include_dir_line(tmp_path: Path) -> None:
    write(tmp_path / "conf.d" / "a.conf", "listener 1884\n")
    config = read(tmp_path, f"listener 1883\ninclude_dir {tmp_path / 'conf.d'}\n")
    main = tmp_path / "mosquitto.conf"
    assert config.options[0].included_from is None
    assert config.options[2].included_from == Location(main, 2)


def test_reader_rejects_directory_named_conf(tmp_path: Path) -> None:
    (tmp_path / "conf.d" / "sub.conf").mkdir(parents=True)
    error = reject(tmp_path, f"include_dir {tmp_path / 'conf.d'}\n")
    assert error.line == 1
    assert error.reason == f"config file is a directory: {tmp_path / 'conf.d' / 'sub.conf'}"


def test_reader_rejects_dangling_symlink_in_include_dir(tmp_path: Path) -> None:
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "gone.conf").symlink_to(tmp_path / "missing")
    error = reject(tmp_path, f"include_dir {tmp_path / 'conf.d'}\n")
    assert error.reason == f"config file not found: {tmp_path / 'conf.d' / 'gone.conf'}"


def test_reader_rejects_fifo_in_include_dir(tmp_path: Path) -> None:
    (tmp_path / "conf.d").mkdir()
    os.mkfifo(tmp_path / "conf.d" / "pipe.conf")
    error = reject(tmp_path, f"include_dir {tmp_path / 'conf.d'}\n")
    assert error.reason == f"config file is not a regular file: {tmp_path / 'conf.d' / 'pipe.conf'}"


def test_reader_rejects_missing_include_dir(tmp_path: Path) -> None:
    error = reject(tmp_path, f"include_dir {tmp_path / 'nowhere'}\n")
    missing = tmp_path / "nowhere"
    assert error.reason == f"cannot open include_dir '{missing}': No such file or directory"


def test_reader_keeps_trailing_space_in_include_dir(tmp_path: Path) -> None:
    write(tmp_path / "conf.d " / "a.conf", "listener 1884\n")
    config = read(tmp_path, f"include_dir {tmp_path / 'conf.d'} \n")
    assert config.listeners[0].port == 1884


def test_reader_ignores_nested_include_dir_in_2_0(tmp_path: Path) -> None:
    write(tmp_path / "inner" / "x.conf", "listener 9999\n")
    write(tmp_path / "conf.d" / "a.conf", f"include_dir {tmp_path / 'inner'}\n")
    config = read(tmp_path, f"include_dir {tmp_path / 'conf.d'}\n")
    assert config.listeners == []
    assert [option.key for option in config.options] == ["include_dir", "include_dir"]


def test_reader_rejects_nested_include_dir_in_2_1(tmp_path: Path) -> None:
    write(tmp_path / "conf.d" / "a.conf", f"include_dir {tmp_path}\n")
    error = reject(tmp_path, f"include_dir {tmp_path / 'conf.d'}\n", version=(2, 1))
    assert error.reason == "include_dir is only valid in the main configuration file"


def test_reader_resolves_relative_paths_against_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "conf.d" / "a.conf", "listener 1884\n")
    write(tmp_path / "main.conf", "include_dir conf.d\n")
    monkeypatch.chdir(tmp_path)
    config = read_config([Path("main.conf")])
    assert config.files == [Path("main.conf"), Path("conf.d/a.conf")]


@pytest.mark.parametrize(
    ("main", "included", "kind"),
    [
        ("listener 1883\ninclude_dir {d}\nsocket_domain ipv6\n", "listener 8883\n", "listener"),
        ("plugin /a.so\ninclude_dir {d}\nplugin_opt_key v\n", "plugin /b.so\n", "plugin"),
        (
            "connection a\naddress 127.0.0.1\ninclude_dir {d}\ntopic a/#\n",
            "connection b\naddress 127.0.0.2\ntopic b/#\n",
            "bridge",
        ),
    ],
)
def test_reader_rejects_stale_pointer_after_include(
    tmp_path: Path, main: str, included: str, kind: str
) -> None:
    # 2.0.11 lost the socket_domain and the bridge topic, and crashed on the plugin option.
    write(tmp_path / "conf.d" / "b.conf", included)
    error = reject(tmp_path, main.format(d=tmp_path / "conf.d"))
    assert error.path == str(tmp_path / "mosquitto.conf")
    assert error.reason.endswith(
        f"follows an include_dir whose files add a {kind}, and the broker then applies it "
        "through a stale pointer, so the setting can be lost or the broker can crash"
    )
    assert error.fix == f"move this line above the include_dir line, next to its {kind}"


def test_reader_accepts_main_line_after_include(tmp_path: Path) -> None:
    write(tmp_path / "conf.d" / "b.conf", "log_type all\n")
    config = read(tmp_path, f"listener 1883\ninclude_dir {tmp_path / 'conf.d'}\nmax_qos 1\n")
    assert config.last("max_qos") is not None


def test_reader_accepts_plugin_option_of_other_listener(
    tmp_path: Path,
) -> None:
    write(tmp_path / "conf.d" / "b.conf", "plugin /b.so\n")
    main = "per_listener_settings true\nlistener 1883\nplugin /a.so\ninclude_dir {}\n"
    config = read(tmp_path, main.format(tmp_path / "conf.d") + "plugin_opt_key v\n")
    assert sorted(config.plugins[0].options) == ["key"]


# Several -c files


def test_reader_adds_up_repeated_config_files(tmp_path: Path) -> None:
    first = write(tmp_path / "a.conf", "listener 1883\n")
    second = write(tmp_path / "b.conf", "plugin /x.so\n")
    config = read_config([first, second])
    assert config.main_files == [first, second]
    assert [listener.port for listener in config.listeners] == [1883]
    assert [plugin.path for plugin in config.plugins] == ["/x.so"]


def test_reader_rejects_duplicate_across_config_files(tmp_path: Path) -> None:
    first = write(tmp_path / "a.conf", "pid_file /run/a.pid\n")
    second = write(tmp_path / "b.conf", "pid_file /run/b.pid\n")
    with pytest.raises(ConfigError) as info:
        read_config([first, second])
    assert info.value.path == str(second)
    assert info.value.line == 1


def test_reader_resets_current_plugin_between_config_files(tmp_path: Path) -> None:
    first = write(tmp_path / "a.conf", "plugin /x.so\n")
    second = write(tmp_path / "b.conf", "plugin_opt_key value\n")
    with pytest.raises(ConfigError) as info:
        read_config([first, second])
    assert info.value.path == str(second)


def test_reader_reads_no_files_as_default_config() -> None:
    config = read_config([])
    assert config.options == []
    assert config.listeners == []


# Mosquitto 2.1


def test_reader_rejects_global_plugin_in_2_0(tmp_path: Path) -> None:
    assert reject(tmp_path, "global_plugin /x.so\n").reason == "unknown option 'global_plugin'"


def test_reader_reads_global_plugin_in_2_1(tmp_path: Path) -> None:
    text = "per_listener_settings true\nglobal_plugin /x.so\n"
    config = read(tmp_path, text, version=(2, 1))
    assert config.plugins[0].kind == "global_plugin"
    assert config.plugins[0].listener is None


def test_reader_marks_unused_plugin_load(tmp_path: Path) -> None:
    text = "plugin_load auth /a.so\nplugin_load spare /b.so\nlistener 1883\nplugin_use auth\n"
    config = read(tmp_path, text, version=(2, 1))
    assert [(plugin.name, plugin.loaded) for plugin in config.plugins] == [
        ("auth", True),
        ("spare", False),
    ]
    assert config.plugins[0].listener == config.listeners[0]


def test_reader_attaches_options_after_plugin_use(tmp_path: Path) -> None:
    text = "plugin_load auth /a.so\nlistener 1883\nplugin_use auth\nplugin_opt_key value\n"
    config = read(tmp_path, text, version=(2, 1))
    assert sorted(config.plugins[0].options) == ["key"]


def test_reader_rejects_plugin_use_before_plugin_load(tmp_path: Path) -> None:
    error = reject(tmp_path, "listener 1883\nplugin_use auth\n", version=(2, 1))
    assert error.reason == "plugin 'auth' is not loaded before this line"


def test_reader_rejects_plugin_use_without_listener(tmp_path: Path) -> None:
    error = reject(tmp_path, "plugin_load auth /a.so\nplugin_use auth\n", version=(2, 1))
    assert error.reason == "plugin_use needs a listener line before it in the same file"


def test_reader_rejects_plugin_before_listener_in_2_1(tmp_path: Path) -> None:
    text = "per_listener_settings true\nplugin /x.so\nlistener 1883\n"
    error = reject(tmp_path, text, version=(2, 1))
    assert error.line == 2
    assert error.reason == "plugin needs a listener line before it in the same file"


def test_reader_accepts_plugin_before_listener_in_2_0(tmp_path: Path) -> None:
    text = "per_listener_settings true\nplugin /x.so\nlistener 1883\n"
    config = read(tmp_path, text)
    assert config.plugins[0].listener == Listener(1883, None, None)


def test_reader_rejects_trailing_characters_in_2_1_integer(tmp_path: Path) -> None:
    error = reject(tmp_path, "max_keepalive 60abc\n", version=(2, 1))
    assert error.reason == "max_keepalive value '60abc' is not a number"


def test_reader_allows_repeated_cafile_in_2_1(tmp_path: Path) -> None:
    assert read(tmp_path, "listener 1883\ncafile /a\ncafile /b\n", version=(2, 1)).options


def test_reader_reads_later_versions_with_2_1_rules(tmp_path: Path) -> None:
    config = read(tmp_path, "global_plugin /x.so\n", version=(2, 2))
    assert config.version == (2, 2)


def test_reader_rejects_version_before_2_0(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"Mosquitto 1\.6 is not supported"):
        read(tmp_path, "listener 1883\n", version=(1, 6))


# Hostile input: every case names the file and line and gives a one-line message.

HOSTILE_LINES = {
    "not_utf8": (
        b"listener 1883\n# caf\xe9\n",
        "{path}:2: line is not valid UTF-8: '# caf\\\\xe9'; fix: save the file as UTF-8",
    ),
    "nul_byte": (
        b"listener 1883\x00 /x.so\n",
        "{path}:1: line contains a NUL byte: 'listener 1883\\\\x00 /x.so'; "
        "fix: remove the NUL byte",
    ),
    "byte_order_mark": (
        "\ufefflistener 1883\n".encode(),
        "{path}:1: unknown option '\\ufefflistener': '\\ufefflistener 1883'; fix: correct the "
        "name (see mosquitto.conf(5)) or remove the line; the broker stops at unknown options",
    ),
    "escape_sequence": (
        b"\x1b[2Jplugin /x.so\n",
        "{path}:1: unknown option '\\x1b[2Jplugin': '\\x1b[2Jplugin /x.so'; fix: correct the "
        "name (see mosquitto.conf(5)) or remove the line; the broker stops at unknown options",
    ),
    "tab_only": (
        b"\t\n",
        "{path}:1: unknown option '\\t': Mosquitto separates words with spaces only: '\\t'; "
        "fix: replace the tabs with spaces",
    ),
    "long_line": (
        b"x" * 5000 + b"\n",
        "{path}:1: unknown option '" + "x" * 57 + "...': '" + "x" * 117 + "...'; fix: correct "
        "the name (see mosquitto.conf(5)) or remove the line; the broker stops at unknown options",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_LINES))
def test_reader_rejects_hostile_line(tmp_path: Path, case: str) -> None:
    content, expected = HOSTILE_LINES[case]
    error = reject(tmp_path, content)
    assert str(error) == expected.format(path=tmp_path / "mosquitto.conf")
    assert "\n" not in str(error)


def test_reader_rejects_directory_as_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        read_config([tmp_path])
    assert str(info.value) == (
        f"{tmp_path}: config file is a directory: '{tmp_path}'; fix: point at a file, or rename "
        "the directory so its name does not end in .conf"
    )


def test_reader_rejects_missing_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        read_config([tmp_path / "absent.conf"])
    path = tmp_path / "absent.conf"
    assert str(info.value) == f"{path}: config file not found: '{path}'; fix: check the path"


def test_reader_rejects_fifo_as_config(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.conf")
    with pytest.raises(ConfigError) as info:
        read_config([tmp_path / "pipe.conf"])
    assert info.value.reason == "config file is not a regular file"


def test_reader_rejects_device_as_config() -> None:
    with pytest.raises(ConfigError) as info:
        read_config([Path("/dev/zero")])
    assert info.value.reason == "config file is not a regular file"


def test_reader_rejects_symlink_loop(tmp_path: Path) -> None:
    (tmp_path / "loop.conf").symlink_to(tmp_path / "loop.conf")
    with pytest.raises(ConfigError) as info:
        read_config([tmp_path / "loop.conf"])
    assert info.value.reason == "cannot open config file: Too many levels of symbolic links"


def test_reader_escapes_control_characters_in_path(tmp_path: Path) -> None:
    path = write(tmp_path / "bad\nname.conf", "nonsense 1\n")
    with pytest.raises(ConfigError) as info:
        read_config([path])
    assert str(info.value).startswith(f"{tmp_path}/bad\\x0aname.conf:1: unknown option")


def test_reader_reports_unreadable_config_as_host_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tests run as root, which reads any file, so the permission error is simulated.
    path = write(tmp_path / "secret.conf", "listener 1883\n")

    def deny(*args: object, **kwargs: object) -> int:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "open", deny)
    with pytest.raises(HostError) as info:
        read_config([path])
    assert str(info.value) == (
        f"cannot read config file {path}: permission denied; fix: run as a user that can read "
        "it, or correct its permissions"
    )


def test_reader_reads_empty_file(tmp_path: Path) -> None:
    assert read(tmp_path, b"").options == []


def test_reader_keeps_default_listener_closed_for_allow_anonymous(tmp_path: Path) -> None:
    config = read(tmp_path, "per_listener_settings true\nallow_anonymous true\nlistener 8883\n")
    assert [listener.port for listener in config.listeners] == [8883]
