"""Configuration of the Diameter side of the server."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from protocols.diameter.allow import AllowedPeer, parse_allowed_peer
from protocols.diameter.capabilities import Capabilities
from protocols.diameter.constants import AppId
from protocols.diameter.creditcontrol import DEFAULT_TCC, CreditPolicy, QuotaPolicy, Units
from protocols.diameter.dictionary import Dictionary, base_dictionary
from protocols.diameter.doic import DEFAULT_INTERVAL as DOIC_INTERVAL
from protocols.diameter.watchdog import DEFAULT_TW, MIN_TW
from signaling.config import Config, parse_diameter_peer

__all__ = [
    "DEFAULT_CER_TIMEOUT",
    "DEFAULT_GRANT",
    "DEFAULT_MAX_PEER_SESSIONS",
    "DEFAULT_PORT",
    "DEFAULT_QUEUE_SIZE",
    "DEFAULT_RESERVED_CONNECTIONS",
    "DEFAULT_TC",
    "DEFAULT_WORKERS",
    "MAX_CONNECTIONS",
    "DiameterConfig",
    "diameter_config",
]

# RFC 6733 §2.1: the IANA port for Diameter over TCP.
DEFAULT_PORT = 3868
# Worker tasks (each with its own queue shard, so one session's requests stay in order).  Work
# is CPU-bound on one event loop, so more workers only help while a store call is in flight:
# 8 covers a Redis round trip at the target rate.
DEFAULT_WORKERS = 8
# Requests waiting for a worker, all shards together.  At 15,000 answers/s this is ~270 ms of
# backlog: beyond it a peer is better told DIAMETER_TOO_BUSY (§7.1.3) and can fail over than
# made to wait.
DEFAULT_QUEUE_SIZE = 4096
# Open TCP connections.  Diameter peers are few and long-lived (a handful of gateways per
# server); 1024 leaves ample room and bounds what a connection flood can make us hold.
MAX_CONNECTIONS = 1024
# Slots of MAX_CONNECTIONS only our own connections and allowed addresses may take, so a flood
# of connections from elsewhere leaves room for the configured peers (a few dozen per node).
DEFAULT_RESERVED_CONNECTIONS = 64
# A peer sends its CER right after connecting (§5.6.1); a connection silent this long is not a
# peer.  Short, so idle sockets cannot hold connection slots (issue 20).
DEFAULT_CER_TIMEOUT = 5.0
# Tc (RFC 6733 §2.1): how long to wait before reconnecting a configured peer; the RFC
# recommends 30 seconds.
DEFAULT_TC = 30.0
# The built-in policy's grant per request: an hour of time or 10 MB, the order of magnitude
# online charging systems hand out per reservation (RFC 4006 §5.1.1 leaves it to policy).
DEFAULT_GRANT = Units(cc_time=3600, total_octets=10_000_000)
# Credit-Control sessions one peer may keep open on this node.  A gateway's share of one
# server's sessions is in the tens of thousands; bounded per peer, one peer (or an impostor)
# cannot fill the session store every peer shares.
DEFAULT_MAX_PEER_SESSIONS = 100_000


@dataclass(frozen=True, slots=True)
class DiameterConfig:
    """Everything the Diameter server needs; defaults give a working Credit-Control server."""

    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    origin_host: str = "signaling.localdomain"
    origin_realm: str = "localdomain"
    # Host-IP-Address values for the CEA (§5.3.5); empty: the listener address, or 127.0.0.1
    # when listening on a wildcard.
    host_ip_addresses: tuple[str, ...] = ()
    vendor_id: int = 0
    product_name: str = "signaling"
    firmware_revision: int = 1
    auth_application_ids: tuple[int, ...] = (AppId.CREDIT_CONTROL,)
    acct_application_ids: tuple[int, ...] = ()
    watchdog_interval: float = DEFAULT_TW
    workers: int = DEFAULT_WORKERS
    queue_size: int = DEFAULT_QUEUE_SIZE
    max_connections: int = MAX_CONNECTIONS
    tcc: float = DEFAULT_TCC
    # The built-in policy's grant per request and per-session quota (None: unlimited).
    grant: Units = DEFAULT_GRANT
    quota: Units | None = None
    # A user policy replaces the built-in one; a user dictionary extends the base one.
    policy: CreditPolicy | None = None
    dictionary: Dictionary | None = None
    origin_state_id: int | None = None
    # Peers this server connects to itself (the initiator role of RFC 6733 §5.6), as
    # (Origin-Host, address, port); when a peer also connects to us the election decides.
    connect_peers: tuple[tuple[str, str, int], ...] = ()
    reconnect_interval: float = DEFAULT_TC
    # How long a new connection may stay silent before its CER (the §5.6 Timeout event).
    cer_timeout: float = DEFAULT_CER_TIMEOUT
    # Peers admitted at CER (allow.py); None: loopback and ``connect_peers`` only.
    allowed_peers: tuple[AllowedPeer, ...] | None = None
    # Connection slots kept for our own connections and allowed addresses (issue 20).
    reserved_connections: int = DEFAULT_RESERVED_CONNECTIONS
    # DOIC (RFC 7683) both ways, and how often the reduction asked of peers may change.
    doic: bool = True
    doic_interval: float = DOIC_INTERVAL
    # Credit-Control sessions one peer may hold open on this node (issue 20).
    max_peer_sessions: int = DEFAULT_MAX_PEER_SESSIONS

    def __post_init__(self) -> None:
        # Fail at start-up rather than at the first CER or request.
        if self.watchdog_interval < MIN_TW:
            raise ValueError(f"watchdog_interval below the RFC 3539 minimum of {MIN_TW} s")
        if not 0 <= self.reserved_connections < self.max_connections:
            raise ValueError("reserved_connections must be below max_connections")
        if self.workers < 1 or self.queue_size < self.workers:
            raise ValueError("need at least one worker and one queue slot per worker")
        if min(self.max_connections, self.tcc, self.reconnect_interval, self.cer_timeout,
               self.max_peer_sessions, self.doic_interval) <= 0:
            raise ValueError("max_connections, tcc, reconnect_interval, cer_timeout, "
                             "max_peer_sessions and doic_interval must be positive")

    def capabilities(self) -> Capabilities:
        addresses = self.host_ip_addresses or (
            (self.host,) if self.host not in ("0.0.0.0", "::", "") else ("127.0.0.1",))
        return Capabilities(
            origin_host=self.origin_host,
            origin_realm=self.origin_realm,
            host_ip_addresses=tuple(ipaddress.ip_address(a) for a in addresses),
            vendor_id=self.vendor_id,
            product_name=self.product_name,
            auth_application_ids=frozenset(self.auth_application_ids),
            acct_application_ids=frozenset(self.acct_application_ids),
            firmware_revision=self.firmware_revision,
            origin_state_id=self.origin_state_id,
        )

    def credit_policy(self) -> CreditPolicy:
        return self.policy if self.policy is not None else QuotaPolicy(self.grant, self.quota)

    def make_dictionary(self) -> Dictionary:
        return self.dictionary if self.dictionary is not None else base_dictionary()


def diameter_config(cfg: Config) -> DiameterConfig:
    """The Diameter node's settings from the server's one configuration (flags, TOML, env)."""
    assert cfg.diameter is not None
    return DiameterConfig(
        host=cfg.diameter[0], port=cfg.diameter[1], origin_host=cfg.diameter_identity,
        origin_realm=cfg.diameter_realm, watchdog_interval=cfg.diameter_watchdog,
        connect_peers=tuple(parse_diameter_peer(p) for p in cfg.diameter_peer),
        allowed_peers=(tuple(parse_allowed_peer(a) for a in cfg.diameter_allow)
                       if cfg.diameter_allow else None),
        max_peer_sessions=cfg.diameter_max_peer_sessions)
