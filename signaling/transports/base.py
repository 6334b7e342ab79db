"""What every SIP transport is to the rest of the server, and the set of them a node runs.

A transport is an object (the h11/aioquic split: the protocol layer never names a socket):
its name (the ``Peer.transport`` key and metric label), whether it is reliable (it picks the
transaction timers, RFC 3261 §17.1.1.2 / §17.1.2.2: no retransmissions over a reliable one),
the token it puts in Via (§18.1.1, RFC 7118 §5.2), the host and port it advertises, and
``send``.  The proxy asks the transport of a hop for its Via and Record-Route, so adding TCP,
TLS or WSS is one new module that registers its object in ``Transports``.

``Transports`` is given to ``SipCore`` at construction and filled as the listeners bind (a test
binds port 0 and only then knows the port that goes into Via and Record-Route).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple, Protocol

from protocols.sip.message import NameAddr, Params, SipURI, Via, render_params

__all__ = ["Peer", "Transport", "TransportInfo", "Transports"]


class Peer(NamedTuple):
    """Where a message came from and where its answers go back (§18.2.2, RFC 7118 §5).

    A named tuple, not a dataclass: one is built per datagram, and a tuple is several times
    cheaper to create while just as immutable and hashable.  ``transport`` is a transport's
    name; ``conn_id`` names the connection of a connection-oriented transport.
    """

    transport: str
    host: str
    port: int
    conn_id: str | None = None


class Transport(Protocol):
    """One SIP transport of this node (see the module docstring)."""

    @property
    def info(self) -> TransportInfo: ...

    def send(self, data: bytes, peer: Peer) -> bool:
        """Queue ``data`` for ``peer``; False when it cannot go (connection gone, ...)."""
        ...

    def holds(self, conn_id: str) -> bool:
        """This transport holds the connection ``conn_id`` (a flow, RFC 5626); never for UDP."""
        ...


class TransportInfo:
    """The protocol-facing description of a transport: everything but the socket.

    Via and Record-Route values are immutable (message.py) and built once per transport, so
    every forwarded request shares them.
    """

    __slots__ = ("_via_head", "host", "name", "port", "ports", "record_route", "reliable",
                 "uri_transport", "via_port", "via_token")

    def __init__(self, name: str, *, reliable: bool, via_token: str, host: str, port: int,
                 uri_transport: str | None, via_port: int | None = None,
                 record_route_port: int | None = None) -> None:
        self.name = name
        self.reliable = reliable
        self.via_token = via_token
        self.host = host
        self.port = port
        #: The port in our Via and in our Record-Route, when they are not the listening port:
        #: a worker of a multi-process server gets the responses to its requests, and the
        #: in-dialog requests of its dialogs, on ports of its own (signaling/supervisor.py).
        self.via_port = via_port or port
        #: Our Via's text up to its branch: each Via's text is written from it, never rendered
        #: field by field (what ``Via.__str__`` would write; tested).
        self._via_head = f"SIP/2.0/{via_token} {host}:{self.via_port};branch="
        rr_port = record_route_port or port
        #: Every port of ours a message may name (Request-URI, Route, Via).
        self.ports = tuple(dict.fromkeys((port, self.via_port, rr_port)))
        #: The ``transport=`` URI parameter that selects it (§19.1.1); None for UDP, the
        #: default of a sip: URI.
        self.uri_transport = uri_transport
        params: dict[str, str | None] = {"lr": None}
        if uri_transport is not None:
            params = {"transport": uri_transport, "lr": None}
        #: Our Record-Route value facing peers of this transport (§16.6 step 4, RFC 5658).
        self.record_route = NameAddr(SipURI("sip", host, port=rr_port, params=params))

    def via(self, branch: str, extra: Params | None = None) -> Via:
        """Our Via for a request sent over this transport (§16.6 step 8, RFC 3581 rport);
        ``extra``: parameters after rport (the proxy's RFC 7339 ``oc``)."""
        params: dict[str, str | None] = {"branch": branch, "rport": None}
        tail = ";rport"
        if extra:
            params.update(extra)
            tail += render_params(extra)
        return Via(self.via_token, self.host, self.via_port, params,
                   raw=f"{self._via_head}{branch}{tail}")


#: The secure transport a ``sips:`` URI's ``transport=`` value asks for ("" for none).
_SECURE: dict[str | None, str] = {None: "tls", "tcp": "tls", "tls": "tls", "ws": "wss",
                                  "wss": "wss"}


class Transports:
    """The transports of one node, by name, and the questions the proxy asks about them."""

    def __init__(self) -> None:
        #: Read by ``SipCore.send`` for every message sent: a dict lookup, not a call.
        self.by_name: dict[str, Transport] = {}
        self._info: dict[str, TransportInfo] = {}
        self._by_uri_transport: dict[str | None, str] = {}
        self._by_via_token: dict[str, str] = {}
        #: Read per routed request (``Proxy._is_me``): kept, not rebuilt per question.
        self._infos: tuple[TransportInfo, ...] = ()
        self._ports: frozenset[int] = frozenset()
        #: The sent-by (host, port) of our Vias, one per transport: asked of every response
        #: the proxy relays (``Proxy._is_my_via``), kept, not rebuilt per question.
        self._via_sent_by: frozenset[tuple[str, int | None]] = frozenset()

    def add(self, transport: Transport) -> None:
        info = transport.info
        self.by_name[info.name] = transport
        self._info[info.name] = info
        self._by_uri_transport[info.uri_transport] = info.name
        self._by_via_token[info.via_token.upper()] = info.name
        self._changed()

    def remove(self, name: str) -> None:
        info = self._info.pop(name, None)
        self.by_name.pop(name, None)
        if info is not None:
            self._by_uri_transport.pop(info.uri_transport, None)
            self._by_via_token.pop(info.via_token.upper(), None)
        self._changed()

    def _changed(self) -> None:
        self._infos = tuple(self._info.values())
        self._ports = frozenset(p for i in self._infos for p in i.ports)
        self._via_sent_by = frozenset((i.host, i.via_port) for i in self._infos)

    def __contains__(self, name: object) -> bool:
        return name in self.by_name

    def __iter__(self) -> Iterator[TransportInfo]:
        return iter(self._infos)

    def get(self, name: str) -> Transport | None:
        return self.by_name.get(name)

    def info(self, name: str) -> TransportInfo | None:
        return self._info.get(name)

    def holds(self, name: str, conn_id: str) -> bool:
        """The transport ``name`` holds the connection ``conn_id``."""
        transport = self.by_name.get(name)
        return transport is not None and transport.holds(conn_id)

    def reliable(self, name: str) -> bool:
        info = self._info.get(name)
        return info is not None and info.reliable

    def for_uri(self, uri: SipURI) -> str | None:
        """The transport a hop's URI asks for (§19.1.1 ``transport=``; UDP when absent), if
        this node runs it.  A ``sips:`` URI needs TLS on the hop (§26.2.2, RFC 5630 §3.1.3):
        TLS, or WSS for ``transport=ws`` (RFC 7118 §5.2); never UDP or plain TCP."""
        wanted = uri.params.get("transport") if uri.params else None
        key = wanted.lower() if wanted else None
        if uri.scheme == "sips":
            key = _SECURE.get(key, "")
        elif key == "udp":
            key = None  # spelled out, the default
        return self._by_uri_transport.get(key)

    def for_via(self, via: Via) -> str | None:
        """The transport a Via's sent-by names (§18.2.2: responses go back over it)."""
        return self._by_via_token.get(via.transport.upper())

    def ports(self) -> frozenset[int]:
        return self._ports

    def is_own_via(self, via: Via) -> bool:
        """``via`` has the sent-by of one of our transports' Vias (host and port as we
        write them)."""
        return (via.host, via.port) in self._via_sent_by
