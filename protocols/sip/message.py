"""The SIP message model (RFC 3261 §7, §19, §20, §25).

A parsed message is a plain mutable object whose *typed* fields carry every header a proxy,
registrar or transaction layer reads (Via, From, To, Call-ID, CSeq, Max-Forwards, Route,
Record-Route, Contact, Expires, Require, Proxy-Require, Content-Type); every other header is kept
verbatim, in order, in ``extra``.  The serializer writes the typed fields first and then
``extra``: RFC 3261 §7.3.1 only requires the relative order of same-named headers to be kept,
which this does.

Value objects (URIs, name-addrs, Vias) that came off the wire remember their exact text in
``raw`` so re-serializing a relayed message is a copy, not a re-render.  Treat them as values:
to change one, build a new one (``with_param``); never mutate a parsed one in place, or its
``raw`` would lie.  ``raw`` is excluded from equality, so a message built in code compares equal
to the same message parsed back from its serialized bytes.

URI user parts, parameters and headers are kept exactly as written, %-escapes included: they are
unescaped only when compared (§19.1.4), never when stored, so nothing is unescaped twice
(RFC 4475 §3.1.1.3).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "URI",
    "AbsoluteURI",
    "CSeq",
    "Message",
    "NameAddr",
    "ParamDict",
    "Params",
    "Request",
    "Response",
    "SipURI",
    "TelURI",
    "Via",
    "has_param",
    "param",
    "render_params",
]

#: Ordered parameters; a value of ``None`` is a parameter without ``=value`` (``;lr``).
#: Typed read-only: parsed values may be shared between messages (the parser caches them), so
#: changing one means building a new value (``with_param``), never mutating this mapping.
Params = Mapping[str, str | None]
#: What the parser and builders construct before handing it over as ``Params``.
ParamDict = dict[str, str | None]


def param(params: Params, name: str) -> str | None:
    """A parameter's value by lower-case ``name``; parameter names are case-insensitive
    (§7.3.1, §19.1.4) but kept as written, so the exact spelling is tried first and the
    others only when it is absent (``None`` also for a parameter without a value)."""
    value = params.get(name)
    if value is None and params:
        for key, v in params.items():
            if key.lower() == name:
                return v
    return value


def has_param(params: Params, name: str) -> bool:
    """Whether lower-case ``name`` is present, in any case (``;lr``, ``;LR``)."""
    return name in params or any(key.lower() == name for key in params)


def render_params(params: Params) -> str:
    """``;name=value`` for each parameter, in order."""
    if not params:
        return ""
    # A list, not a generator: join makes one of it anyway, and the generator's frame per
    # item cost 3x (timeit, a Via's three parameters: 4.1 against 1.3 µs, load 14).
    return "".join([f";{k}" if v is None else f";{k}={v}" for k, v in params.items()])


@dataclass(slots=True)
class SipURI:
    """A ``sip:`` or ``sips:`` URI (RFC 3261 §19.1), every component as written."""

    scheme: str  # "sip" or "sips", lower case
    host: str
    user: str | None = None
    password: str | None = None
    port: int | None = None
    params: Params = field(default_factory=dict)
    headers: str | None = None  # the text after "?", escapes kept
    raw: str | None = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        if self.raw is not None:
            return self.raw
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out += (":", self.password)
            out.append("@")
        out.append(self.host)
        if self.port is not None:
            out += (":", str(self.port))
        out.append(render_params(self.params))
        if self.headers is not None:
            out += ("?", self.headers)
        return "".join(out)

    @property
    def transport(self) -> str:
        """The ``transport`` parameter in upper case, default UDP (sips: TLS)."""
        t = param(self.params, "transport")
        if t:
            return t.upper()
        return "TLS" if self.scheme == "sips" else "UDP"

    @property
    def lr(self) -> bool:
        return has_param(self.params, "lr")


@dataclass(slots=True)
class TelURI:
    """A ``tel:`` URI (RFC 3966): the number and its parameters."""

    number: str
    params: Params = field(default_factory=dict)
    raw: str | None = field(default=None, compare=False, repr=False)

    scheme = "tel"

    def __str__(self) -> str:
        if self.raw is not None:
            return self.raw
        return f"tel:{self.number}{render_params(self.params)}"


@dataclass(slots=True)
class AbsoluteURI:
    """Any other scheme (RFC 3261 §25.1 absoluteURI), kept opaque."""

    scheme: str  # lower case
    opaque: str  # everything after the first ":"
    raw: str | None = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        if self.raw is not None:
            return self.raw
        return f"{self.scheme}:{self.opaque}"


URI = SipURI | TelURI | AbsoluteURI


@dataclass(slots=True)
class NameAddr:
    """From, To, Contact, Route, Record-Route values: ``"display" <uri>;params``.

    ``display`` is kept as written (a quoted-string keeps its quotes and escapes; a token list
    is kept as is).  ``params`` are the header parameters (tag, expires, q ...), never the URI's.
    """

    uri: URI
    display: str | None = None
    params: Params = field(default_factory=dict)
    raw: str | None = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        if self.raw is not None:
            return self.raw
        dn = f"{self.display} " if self.display else ""
        return f"{dn}<{self.uri}>{render_params(self.params)}"

    @property
    def tag(self) -> str | None:
        # ``param`` inlined for its usual outcomes (the tag spelled ``tag``, or no parameters
        # at all): From and To tags are read ~41 times per proxied call (transaction keys,
        # dialog lookups, relaying), and the second Python call per read was 6% of the
        # call's Python calls (cProfile, ``bench_call_legs --profile``).
        params = self.params
        value = params.get("tag")
        if value is not None or not params:
            return value
        return param(params, "tag")

    def with_param(self, name: str, value: str | None) -> NameAddr:
        """A copy with one header parameter set (for adding a To tag)."""
        params = dict(self.params)
        params[name] = value
        return NameAddr(self.uri, self.display, params)


@dataclass(slots=True)
class Via:
    """One Via value (RFC 3261 §20.42, RFC 3581 rport)."""

    transport: str  # upper case: UDP, TCP, TLS, SCTP, WS, WSS ...
    host: str
    port: int | None = None
    params: Params = field(default_factory=dict)
    protocol: str = "SIP/2.0"
    raw: str | None = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        if self.raw is not None:
            return self.raw
        port = "" if self.port is None else f":{self.port}"
        return f"{self.protocol}/{self.transport} {self.host}{port}{render_params(self.params)}"

    @property
    def branch(self) -> str | None:
        params = self.params  # ``param`` inlined for the usual spelling, as ``NameAddr.tag``
        value = params.get("branch")
        if value is not None or not params:
            return value
        return param(params, "branch")

    @property
    def sent_by(self) -> tuple[str, int | None]:
        return (self.host.lower(), self.port)

    def with_param(self, name: str, value: str | None) -> Via:
        """A copy with one parameter set (received, rport: RFC 3261 §18.2.1, RFC 3581 §4)."""
        params = dict(self.params)
        params[name] = value
        return Via(self.transport, self.host, self.port, params, self.protocol)

    def with_rport(self, received: str, rport: int) -> Via:
        """A copy with ``received`` and ``rport``'s value set (RFC 3581 §4).  A Via whose text
        ends with a bare ``;rport`` (as SIPp, baresip and our own write it) keeps that text
        with the two values appended, which is what rendering its fields writes for a Via in
        the serializer's form, instead of being rendered field by field for the 100 and again
        for the forwarded request (callgrind: -2.3% instructions per call)."""
        params = dict(self.params)
        params["received"] = received
        params["rport"] = port = str(rport)
        raw = self.raw
        if raw is not None and raw.endswith(";rport") and "received" not in self.params:
            raw = f"{raw}={port};received={received}"
        else:
            raw = None
        return Via(self.transport, self.host, self.port, params, self.protocol, raw)


@dataclass(slots=True)
class CSeq:
    seq: int
    method: str

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


@dataclass(slots=True, kw_only=True)
class Message:
    """Fields common to requests and responses."""

    vias: list[Via]
    from_: NameAddr
    to: NameAddr
    call_id: str
    cseq: CSeq
    max_forwards: int | None = None
    routes: list[NameAddr] = field(default_factory=list)
    record_routes: list[NameAddr] = field(default_factory=list)
    contacts: list[NameAddr] = field(default_factory=list)
    contact_star: bool = False  # "Contact: *" (RFC 3261 §10.2.2)
    expires: int | None = None
    require: list[str] = field(default_factory=list)
    proxy_require: list[str] = field(default_factory=list)
    content_type: str | None = None
    extra: list[tuple[str, str]] = field(default_factory=list)  # (canonical name, raw value)
    body: bytes = b""
    #: A received message's bytes and where the parts a proxy changes are in them
    #: (``edit.Layout``), when the C fast path parsed it: a proxy relays a response by cutting
    #: its top Via out, forwards a request by a few splices (``edit``).  None for messages
    #: built in code and those parser.py parsed alone.  Not an ``__init__`` field:
    #: ``dataclasses.replace`` leaves a copy without it, so a changed copy is never mistaken
    #: for the received bytes.  Code that changes a received message in place other than its
    #: top Via (``edit`` writes it as it is now) or a request's Route values popped from the
    #: front (§16.4, counted by ``edit``) must set it to None.
    wire: tuple[bytes, tuple[int, ...]] | None = field(
        default=None, init=False, compare=False, repr=False)

    def header(self, name: str) -> str | None:
        """First value of an untyped header, by canonical name (case-insensitive)."""
        low = name.lower()
        for k, v in self.extra:
            if k.lower() == low:
                return v
        return None

    def headers(self, name: str) -> list[str]:
        """Every value of an untyped header, by canonical name (case-insensitive)."""
        low = name.lower()
        return [v for k, v in self.extra if k.lower() == low]

    @property
    def transaction_method(self) -> str:
        return self.cseq.method


@dataclass(slots=True, kw_only=True)
class Request(Message):
    method: str
    uri: URI

    @property
    def is_request(self) -> bool:
        return True

    def forwarded(self, *, uri: URI, vias: list[Via], record_routes: list[NameAddr],
                  routes: list[NameAddr], max_forwards: int,
                  extra: list[tuple[str, str]], require: list[str]) -> Request:
        """The copy a proxy forwards (RFC 3261 §16.6): the fields it changes given, the
        others shared with this request.  ``dataclasses.replace(self, ...)`` makes the same
        copy but walks every field's metadata on each call (timeit: 17.6 against 7.3 µs per
        INVITE, load 14), once per forwarded INVITE and BYE; the test keeps the two equal
        for every field, so a field added to ``Message`` and not here fails it."""
        return Request(method=self.method, uri=uri, vias=vias, from_=self.from_, to=self.to,
                       call_id=self.call_id, cseq=self.cseq, max_forwards=max_forwards,
                       routes=routes, record_routes=record_routes, contacts=self.contacts,
                       contact_star=self.contact_star, expires=self.expires,
                       require=require, proxy_require=self.proxy_require,
                       content_type=self.content_type, extra=extra, body=self.body)


@dataclass(slots=True, kw_only=True)
class Response(Message):
    status: int
    reason: str

    @property
    def is_request(self) -> bool:
        return False
