"""Tests for `flatten`: the single-file config that replaces the broker's main file and conf.d."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from support import DYNSEC_PLUGIN, MOSQUITTO, free_port, stop_process, wait_for_port

from mosquitto_guard.config.flatten import flatten
from mosquitto_guard.config.model import BrokerConfig, Location
from mosquitto_guard.config.reader import read_config
from mosquitto_guard.errors import ConfigError


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def layout(tmp_path: Path, main: str, included: dict[str, str]) -> BrokerConfig:
    """Read a main file whose `{conf_d}` placeholder names a conf.d holding `included`."""
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir(exist_ok=True)
    for name, content in included.items():
        write(conf_d / name, content)
    main_path = write(tmp_path / "mosquitto.conf", main.format(conf_d=conf_d))
    return read_config([main_path])


def reject(config: BrokerConfig) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        flatten(config, {})
    return info.value


# Output


def test_flatten_inlines_include_dir_with_headers(tmp_path: Path) -> None:
    config = layout(
        tmp_path,
        "# broker\npid_file /run/m.pid\nlistener 1883 127.0.0.1\ninclude_dir {conf_d}\n",
        {
            "b.conf": "listener 8883\nplugin /x.so\nplugin_opt_key value\n",
            "a.conf": "\n# logging\nlog_type all\n",
        },
    )
    main, conf_d = tmp_path / "mosquitto.conf", tmp_path / "conf.d"
    assert (
        flatten(config, {})
        == (
            f"# {main}\n"
            "pid_file /run/m.pid\n"
            "listener 1883 127.0.0.1\n"
            f"# {conf_d / 'a.conf'}\n"
            "log_type all\n"
            f"# {conf_d / 'b.conf'}\n"
            "listener 8883\n"
            "plugin /x.so\n"
            "plugin_opt_key value\n"
        ).encode()
    )


def test_flatten_copies_lines_byte_for_byte(tmp_path: Path) -> None:
    content = "  listener  1883  \r\nplugin /x.so # keep this   \nplugin_opt_abc   a b  # c \n"
    config = read_config([write(tmp_path / "m.conf", content)])
    assert flatten(config, {}).split(b"\n")[1:4] == [
        b"  listener  1883  ",
        b"plugin /x.so # keep this   ",
        b"plugin_opt_abc   a b  # c ",
    ]


def test_flatten_marks_return_to_main_file(tmp_path: Path) -> None:
    config = layout(tmp_path, "include_dir {conf_d}\nlog_type all\n", {"a.conf": "user m\n"})
    lines = flatten(config, {}).decode().splitlines()
    assert lines == [
        f"# {tmp_path / 'conf.d' / 'a.conf'}",
        "user m",
        f"# {tmp_path / 'mosquitto.conf'}",
        "log_type all",
    ]


def test_flatten_drops_nested_include_dir(tmp_path: Path) -> None:
    write(tmp_path / "inner" / "x.conf", "listener 9999\n")
    nested = {"a.conf": f"include_dir {tmp_path}/inner\n"}
    config = layout(tmp_path, "include_dir {conf_d}\n", nested)
    assert b"include_dir" not in flatten(config, {})


def test_flatten_escapes_control_characters_in_header(tmp_path: Path) -> None:
    config = layout(tmp_path, "include_dir {conf_d}\n", {"a\nplugin evil.so\n.conf": "user m\n"})
    flat = flatten(config, {})
    assert flat.decode().splitlines() == [
        f"# {tmp_path / 'conf.d'}/a\\x0aplugin evil.so\\x0a.conf",
        "user m",
    ]
    flat_path = write(tmp_path / "flat.conf", flat)
    assert read_config([flat_path]).plugins == []


# Plugin paths


def test_flatten_replaces_plugin_paths(tmp_path: Path) -> None:
    content = "plugin /a.so\nauth_plugin /b.so # old\nplugin /c.so\nlistener 1\ntls_engine /e.so\n"
    config = read_config([write(tmp_path / "m.conf", content)])
    paths = {
        Location(tmp_path / "m.conf", 1): "/proc/self/fd/7",
        Location(tmp_path / "m.conf", 2): "/proc/self/fd/8",
        Location(tmp_path / "m.conf", 5): "/proc/self/fd/9",
    }
    assert flatten(config, paths).split(b"\n")[1:6] == [
        b"plugin /proc/self/fd/7",
        b"auth_plugin /proc/self/fd/8",
        b"plugin /c.so",
        b"listener 1",
        b"tls_engine /proc/self/fd/9",
    ]


def test_flatten_replaces_2_1_plugin_paths(tmp_path: Path) -> None:
    content = "global_plugin /a.so\nplugin_load auth /b.so\nlistener 1883\nplugin_use auth\n"
    config = read_config([write(tmp_path / "m.conf", content)], version=(2, 1))
    paths = {
        Location(tmp_path / "m.conf", 1): "/proc/self/fd/7",
        Location(tmp_path / "m.conf", 2): "/proc/self/fd/8",
    }
    assert flatten(config, paths).split(b"\n")[1:3] == [
        b"global_plugin /proc/self/fd/7",
        b"plugin_load auth /proc/self/fd/8",
    ]


def test_flatten_rejects_path_for_other_line(tmp_path: Path) -> None:
    config = read_config([write(tmp_path / "m.conf", "listener 1883\n")])
    with pytest.raises(ValueError, match="is not a plugin line of this config"):
        flatten(config, {Location(tmp_path / "m.conf", 1): "/proc/self/fd/7"})


@pytest.mark.parametrize("path", ["", " /x.so", "/x.so\nlistener 1", "/x\0.so"])
def test_flatten_rejects_path_broker_would_change(tmp_path: Path, path: str) -> None:
    config = read_config([write(tmp_path / "m.conf", "plugin /a.so\n")])
    with pytest.raises(ValueError, match="would not reach the broker unchanged"):
        flatten(config, {Location(tmp_path / "m.conf", 1): path})


# Lines whose meaning would change


def test_flatten_accepts_debian_layout(tmp_path: Path) -> None:
    config = layout(
        tmp_path,
        "pid_file /run/mosquitto/mosquitto.pid\npersistence true\ninclude_dir {conf_d}\n",
        {
            "auth.conf": "allow_anonymous false\npassword_file /etc/mosquitto/passwd\n"
            "plugin /usr/lib/dynsec.so\nplugin_opt_config_file /var/lib/d.json\n",
            "listeners.conf": "listener 1883 127.0.0.1\nlistener 8883\ncafile /etc/ca.pem\n",
            "zz-more.conf": "acl_file /etc/mosquitto/acl\nallow_zero_length_clientid false\n",
        },
    )
    conf_d = tmp_path / "conf.d"
    assert flatten(config, {}).decode().splitlines() == [
        f"# {tmp_path / 'mosquitto.conf'}",
        "pid_file /run/mosquitto/mosquitto.pid",
        "persistence true",
        f"# {conf_d / 'auth.conf'}",
        "allow_anonymous false",
        "password_file /etc/mosquitto/passwd",
        "plugin /usr/lib/dynsec.so",
        "plugin_opt_config_file /var/lib/d.json",
        f"# {conf_d / 'listeners.conf'}",
        "listener 1883 127.0.0.1",
        "listener 8883",
        "cafile /etc/ca.pem",
        f"# {conf_d / 'zz-more.conf'}",
        "acl_file /etc/mosquitto/acl",
        "allow_zero_length_clientid false",
    ]


def test_flatten_accepts_listener_option_before_any_listener(
    tmp_path: Path,
) -> None:
    config = layout(tmp_path, "include_dir {conf_d}\n", {"tls.conf": "cafile /ca\nlistener 1\n"})
    assert b"cafile /ca\n" in flatten(config, {})


def test_flatten_rejects_included_security_option(
    tmp_path: Path,
) -> None:
    config = layout(
        tmp_path,
        "per_listener_settings true\nlistener 18830 127.0.0.1\ninclude_dir {conf_d}\n",
        {"p.conf": "password_file /etc/mosquitto/passwd\n"},
    )
    error = reject(config)
    main = tmp_path / "mosquitto.conf"
    assert str(error) == (
        f"{tmp_path / 'conf.d' / 'p.conf'}:1: password_file applies to the default listener "
        "because it comes before any listener line in its file, but in one file it would "
        f"apply to the listener at {main}:2: 'password_file /etc/mosquitto/passwd'; "
        "fix: move it after a listener line in its file, or into the main file"
    )


def test_flatten_rejects_included_listener_plugin(
    tmp_path: Path,
) -> None:
    config = layout(
        tmp_path,
        "per_listener_settings true\nlistener 1883\ninclude_dir {conf_d}\n",
        {"p.conf": "plugin /x.so\n"},
    )
    assert reject(config).reason.startswith("plugin applies to the default listener")


def test_flatten_accepts_included_global_plugin(
    tmp_path: Path,
) -> None:
    config = layout(tmp_path, "listener 1883\ninclude_dir {conf_d}\n", {"p.conf": "plugin /x.so\n"})
    assert b"plugin /x.so\n" in flatten(config, {})


def test_flatten_rejects_included_listener_option(
    tmp_path: Path,
) -> None:
    config = layout(
        tmp_path, "listener 1883\ninclude_dir {conf_d}\n", {"tls.conf": "cafile /ca\nlistener 1\n"}
    )
    error = reject(config)
    assert error.line == 1
    assert error.fix == "move it after a listener line in its file, or into the main file"


def test_flatten_rejects_main_line_after_include_with_listener(tmp_path: Path) -> None:
    config = layout(
        tmp_path,
        "include_dir {conf_d}\nmax_connections 10\nlistener 1883\n",
        {"a.conf": "listener 8883\n"},
    )
    error = reject(config)
    assert error.line == 2
    assert error.reason == (
        "max_connections applies to the default listener because it comes before any "
        f"listener line in its file, but in one file it would apply to the listener at "
        f"{tmp_path / 'conf.d' / 'a.conf'}:1"
    )


def test_flatten_rejects_plugin_option_after_include_with_plugin(tmp_path: Path) -> None:
    config = layout(
        tmp_path,
        "per_listener_settings true\nlistener 1883\nplugin /a.so\ninclude_dir {conf_d}\n"
        "plugin_opt_key value\n",
        {"b.conf": "listener 8883\nplugin /b.so\n"},
    )
    error = reject(config)
    main = tmp_path / "mosquitto.conf"
    assert error.line == 5
    assert error.reason == (
        f"plugin_opt_key applies to the plugin at {main}:3 when the files are read "
        "separately, but in one file it would apply to the plugin at "
        f"{tmp_path / 'conf.d' / 'b.conf'}:2"
    )
    assert error.fix == (
        "move this line above the include_dir line, or into the file of its plugin"
    )


def test_flatten_accepts_main_line_after_include_without_listener(tmp_path: Path) -> None:
    config = layout(
        tmp_path,
        "listener 1883\ninclude_dir {conf_d}\nmax_connections 10\n",
        {"a.conf": "log_type all\n"},
    )
    assert flatten(config, {}).endswith(b"max_connections 10\n")


def test_flatten_rejects_second_file_listener_option(tmp_path: Path) -> None:
    first = write(tmp_path / "a.conf", "listener 1883\n")
    second = write(tmp_path / "b.conf", "max_qos 1\nlistener 1884\n")
    error = reject(read_config([first, second]))
    assert error.path == str(second)
    assert error.reason.startswith("max_qos applies to the default listener")


def test_flatten_rejects_kpass_lines_from_two_files(tmp_path: Path) -> None:
    digest = "0123456789abcdef0123456789abcdef01234567"
    config = layout(
        tmp_path,
        f"listener 1\ntls_engine_kpass_sha1 {digest}\ninclude_dir {{conf_d}}\n",
        {"b.conf": f"listener 2\ntls_engine_kpass_sha1 {digest}\n"},
    )
    assert reject(config).reason.startswith(
        "Mosquitto 2.0 rejects a second tls_engine_kpass_sha1 line in one file"
    )


def test_flatten_output_reads_back_the_same(tmp_path: Path) -> None:
    config = layout(
        tmp_path,
        "per_listener_settings true\nlistener 1883\nplugin /a.so\ninclude_dir {conf_d}\n",
        {"b.conf": "listener 8883\nplugin /b.so\nplugin_opt_key v\n", "c.conf": "user m\n"},
    )
    again = read_config([write(tmp_path / "flat.conf", flatten(config, {}))])
    assert again.listeners == [
        type(listener)(listener.port, listener.address, again.listeners[index].option)
        for index, listener in enumerate(config.listeners)
    ]
    attached = [(plugin.path, plugin.listener and plugin.listener.port) for plugin in again.plugins]
    assert attached == [("/a.so", 1883), ("/b.so", 8883)]


# The real broker


def start_broker(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as output:
        return subprocess.Popen([MOSQUITTO, "-c", str(config)], stdout=output, stderr=output)


@pytest.mark.skipif(not Path(MOSQUITTO).exists(), reason="the mosquitto broker is not installed")
@pytest.mark.skipif(not DYNSEC_PLUGIN.exists(), reason="the dynamic security plugin is missing")
@pytest.mark.skipif(os.geteuid() != 0, reason="the broker must start as root to use safe_dir")
def test_flatten_broker_listens_where_original_does(
    safe_dir: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    main_port, included_port = free_port(), free_port()
    write(
        safe_dir / "conf.d" / "extra.conf",
        f"plugin {DYNSEC_PLUGIN}\nlistener {included_port} 127.0.0.1\n",
    )
    main = write(
        safe_dir / "mosquitto.conf",
        f"listener {main_port} 127.0.0.1\nallow_anonymous true\n"
        f"log_dest stderr\ninclude_dir {safe_dir / 'conf.d'}\n",
    )
    sealed_copy = safe_dir / "sealed-dynsec.so"
    shutil.copyfile(DYNSEC_PLUGIN, sealed_copy)
    os.chmod(sealed_copy, 0o644)
    config = read_config([main])
    flat = write(
        safe_dir / "flat.conf",
        flatten(config, {config.plugins[0].option.location: str(sealed_copy)}),
    )
    for config_file, log in ((main, safe_dir / "original.log"), (flat, safe_dir / "flat.log")):
        broker = start_broker(config_file, log)
        processes.append(broker)
        assert wait_for_port(main_port, broker), log.read_text()
        assert wait_for_port(included_port, broker), log.read_text()
        stop_process(broker)
    assert f"Loading plugin: {sealed_copy}" in (safe_dir / "flat.log").read_text()
    assert f"Loading plugin: {DYNSEC_PLUGIN}" in (safe_dir / "original.log").read_text()
