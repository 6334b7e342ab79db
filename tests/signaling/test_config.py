"""Configuration: defaults < TOML < SIGNALING_* < flags, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from protocols.diameter.allow import AllowedPeer
from signaling.config import (
    Config,
    ConfigError,
    describe,
    load_config,
    parse_diameter_peer,
    parse_hostport,
)
from signaling.diameter.config import diameter_config


def test_defaults_match_the_documented_listeners() -> None:
    cfg = load_config({}, env={})
    assert cfg.sip_udp == ("0.0.0.0", 5060)
    assert cfg.sip_ws == ("0.0.0.0", 5066)
    assert cfg.admin == ("127.0.0.1", 8081)  # never the SIP interface by default
    assert cfg.diameter == ("0.0.0.0", 3868)
    assert cfg.registry == "memory"
    assert cfg.database is None
    # RFC 3261 §18: UAs and proxies MUST implement both UDP and TCP: TCP on UDP's port.
    assert cfg.sip_tcp == ("0.0.0.0", 5060)
    assert cfg.sip_tls is None and cfg.sip_wss is None
    assert cfg.server_header == "signaling"


def test_tcp_follows_udp_unless_given() -> None:
    """Without sip_tcp, TCP listens where UDP does (and not when UDP is off); given, its own."""
    assert load_config({"sip_udp": "127.0.0.1:5070"}, env={}).sip_tcp == ("127.0.0.1", 5070)
    assert load_config({"sip_udp": "off"}, env={}).sip_tcp is None
    env = {"SIGNALING_SIP_UDP": "10.0.0.1:5080"}
    assert load_config({}, env=env).sip_tcp == ("10.0.0.1", 5080)
    assert load_config({"sip_tcp": "off"}, env=env).sip_tcp is None
    assert load_config({"sip_tcp": "127.0.0.1:5090", "sip_udp": "127.0.0.1:5070"},
                       env={}).sip_tcp == ("127.0.0.1", 5090)


def test_precedence_toml_env_flags(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('workers = 3\nqueue-size = 10\ndomain = ["a.example"]\nlog_level = "debug"\n')
    env = {"SIGNALING_QUEUE_SIZE": "20", "SIGNALING_RELAY": "yes"}
    cfg = load_config({"log_level": "warning"}, config_file=str(toml), env=env)
    assert cfg.workers == 3          # TOML
    assert cfg.queue_size == 20      # env beats TOML
    assert cfg.relay is True
    assert cfg.log_level == "warning"  # flag beats everything
    assert cfg.domain == ["a.example"]
    assert cfg.served_domains() == {"a.example"}


@pytest.mark.parametrize(("flags", "message"), [
    ({"workers": "0"}, "workers"),
    ({"sip_udp": "nonsense"}, "sip_udp"),
    ({"registry": "mysql://x"}, "registry"),
    ({"database": "redis://x"}, "database"),
    ({"min_expires": "100", "default_expires": "50"}, "expires"),
    ({"t1": "5", "t2": "1"}, "timers"),
    ({"log_level": "loud"}, "log_level"),
    ({"sip_parser": "rust"}, "sip_parser"),
    ({"queue_size": "many"}, "queue_size"),
    ({"sip_tls": "0.0.0.0:5061"}, "sip_tls: needs tls_cert and tls_key"),
    ({"sip_wss": "0.0.0.0:7443", "tls_cert": "c.pem"}, "sip_wss: needs tls_cert and tls_key"),
    ({"tls_cert": "c.pem"}, "give both or neither"),
    ({"admin_tls_key": "k.pem"}, "admin_tls_cert and admin_tls_key: give both or neither"),
    ({"tls_require_client_cert": "yes"}, "tls_require_client_cert: needs tls_client_ca"),
    ({"tls_trusted_peers": "a.example"}, "tls_trusted_peers: needs tls_client_ca"),
    ({"sip_tcp": "host name:5060"}, "sip_tcp"),
    ({"tcp_max_per_source": "0"}, "tcp_max_per_source"),
    ({"tcp_idle_timeout": "0"}, "tcp_idle_timeout"),
    ({"max_invite_delay": "0"}, "max_invite_delay"),
    ({"server_header": "a\r\nX-Injected: 1"}, "server_header"),
    ({"auth": "maybe"}, "auth"),
    ({"auth_algorithms": "SHA-1"}, "auth_algorithms"),
    ({"auth_secret": "short"}, "auth_secret"),
    ({"trusted": "10.0.0.0/33"}, "trusted"),
    ({"pike_rate": "-1"}, "pike"),
    ({"auth_fail_limit": "0"}, "auth_fail"),
])
def test_bad_values_are_one_line_errors(flags: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(flags, env={})
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_stream_and_tls_options_from_each_source(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('sip-tls = "127.0.0.1:5061"\ntls-cert = "/c.pem"\ntls-key = "/k.pem"\n'
                    'tls-sni = ["a.example=/a.pem"]\n')
    env = {"SIGNALING_SIP_WSS": "127.0.0.1:7443", "SIGNALING_TCP_IDLE_TIMEOUT": "60",
           "SIGNALING_TLS_CLIENT_CA": "/ca.pem", "SIGNALING_TLS_TRUSTED_PEERS": "a.example,b"}
    cfg = load_config({"sip_tcp": "127.0.0.1:5070", "server_header": "off"},
                      config_file=str(toml), env=env)
    assert cfg.sip_tcp == ("127.0.0.1", 5070) and cfg.sip_tls == ("127.0.0.1", 5061)
    assert cfg.sip_wss == ("127.0.0.1", 7443) and cfg.tcp_idle_timeout == 60.0
    assert (cfg.tls_cert, cfg.tls_key, cfg.tls_sni) == ("/c.pem", "/k.pem", ["a.example=/a.pem"])
    assert cfg.tls_client_ca == "/ca.pem" and cfg.tls_trusted_peers == ["a.example", "b"]
    assert cfg.server_header == "off"


def test_unknown_keys_are_errors(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text("wrokers = 3\n")
    with pytest.raises(ConfigError, match="unknown option"):
        load_config({}, config_file=str(toml), env={})
    with pytest.raises(ConfigError, match="SIGNALING_WROKERS"):
        load_config({}, env={"SIGNALING_WROKERS": "1"})
    with pytest.raises(ConfigError, match="config file"):
        load_config({}, config_file=str(tmp_path / "missing.toml"), env={})


def test_hostport_forms() -> None:
    assert parse_hostport("[::1]:5060", "x") == ("::1", 5060)
    assert parse_hostport("off", "x") is None
    with pytest.raises(ConfigError):
        parse_hostport("127.0.0.1:99999", "x")


def test_describe_masks_secrets() -> None:
    cfg = Config(admin_token="s3cret", database="postgresql://u:pw@db/x",
                 auth_secret="0123456789abcdef-nonce-key",
                 subscribers="postgresql://u:pw2@db/subs")
    out = describe(cfg)
    assert out["admin_token"] == "***"
    assert out["database"] == "postgresql://u:***@db/x"
    assert out["auth_secret"] == "***"
    assert out["subscribers"] == "postgresql://u:***@db/subs"


def test_authentication_is_on_by_default_and_thresholds_come_from_every_source(
        tmp_path: Path) -> None:
    cfg = load_config({}, env={})
    assert cfg.auth == "on" and cfg.auth_algorithms == ["MD5"] and cfg.pike_rate > 0
    toml = tmp_path / "c.toml"
    toml.write_text('trusted = ["192.0.2.0/24"]\nauth_fail_limit = 5\n')
    cfg = load_config({"pike_rate": "0", "auth": "off"}, config_file=str(toml),
                      env={"SIGNALING_AUTH_ALGORITHMS": "SHA-256,MD5"})
    assert (cfg.auth, cfg.pike_rate, cfg.auth_fail_limit) == ("off", 0.0, 5)
    assert cfg.trusted == ["192.0.2.0/24"] and cfg.auth_algorithms == ["SHA-256", "MD5"]


def test_own_names_always_include_loopback() -> None:
    cfg = load_config({"domain": ["example.com"]}, env={})
    assert "127.0.0.1" in cfg.own_names()
    assert "127.0.0.1" not in cfg.served_domains()


def test_diameter_peer_option() -> None:
    cfg = load_config({"diameter_peer": ["hss.example@10.0.0.5:3868"]}, env={})
    assert parse_diameter_peer(cfg.diameter_peer[0]) == ("hss.example", "10.0.0.5", 3868)
    with pytest.raises(ConfigError, match="diameter_peer"):
        load_config({"diameter_peer": ["10.0.0.5:3868"]}, env={})
    with pytest.raises(ConfigError, match="diameter_watchdog"):
        load_config({"diameter_watchdog": "2"}, env={})


def test_diameter_allow_option_from_flag_toml_and_env(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('diameter_allow = ["pcef1@10.0.0.5", "realm:ops.example"]\n')
    assert load_config({}, str(toml), env={}).diameter_allow == [
        "pcef1@10.0.0.5", "realm:ops.example"]
    env = {"SIGNALING_DIAMETER_ALLOW": "pcef2@10.0.0.6,*@10.1.0.0/16"}
    assert load_config({}, str(toml), env=env).diameter_allow == [
        "pcef2@10.0.0.6", "*@10.1.0.0/16"]
    cfg = load_config({"diameter_allow": ["any"], "diameter_max_peer_sessions": "50"},
                      str(toml), env=env)
    assert cfg.diameter_allow == ["any"] and cfg.diameter_max_peer_sessions == 50
    dc = diameter_config(cfg)
    assert dc.allowed_peers == (AllowedPeer(),) and dc.max_peer_sessions == 50
    assert diameter_config(load_config({}, env={})).allowed_peers is None  # the default
    with pytest.raises(ConfigError, match="diameter_allow"):
        load_config({"diameter_allow": ["pcef1@nowhere"]}, env={})
    with pytest.raises(ConfigError, match="diameter_max_peer_sessions"):
        load_config({"diameter_max_peer_sessions": "0"}, env={})
