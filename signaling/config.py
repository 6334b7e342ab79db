"""Server configuration: defaults, then a TOML file, then ``SIGNALING_*`` variables, then flags.

Every option has one name used everywhere: the flag ``--sip-udp``, the TOML key ``sip_udp`` and
the variable ``SIGNALING_SIP_UDP``.  Bad configuration raises ``ConfigError`` with a one-line
message; the CLI prints it and exits with status 2.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import ipaddress
import os
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from protocols.diameter.allow import parse_allowed_peer

__all__ = ["OPTIONS", "Config", "ConfigError", "HostPort", "load_config",
           "parse_diameter_peer", "parse_hostport"]

HostPort = tuple[str, int]


class ConfigError(Exception):
    """A configuration value that cannot be used; the message is one line for the operator."""


def parse_hostport(text: str, name: str) -> HostPort | None:
    """``HOST:PORT`` or ``[V6]:PORT``; ``off``/``none``/empty disables the listener."""
    text = text.strip()
    if text.lower() in ("", "off", "none", "disabled"):
        return None
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{name}: expected HOST:PORT, got {text!r}")
    return host, int(port)


@dataclass(slots=True)
class Config:
    """Everything ``signaling serve`` can be told.  See ``OPTIONS`` for the documentation."""

    sip_udp: HostPort | None = ("0.0.0.0", 5060)
    sip_udp_private: HostPort | None = None
    sip_ws: HostPort | None = ("0.0.0.0", 5066)
    #: RFC 3261 §18: UAs and proxies MUST implement both UDP and TCP, so TCP listens by
    #: default, on the UDP listener's address and port unless told otherwise (``load_config``).
    sip_tcp: HostPort | None = ("0.0.0.0", 5060)
    sip_tls: HostPort | None = None
    sip_wss: HostPort | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_sni: list[str] = field(default_factory=list)
    tls_client_ca: str | None = None
    tls_require_client_cert: bool = False
    tls_trusted_peers: list[str] = field(default_factory=list)
    tcp_max_connections: int = 10_000
    tcp_max_per_source: int = 100
    tcp_idle_timeout: float = 300.0
    flow_timer: int = 120
    server_header: str = "signaling"
    admin: HostPort | None = ("127.0.0.1", 8081)
    admin_token: str | None = None
    admin_tls_cert: str | None = None
    admin_tls_key: str | None = None
    diameter: HostPort | None = ("0.0.0.0", 3868)
    domain: list[str] = field(default_factory=list)
    registry: str = "memory"
    database: str | None = None
    spool: str = "signaling-spool.jsonl"
    log_level: str = "info"
    log_format: str = "text"
    sip_parser: str = "c"
    node_id: str = ""
    advertise: str | None = None
    # A worker awaiting the registry holds its shard, so with Redis the workers bound the rate
    # (Little's law: rate <= workers / round trip).  At 12,000 REGISTER/s, round trips of a
    # few ms with bursts past 20 ms: 64 workers shed 11-35k of 60k, 256 none (bench_register_redis).
    # REGISTERs no longer take a worker (``SipCore.answer_at_once``): workers x queue_size
    # bounds how many wait for Redis instead; the proxy's requests still take one.
    workers: int = 256
    queue_size: int = 128
    retry_after: int = 5
    max_receive_delay: float = 0.25
    max_invite_delay: float = 0.1
    overload_target: float = 0.05
    overload_max_rate: float = 100_000.0
    overload_reject_share: float = 6.0
    overload_read_share: float = 1.2
    overload_drain: str = "on"
    overload_kernel_shed: str = "on"
    min_expires: int = 60
    max_expires: int = 7200
    default_expires: int = 3600
    max_bindings_per_aor: int = 10
    max_contact_length: int = 512
    binding_memory: int = 1024
    udp_answer_limit: int = 1300
    max_forks_per_host: int = 4
    max_transactions: int = 1_000_000
    max_dialogs: int = 200_000
    max_dialog_duration: float = 7200.0
    ring_timeout: float = 180.0
    relay: bool = False
    path_mode: str = "strict"
    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    udp_buffer: int = 8 * 1024 * 1024
    ws_max_size: int = 65_535
    ws_origins: list[str] = field(default_factory=list)
    ws_ping_interval: float = 20.0
    ws_ping_timeout: float = 20.0
    ws_max_connections: int = 50_000
    diameter_identity: str = "signaling.localdomain"
    diameter_realm: str = "localdomain"
    diameter_peer: list[str] = field(default_factory=list)
    diameter_watchdog: float = 30.0
    diameter_allow: list[str] = field(default_factory=list)
    diameter_max_peer_sessions: int = 100_000
    shutdown_timeout: float = 5.0
    trace_sample: float = 0.0
    otlp_endpoint: str = "http://127.0.0.1:4318/v1/traces"
    trace_plain_ids: bool = False
    processes: int = 1
    pid_file: str | None = None
    auth: str = "on"
    subscribers: str = "signaling-subscribers.jsonl"
    auth_algorithms: list[str] = field(default_factory=lambda: ["MD5"])
    auth_secret: str | None = None
    auth_nonce_lifetime: float = 300.0
    auth_nonce_table: int = 100_000
    trusted: list[str] = field(default_factory=list)
    pike_rate: float = 100.0
    pike_burst: int = 200
    pike_block: float = 60.0
    auth_fail_limit: int = 10
    auth_fail_window: float = 60.0
    auth_fail_block: float = 600.0
    guard_table: int = 100_000

    def served_domains(self) -> set[str]:
        """The domains this registrar/proxy is responsible for (RFC 3261 §10.3 step 1).

        Without ``--domain``, the server's own names and addresses: what SIP clients put in
        the Request-URI when they talk to a server by address.
        """
        if self.domain:
            return {d.lower() for d in self.domain}
        return self.own_names()

    def own_names(self) -> set[str]:
        """The names and addresses that mean this server itself ("myself", §16.4)."""
        names = {"localhost", "127.0.0.1", "::1", "[::1]"}
        with contextlib.suppress(OSError):
            names.add(socket.gethostname().lower())
        for hp in (self.sip_udp, self.sip_ws, self.sip_tcp, self.sip_tls, self.sip_wss):
            if hp is not None and hp[0] not in ("0.0.0.0", "::"):
                names.add(hp[0].lower())
        if self.advertise:
            names.add(self.advertise.lower())
        return names

    def advertised_host(self) -> str:
        """The host this node puts in Via and Record-Route (§16.6 steps 4 and 8): the
        configured one, else the first listener bound to a specific address, else loopback."""
        if self.advertise:
            return self.advertise
        for hp in (self.sip_udp, self.sip_ws):
            if hp is not None and hp[0] not in ("0.0.0.0", "::"):
                return hp[0]
        return "127.0.0.1"


# name -> (kind, help).  Kinds: hostport, str, optstr, int, float, bool, list.
OPTIONS: dict[str, tuple[str, str]] = {
    "sip_udp": ("hostport", "SIP over UDP listener (default 0.0.0.0:5060; 'off' disables)"),
    "sip_udp_private": ("hostport", "the server's own UDP port beside the listener (off by "
                                    "default; e.g. 0.0.0.0:5070): our Via, Record-Route and "
                                    "requests use it, so responses and in-dialog requests come "
                                    "back there, read first, never queued behind new requests "
                                    "(peers must reach it on the advertised host)"),
    "sip_ws": ("hostport", "SIP over WebSocket listener, RFC 7118 (default 0.0.0.0:5066)"),
    "sip_tcp": ("hostport", "SIP over TCP listener, RFC 3261 §18 (default: the sip_udp "
                            "address and port, 0.0.0.0:5060; 'off' disables)"),
    "sip_tls": ("hostport", "SIP over TLS listener, sips: (off by default; e.g. 0.0.0.0:5061; "
                            "needs tls_cert and tls_key)"),
    "sip_wss": ("hostport", "SIP over secure WebSocket listener, RFC 7118 (off by default; "
                            "e.g. 0.0.0.0:7443; needs tls_cert and tls_key)"),
    "tls_cert": ("optstr", "PEM certificate chain of the TLS and WSS listeners (reloaded on "
                           "SIGHUP and when the file changes)"),
    "tls_key": ("optstr", "PEM private key of tls_cert"),
    "tls_sni": ("list", "another certificate served by SNI, NAME=CERTFILE[:KEYFILE] "
                        "(repeatable; NAME may be *.domain)"),
    "tls_client_ca": ("optstr", "CA bundle to verify client certificates with (mutual TLS)"),
    "tls_require_client_cert": ("bool", "refuse TLS clients without a certificate signed by "
                                        "tls_client_ca"),
    "tls_trusted_peers": ("list", "client certificate identities (RFC 5922 §7.1) trusted as "
                                  "peers"),
    "tcp_max_connections": ("int", "bound on SIP connections per stream listener (TCP, TLS)"),
    "tcp_max_per_source": ("int", "bound on SIP connections from one IP address"),
    "tcp_idle_timeout": ("float", "seconds a SIP connection may stay silent before it is "
                                  "closed (clients keep it with CRLF pings, RFC 5626)"),
    "flow_timer": ("int", "seconds between the keep-alives an RFC 5626 client is asked for "
                          "(Flow-Timer); a UDP flow silent for twice as long has failed"),
    "server_header": ("str", "Server header of the answers this server makes; 'off' for "
                             "none (RFC 3261 §20.35)"),
    "admin": ("hostport", "REST admin API and /metrics (default 127.0.0.1:8081)"),
    "admin_token": ("optstr", "bearer token for /api/v1 (generated and printed if unset)"),
    "admin_tls_cert": ("optstr", "PEM certificate chain: serve the admin API and /metrics over "
                                 "HTTPS (reloaded when the file changes)"),
    "admin_tls_key": ("optstr", "PEM private key of admin_tls_cert"),
    "diameter": ("hostport", "Diameter over TCP listener (default 0.0.0.0:3868)"),
    "domain": ("list", "domain this server is registrar/proxy for (repeatable, or comma list)"),
    "registry": ("str", "'memory' (default) or redis://HOST:PORT[/DB] or redis+cluster://..."),
    "database": ("optstr", "PostgreSQL DSN for call and registration records (optional)"),
    "spool": ("str", "append-only spool file for records while PostgreSQL is unreachable"),
    "log_level": ("str", "debug, info, warning or error"),
    "log_format": ("str", "'text' (default) or 'json': one JSON object per line"),
    "sip_parser": ("str", "'c': the parser's C fast path when it is built (default); "
                          "'python': the pure-Python parser only"),
    "node_id": ("str", "this node's id in a shared registry (default: host:port)"),
    "advertise": ("optstr", "address put in Via and Record-Route (default: listener address)"),
    "workers": ("int", "worker tasks (and queue shards) handling new requests"),
    "queue_size": ("int", "bound of each worker's queue; full means 503 + Retry-After"),
    "retry_after": ("int", "Retry-After seconds sent with 503 when shedding load (overload "
                           "503s: stretched by the share refused, up to ten times)"),
    "max_receive_delay": ("float", "seconds a new request may wait in the kernel queue before "
                                   "it is no longer admitted: the server is behind (T1/2)"),
    "max_invite_delay": ("float", "the same for a new INVITE (refused 503 when late): an INVITE "
                                  "admitted late brings its call's work to a reader behind"),
    "overload_target": ("float", "seconds an admitted new request may wait before a worker "
                                 "takes it; beyond, the admission limit falls"),
    "overload_max_rate": ("float", "highest admission limit, new requests per second"),
    "overload_reject_share": ("float", "503s answered per admitted request under overload; "
                                       "beyond, refused requests are dropped unanswered"),
    "overload_read_share": ("float", "with --sip-udp-private: the listening socket is read at "
                                     "most this many times the admission limit, the rest is "
                                     "refused in C (--overload-drain) or left to the kernel "
                                     "(0: read all; 1.2 measured best with the drain, 2 "
                                     "without it)"),
    "overload_drain": ("str", "'on' (default): with --sip-udp-private and a read share, the "
                              "listening socket's excess beyond the read pace is read and "
                              "refused (503) in C; 'off': read and dropped unanswered in "
                              "Python (admitted work let through either way)"),
    "overload_kernel_shed": ("str", "'on' (default): with the drain, a storm's REGISTER "
                                    "transactions beyond ~1.5 times the server's capacity are "
                                    "dropped by a socket filter in the kernel, retransmissions "
                                    "and all (heavy sources first), counted, the share held "
                                    "until Timer F after the storm; 'ebpf': the same with an "
                                    "eBPF filter that remembers what it dropped, so their "
                                    "retransmissions stay dropped when the share comes down "
                                    "(falls back to 'on' if eBPF cannot load); 'off': all "
                                    "are read (see benchmarks/README.md)"),
    "min_expires": ("int", "shortest registration accepted (423 below it, RFC 3261 §10.3)"),
    "max_expires": ("int", "longest registration granted (longer requests are shortened)"),
    "default_expires": ("int", "registration time when the REGISTER names none"),
    "max_bindings_per_aor": ("int", "bindings one address-of-record may hold (503 beyond)"),
    "max_contact_length": ("int", "longest Contact URI (and To URI) a REGISTER may bind, in "
                                  "bytes (400 beyond)"),
    "binding_memory": ("int", "MiB the in-memory registry may spend on bindings; past it new "
                              "bindings get 503 + Retry-After (Redis: set its maxmemory)"),
    "udp_answer_limit": ("int", "largest REGISTER 200 sent over UDP with every binding; a "
                                "larger one lists the request's own contacts only"),
    "max_forks_per_host": ("int", "branches one INVITE may fork to one host (or WebSocket)"),
    "max_transactions": ("int", "bound of the SIP transaction table"),
    "max_dialogs": ("int", "bound of the dialog table"),
    "max_dialog_duration": ("float", "seconds after which the server ends a dialog with BYE"),
    "ring_timeout": ("float", "seconds an INVITE may ring before 408 (Timer C, RFC 3261 §16.6)"),
    "relay": ("bool", "relay requests for domains this server does not serve (else 403)"),
    "path_mode": ("str", "a REGISTER with Path (RFC 3327) from a UA without 'Supported: path': "
                         "'strict' (default, the RFC's recommended policy): the registrar "
                         "answers 420 and this server as edge proxy 421; 'lazy': the "
                         "registrar stores the Path without returning it, the edge adds its "
                         "Path anyway"),
    "t1": ("float", "SIP timer T1 in seconds (RFC 3261 §17)"),
    "t2": ("float", "SIP timer T2 in seconds"),
    "t4": ("float", "SIP timer T4 in seconds"),
    "udp_buffer": ("int", "UDP socket receive/send buffer size requested, in bytes"),
    "ws_max_size": ("int", "largest WebSocket message accepted, in bytes"),
    "ws_origins": ("list", "allowed WebSocket Origin values (default: any)"),
    "ws_ping_interval": ("float", "seconds between WebSocket pings"),
    "ws_ping_timeout": ("float", "seconds to wait for a pong before closing"),
    "ws_max_connections": ("int", "bound on concurrent WebSocket connections"),
    "diameter_identity": ("str", "Diameter Origin-Host of this server"),
    "diameter_realm": ("str", "Diameter Origin-Realm of this server"),
    "diameter_peer": ("list", "Diameter peer to connect to as initiator (RFC 6733 §5.6), "
                              "ORIGIN-HOST@HOST:PORT (repeatable)"),
    "diameter_watchdog": ("float", "Diameter watchdog interval Tw in seconds (RFC 3539, >= 6)"),
    "diameter_allow": ("list", "Diameter peer admitted at CER, ORIGIN-HOST[@ADDR[/PREFIX]], "
                               "realm:REALM[@...], *@ADDR[/PREFIX] or 'any' (repeatable); "
                               "others get 3010. Unset: loopback and --diameter-peer peers only"),
    "diameter_max_peer_sessions": ("int", "Credit-Control sessions one Diameter peer may hold "
                                          "open on this node (beyond: 3004)"),
    "shutdown_timeout": ("float", "seconds to finish in-flight transactions on SIGTERM"),
    "trace_sample": ("float", "share of new calls and registrations traced with OpenTelemetry, "
                              "0 to 1 (default 0: tracing off, no cost)"),
    "otlp_endpoint": ("str", "OTLP/HTTP traces endpoint spans are exported to"),
    "trace_plain_ids": ("bool", "export Call-IDs and AORs as they are (default: keyed hashes)"),
    "processes": ("int", "worker processes sharing the ports (default 1: a single process, no "
                         "supervisor; 0: one per CPU this process may use)"),
    "pid_file": ("optstr", "file the supervisor writes its pid to, for 'signaling reload'"),
    "auth": ("str", "'on' (default): digest authentication of REGISTER (401) and of calls from "
                    "served domains (407); 'off': an open registrar and proxy (lab use only)"),
    "subscribers": ("str", "subscriber store: a file of HA1 hashes (default "
                           "signaling-subscribers.jsonl) or a postgresql:// DSN"),
    "auth_algorithms": ("list", "digest algorithms challenged with, sent strongest first "
                                "(RFC 8760): any of SHA-512-256, SHA-256, MD5 (default MD5: "
                                "many clients fail on a first challenge they cannot do)"),
    "auth_secret": ("optstr", "nonce HMAC secret, the same on every node (default: random "
                              "per process)"),
    "auth_nonce_lifetime": ("float", "seconds a nonce is good for; older ones get stale=true"),
    "auth_nonce_table": ("int", "nonces whose count is remembered (replay protection, RFC "
                                "7616 §3.4); it must hold the new authentications of one "
                                "nonce tick (4 s) plus a client's answer time, so the default "
                                "100000 covers about 12,000 new registrations or calls per "
                                "second (clients answering within 4 s; 25,000/s for prompt "
                                "ones): beyond that, fresh nonces are evicted before use and "
                                "answered stale=true"),
    "trusted": ("list", "source addresses or networks that need no authentication and are "
                        "never rate limited (trunks, gateways; repeatable)"),
    "pike_rate": ("float", "messages per second one source may send; over it the source is "
                           "blocked (0 disables)"),
    "pike_burst": ("int", "messages one source may send in a burst"),
    "pike_block": ("float", "seconds a flooding source stays blocked (dropped, not answered)"),
    "auth_fail_limit": ("int", "failed authentications per source or per user that block the "
                               "source"),
    "auth_fail_window": ("float", "seconds in which auth_fail_limit failures are counted"),
    "auth_fail_block": ("float", "seconds a source guessing passwords stays blocked"),
    "guard_table": ("int", "sources tracked by the rate limit and failure counters (bound)"),
}

_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def _coerce(name: str, kind: str, value: Any) -> Any:
    try:
        if kind == "hostport":
            return parse_hostport(str(value), name)
        if kind == "int":
            if isinstance(value, bool):
                raise ValueError(value)
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "bool":
            if isinstance(value, bool):
                return value
            low = str(value).strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(value)
        if kind == "list":
            items = value if isinstance(value, list) else str(value).split(",")
            return [str(i).strip() for i in items if str(i).strip()]
        if kind == "optstr":
            return None if value in (None, "") else str(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: invalid value {value!r} (expected {kind})") from None


def _from_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    out = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in OPTIONS:
            raise ConfigError(f"config file {path}: unknown option {key!r}")
        out[name] = value
    return out


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in env.items():
        if key.startswith("SIGNALING_") and key != "SIGNALING_CONFIG":
            name = key[len("SIGNALING_"):].lower()
            if name in OPTIONS:
                out[name] = value
            elif not name.startswith("test_"):
                raise ConfigError(f"environment: unknown variable {key}")
    return out


def load_config(
    flags: Mapping[str, Any],
    config_file: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Merge the sources (later wins) and validate."""
    env = os.environ if env is None else env
    merged: dict[str, Any] = {}
    path = config_file or env.get("SIGNALING_CONFIG")
    if path:
        merged.update(_from_toml(path))
    merged.update(_from_env(env))
    merged.update({k: v for k, v in flags.items() if v is not None})
    values = {name: _coerce(name, OPTIONS[name][0], v) for name, v in merged.items()}
    if "sip_tcp" not in values and "sip_udp" in values:
        # RFC 3261 §18: SIP over TCP beside UDP on the same address and port (5060 both, as
        # clients and DNS SRV records expect), unless sip_tcp is given on its own.
        values["sip_tcp"] = values["sip_udp"]
    cfg = Config(**values)
    _validate(cfg)
    return cfg


def _validate(cfg: Config) -> None:
    checks: list[tuple[bool, str]] = [
        (cfg.log_level.lower() in _LOG_LEVELS,
         f"log_level: must be one of {', '.join(_LOG_LEVELS)}"),
        (cfg.log_format in ("text", "json"), "log_format: must be 'text' or 'json'"),
        (cfg.sip_parser in ("c", "python"), "sip_parser: must be 'c' or 'python'"),
        (cfg.registry == "memory"
         or cfg.registry.startswith(("redis://", "rediss://", "redis+cluster://")),
         f"registry: expected 'memory' or redis://..., got {cfg.registry!r}"),
        (cfg.database is None or cfg.database.startswith(("postgres://", "postgresql://")),
         f"database: expected postgresql://..., got {cfg.database!r}"),
        (1 <= cfg.workers <= 4096, "workers: must be between 1 and 4096"),
        (1 <= cfg.queue_size <= 1_000_000, "queue_size: must be between 1 and 1000000"),
        (0 <= cfg.retry_after <= 86_400, "retry_after: must be between 0 and 86400"),
        (cfg.max_receive_delay > 0, "max_receive_delay: must be positive"),
        (cfg.max_invite_delay > 0, "max_invite_delay: must be positive"),
        (cfg.overload_target > 0, "overload_target: must be positive"),
        (cfg.overload_max_rate >= 1, "overload_max_rate: must be at least 1"),
        (cfg.overload_reject_share >= 0, "overload_reject_share: must not be negative"),
        (cfg.overload_read_share >= 0, "overload_read_share: must not be negative"),
        (1 <= cfg.min_expires <= cfg.default_expires <= cfg.max_expires,
         "expires: need 1 <= min_expires <= default_expires <= max_expires"),
        (0 < cfg.t1 <= cfg.t2 and cfg.t4 > 0, "timers: need 0 < t1 <= t2 and t4 > 0"),
        (cfg.max_transactions >= 1 and cfg.max_dialogs >= 1, "bounds: must be positive"),
        (cfg.max_bindings_per_aor >= 1 and cfg.max_forks_per_host >= 1
         and cfg.binding_memory >= 1, "bounds: must be positive"),
        (cfg.max_contact_length >= 64, "max_contact_length: must be at least 64"),
        (cfg.udp_answer_limit >= 512, "udp_answer_limit: must be at least 512"),
        (cfg.ws_max_size >= 1024, "ws_max_size: must be at least 1024"),
        (cfg.shutdown_timeout >= 0, "shutdown_timeout: must not be negative"),
        (0.0 <= cfg.trace_sample <= 1.0, "trace_sample: must be between 0 and 1"),
        (cfg.trace_sample == 0 or importlib.util.find_spec("opentelemetry.sdk") is not None,
         "trace_sample: tracing needs the 'tracing' extra: pip install 'signaling[tracing]'"),
        (0 <= cfg.processes <= 1024, "processes: must be between 0 and 1024"),
        (cfg.tcp_max_connections >= 1 and cfg.tcp_max_per_source >= 1,
         "tcp_max_connections, tcp_max_per_source: must be positive"),
        (cfg.tcp_idle_timeout > 0, "tcp_idle_timeout: must be positive"),
        (1 <= cfg.flow_timer <= 3600, "flow_timer: must be between 1 and 3600 seconds"),
        (all(c.isprintable() for c in cfg.server_header) and len(cfg.server_header) <= 200,
         "server_header: must be printable text of at most 200 characters"),
        (cfg.auth in ("on", "off"), "auth: must be 'on' or 'off'"),
        (cfg.path_mode in ("strict", "lazy"), "path_mode: must be 'strict' or 'lazy'"),
        (cfg.overload_drain in ("on", "off"), "overload_drain: must be 'on' or 'off'"),
        (cfg.overload_kernel_shed in ("on", "off", "ebpf"),
         "overload_kernel_shed: must be 'on', 'off' or 'ebpf'"),
        (bool(cfg.auth_algorithms)
         and all(a.upper() in ("MD5", "SHA-256", "SHA-512-256") for a in cfg.auth_algorithms),
         "auth_algorithms: choose from SHA-512-256, SHA-256, MD5"),
        (cfg.auth_secret is None or len(cfg.auth_secret) >= 16,
         "auth_secret: at least 16 characters"),
        (cfg.auth_nonce_lifetime > 0 and cfg.auth_nonce_table >= 1,
         "auth_nonce_lifetime and auth_nonce_table: must be positive"),
        (cfg.pike_rate >= 0 and cfg.pike_burst >= 1 and cfg.pike_block >= 0,
         "pike: need pike_rate >= 0, pike_burst >= 1, pike_block >= 0"),
        (cfg.auth_fail_limit >= 1 and cfg.auth_fail_window > 0 and cfg.auth_fail_block >= 0,
         "auth_fail: need auth_fail_limit >= 1, auth_fail_window > 0, auth_fail_block >= 0"),
        (cfg.guard_table >= 1, "guard_table: must be positive"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    for peer in cfg.diameter_peer:
        parse_diameter_peer(peer)
    for entry in cfg.diameter_allow:
        try:
            parse_allowed_peer(entry)
        except ValueError as exc:
            raise ConfigError(f"diameter_allow: {exc}") from None
    if cfg.diameter_max_peer_sessions < 1:
        raise ConfigError("diameter_max_peer_sessions: must be positive")
    for net in cfg.trusted:
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            raise ConfigError(f"trusted: expected an address or network, got {net!r}") from None
    if cfg.diameter_watchdog < 6:
        raise ConfigError("diameter_watchdog: must be at least 6 seconds (RFC 3539 §3.4.1)")
    _validate_tls(cfg)
    if cfg.sip_udp_private is not None and cfg.sip_udp is None:
        raise ConfigError("sip_udp_private: needs sip_udp")
    for hp_name in ("sip_udp", "sip_udp_private", "sip_ws", "sip_tcp", "sip_tls", "sip_wss",
                    "admin", "diameter"):
        hp = getattr(cfg, hp_name)
        if hp is not None:
            _check_host(hp_name, hp[0])


def _validate_tls(cfg: Config) -> None:
    """The TLS options hang together; the files themselves are read by ``signaling.tls``."""
    users = [n for n in ("sip_tls", "sip_wss") if getattr(cfg, n) is not None]
    if users and not (cfg.tls_cert and cfg.tls_key):
        raise ConfigError(f"{users[0]}: needs tls_cert and tls_key")
    if (cfg.tls_cert is None) != (cfg.tls_key is None):
        raise ConfigError("tls_cert and tls_key: give both or neither")
    if (cfg.admin_tls_cert is None) != (cfg.admin_tls_key is None):
        raise ConfigError("admin_tls_cert and admin_tls_key: give both or neither")
    if cfg.tls_require_client_cert and not cfg.tls_client_ca:
        raise ConfigError("tls_require_client_cert: needs tls_client_ca")
    if cfg.tls_trusted_peers and not cfg.tls_client_ca:
        raise ConfigError("tls_trusted_peers: needs tls_client_ca to verify them with")


def parse_diameter_peer(text: str) -> tuple[str, str, int]:
    """``ORIGIN-HOST@HOST:PORT`` -> (origin host, address, port)."""
    identity, at, address = text.partition("@")
    hp = parse_hostport(address, "diameter_peer") if at and identity else None
    if hp is None:
        raise ConfigError(f"diameter_peer: expected ORIGIN-HOST@HOST:PORT, got {text!r}")
    return identity, hp[0], hp[1]


def _check_host(name: str, host: str) -> None:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not host.replace("-", "").replace(".", "").isalnum():
            raise ConfigError(f"{name}: invalid host {host!r}") from None


def describe(cfg: Config) -> dict[str, Any]:
    """The effective configuration, secrets masked (for the admin API and the start log)."""
    out = dataclasses.asdict(cfg)
    for secret in ("admin_token", "auth_secret"):
        if out.get(secret):
            out[secret] = "***"
    for dsn in ("database", "subscribers"):
        if out.get(dsn):
            out[dsn] = _mask_dsn(out[dsn])
    return out


def _mask_dsn(dsn: str) -> str:
    head, at, tail = dsn.rpartition("@")
    if not at or ":" not in head.split("//", 1)[-1]:
        return dsn
    scheme, _, userpass = head.partition("//")
    user = userpass.split(":", 1)[0]
    return f"{scheme}//{user}:***@{tail}"
