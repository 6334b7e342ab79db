"""TLS for SIP over TLS and WSS (RFC 3261 §26.2, RFC 5630, RFC 7118): contexts, reload, identity.

What it does:

- builds the server's ``ssl.SSLContext`` from certificate and key files, TLS 1.2 and 1.3 only
  (RFC 8996 deprecates 1.0 and 1.1; RFC 7525 §3.1.1);
- serves several certificates by SNI (RFC 6066 §3), for a server known by several names;
- verifies client certificates when a CA is configured: mutual TLS for trunks and peer proxies
  (RFC 5922 §7.3), whose verified identity can make the connection a trusted peer;
- reloads the files without a restart (on SIGHUP, and when they change on disk): a renewed
  certificate is served to the next handshake; live connections keep the one they started
  with.  A reload that fails (a half-written file, a key that does not match) keeps the
  contexts in use and logs why, so a renewal gone wrong never takes the listener down;
- turns every unusable file into a ``ConfigError`` with a one-line message at start.

How the reload reaches a listener that already runs: the listener is given ``front``, a context
that never changes, whose SNI callback (called on every handshake, with or without a server
name) points the connection at the current context for the name asked for.  The verify mode
of a connection is fixed by ``front`` when the connection is created; the certificates, key and
CA store come from the context the callback chose.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from signaling.config import Config, ConfigError
from signaling.periodic import Periodic

__all__ = [
    "TLS_HANDSHAKE_TIMEOUT",
    "TLS_WATCH_INTERVAL",
    "TlsContexts",
    "TlsSettings",
    "admin_tls",
    "certificate_not_after",
    "parse_sni",
    "peer_identities",
    "tls_settings",
]

log = logging.getLogger(__name__)

#: Seconds a TLS handshake may take before the connection is closed and counted.  A real client
#: finishes in a few round trips; a peer that opens a connection and never completes the
#: handshake must not hold a connection slot (and its memory) for longer than this.
TLS_HANDSHAKE_TIMEOUT = 10.0
#: Seconds between checks of the certificate files for a change (mtime, size, inode): a renewal
#: by certbot or a secret mount update is served within this time, without a SIGHUP.
TLS_WATCH_INTERVAL = 5.0


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """The files and policies of the TLS listeners (``--tls-*`` options)."""

    cert: str
    key: str
    #: (server name, certificate file, key file) served to clients asking for that name; a
    #: name ``*.example.com`` matches one label.  Other names get ``cert``/``key``.
    sni: tuple[tuple[str, str, str], ...] = ()
    #: CA bundle that client certificates are verified against (mutual TLS); None: not asked.
    client_ca: str | None = None
    #: Refuse clients without a certificate (with ``client_ca``); else a certificate is optional.
    require_client_cert: bool = False
    #: Identities (RFC 5922 §7.1: SAN DNS or SIP URI host, else the CN) trusted as peers.
    trusted_peers: frozenset[str] = field(default_factory=frozenset)

    def files(self) -> list[str]:
        paths = [self.cert, self.key, *(p for _, c, k in self.sni for p in (c, k))]
        if self.client_ca:
            paths.append(self.client_ca)
        return paths


def tls_settings(cfg: Config) -> TlsSettings | None:
    """The TLS settings of a configuration, None without a certificate."""
    if cfg.tls_cert is None or cfg.tls_key is None:
        return None
    return TlsSettings(cert=cfg.tls_cert, key=cfg.tls_key, sni=parse_sni(cfg.tls_sni),
                       client_ca=cfg.tls_client_ca,
                       require_client_cert=cfg.tls_require_client_cert,
                       trusted_peers=frozenset(p.lower() for p in cfg.tls_trusted_peers))


def admin_tls(cfg: Config) -> TlsContexts | None:
    """The admin listener's TLS (``--admin-tls-cert``/``--admin-tls-key``): its own pair, as
    the admin API is often reached under another name (and by other clients: operators,
    Prometheus) than SIP; None for plain HTTP.  Raises ``ConfigError`` for unusable files."""
    if cfg.admin_tls_cert is None or cfg.admin_tls_key is None:
        return None
    return TlsContexts(TlsSettings(cert=cfg.admin_tls_cert, key=cfg.admin_tls_key),
                       what="admin_tls_cert")


def parse_sni(entries: Iterable[str]) -> tuple[tuple[str, str, str], ...]:
    """``NAME=CERT[:KEY]`` entries (key in the certificate file when omitted)."""
    out = []
    for entry in entries:
        name, eq, files = entry.partition("=")
        cert, _, key = files.partition(":")
        if not eq or not name.strip() or not cert:
            raise ConfigError(f"tls_sni: expected NAME=CERTFILE[:KEYFILE], got {entry!r}")
        out.append((name.strip().lower(), cert, key or cert))
    return tuple(out)


def _base_context(purpose: ssl.Purpose) -> ssl.SSLContext:
    ctx = ssl.create_default_context(purpose)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    # Renegotiation is a DoS lever and SIP never needs it; compression leaks (CRIME).
    ctx.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION
    return ctx


def _load_pair(ctx: ssl.SSLContext, cert: str, key: str, what: str) -> None:
    for path, name in ((cert, "certificate"), (key, "key")):
        if not os.path.isfile(path):
            raise ConfigError(f"{what}: {name} file {path} does not exist")
        if not os.access(path, os.R_OK):
            raise ConfigError(f"{what}: {name} file {path} is not readable")
    try:
        ctx.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        raise ConfigError(f"{what}: cannot use certificate {cert} with key {key}: "
                          f"{exc.reason or exc.strerror or exc}") from None
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read {cert} or {key}: {exc.strerror}") from None


def _load_ca(ctx: ssl.SSLContext, path: str) -> None:
    if not os.path.isfile(path):
        raise ConfigError(f"tls_client_ca: CA file {path} does not exist")
    try:
        ctx.load_verify_locations(cafile=path)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"tls_client_ca: cannot use CA file {path}: "
                          f"{getattr(exc, 'reason', None) or exc}") from None


def _verify_mode(settings: TlsSettings) -> ssl.VerifyMode:
    if settings.client_ca is None:
        return ssl.CERT_NONE
    return ssl.CERT_REQUIRED if settings.require_client_cert else ssl.CERT_OPTIONAL


def _server_context(settings: TlsSettings, cert: str, key: str, what: str) -> ssl.SSLContext:
    ctx = _base_context(ssl.Purpose.CLIENT_AUTH)
    _load_pair(ctx, cert, key, what)
    if settings.client_ca is not None:
        _load_ca(ctx, settings.client_ca)
    ctx.verify_mode = _verify_mode(settings)
    return ctx


def certificate_not_after(path: str) -> float | None:
    """The notAfter of the first certificate in a PEM file, as Unix time; None if unreadable.

    The standard library decodes a certificate file only through ``_ssl._test_decode_cert``
    (what ``ssl`` itself uses for ``getpeercert``'s dict); no other package is needed for one
    date.
    """
    try:
        decoded = ssl._ssl._test_decode_cert(path)  # type: ignore[attr-defined]
        return float(ssl.cert_time_to_seconds(decoded["notAfter"]))
    except (OSError, ssl.SSLError, KeyError, ValueError):
        return None


def peer_identities(peercert: dict[str, Any] | None) -> frozenset[str]:
    """The identities of a verified peer certificate (RFC 5922 §7.1): the hosts of its
    ``sip:`` URI and DNS subjectAltNames; the subject's CN only when it has no SAN of either
    kind.  Lower-cased."""
    if not peercert:
        return frozenset()
    names = set()
    for kind, value in peercert.get("subjectAltName", ()):
        if kind == "DNS":
            names.add(str(value).lower())
        elif kind == "URI" and str(value).lower().startswith("sip:"):
            names.add(str(value)[4:].split(";", 1)[0].lower())
    if not names:
        for rdn in peercert.get("subject", ()):
            for key, value in rdn:
                if key == "commonName":
                    names.add(str(value).lower())
    return frozenset(names)


def _name_matches(pattern: str, name: str) -> bool:
    if pattern.startswith("*."):
        head, dot, rest = name.partition(".")
        return bool(dot and head) and rest == pattern[2:]
    return pattern == name


class TlsContexts:
    """The TLS contexts of this node, reloadable.  Raises ``ConfigError`` if the files given at
    construction cannot be used."""

    def __init__(self, settings: TlsSettings, what: str = "tls_cert") -> None:
        self.settings = settings
        #: The option named in error messages.
        self.what = what
        self.reloads = 0
        self.reload_failures = 0
        self._default, self._by_name = self._build()
        self._stamp = self._stamps()
        self.front = _base_context(ssl.Purpose.CLIENT_AUTH)
        # The listener's context needs a certificate of its own for OpenSSL to accept it as a
        # server context; the SNI callback then switches to the current one.
        _load_pair(self.front, settings.cert, settings.key, what)
        self.front.verify_mode = _verify_mode(settings)
        self.front.sni_callback = self._choose
        self._watcher: Periodic | None = None
        self._on_hup = False

    def _build(self) -> tuple[ssl.SSLContext, list[tuple[str, ssl.SSLContext]]]:
        s = self.settings
        default = _server_context(s, s.cert, s.key, self.what)
        by_name = [(name, _server_context(s, cert, key, f"tls_sni {name}"))
                   for name, cert, key in s.sni]
        return default, by_name

    def _choose(self, sslobj: ssl.SSLObject | ssl.SSLSocket, server_name: str | None,
                _front: ssl.SSLContext) -> int | None:
        """SNI callback (RFC 6066 §3): every handshake takes the current context for its name."""
        ctx = self.context_for(server_name)
        sslobj.context = ctx
        return None

    def context_for(self, server_name: str | None) -> ssl.SSLContext:
        if server_name:
            name = server_name.lower()
            for pattern, ctx in self._by_name:
                if _name_matches(pattern, name):
                    return ctx
        return self._default

    def client_context(self, ca: str | None = None) -> ssl.SSLContext:
        """For connections this server opens (forwarding over TLS): the server is verified
        against the system's CAs (and ``ca``), by name (RFC 5922 §7.2), and our certificate is
        offered for mutual TLS."""
        ctx = _base_context(ssl.Purpose.SERVER_AUTH)
        if ca is not None:
            ctx.load_verify_locations(cafile=ca)
        with contextlib.suppress(ConfigError):
            _load_pair(ctx, self.settings.cert, self.settings.key, "tls_cert")
        return ctx

    # -- identity ------------------------------------------------------------------------------

    def peer_names(self, sslobj: ssl.SSLObject | ssl.SSLSocket | None) -> frozenset[str]:
        """The verified client certificate's identities (empty without one)."""
        if sslobj is None or self.settings.client_ca is None:
            return frozenset()
        return peer_identities(sslobj.getpeercert())

    def trusted_peer(self, sslobj: ssl.SSLObject | ssl.SSLSocket | None) -> str | None:
        """The trusted identity the peer proved with its certificate, or None."""
        trusted = self.settings.trusted_peers
        if not trusted:
            return None
        for name in sorted(self.peer_names(sslobj)):
            if name in trusted:
                return name
        return None

    # -- reload ---------------------------------------------------------------------------------

    def expiries(self) -> dict[tuple[str, ...], float]:
        """notAfter (Unix time) of each certificate file served, for the expiry gauge and its
        alert (deploy/prometheus): read from the files, so a renewal on disk shows once
        reloaded.  A file that cannot be read (moved mid-renewal) is left out, not guessed."""
        s = self.settings
        out: dict[tuple[str, ...], float] = {}
        for path in (s.cert, *(cert for _, cert, _ in s.sni)):
            not_after = certificate_not_after(path)
            if not_after is not None:
                out[(path,)] = not_after
        return out

    def _stamps(self) -> tuple[tuple[int, int, int] | None, ...]:
        out: list[tuple[int, int, int] | None] = []
        for path in self.settings.files():
            try:
                st = os.stat(path)
            except OSError:
                out.append(None)
            else:
                out.append((st.st_mtime_ns, st.st_size, st.st_ino))
        return tuple(out)

    def changed(self) -> bool:
        """The files differ from those last loaded (or tried)."""
        return self._stamps() != self._stamp

    def reload(self) -> bool:
        """Load the files again; on failure keep serving what was loaded before."""
        self._stamp = self._stamps()
        try:
            self._default, self._by_name = self._build()
        except ConfigError as exc:
            self.reload_failures += 1
            log.error("TLS reload failed, still serving the previous certificates: %s", exc)
            return False
        self.reloads += 1
        log.info("TLS certificates reloaded from %s", self.settings.cert)
        return True

    def start(self, interval: float = TLS_WATCH_INTERVAL, *, on_hup: bool = True) -> None:
        """Reload when the files change (polled every ``interval`` seconds), and on SIGHUP
        with ``on_hup`` (a process has one SIGHUP handler: the SIP listeners' contexts own it,
        the admin listener's rely on the watch)."""
        loop = asyncio.get_running_loop()
        self._on_hup = on_hup
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            # Only the main thread of a process may own signal handlers (tests run servers
            # in other threads too); the file watch covers those.
            if on_hup:
                loop.add_signal_handler(signal.SIGHUP, self.reload)
        self._watcher = Periodic("tls-watch", interval, self._reload_if_changed)
        self._watcher.start()

    def _reload_if_changed(self) -> None:
        if self.changed():
            self.reload()

    async def stop(self) -> None:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            if self._on_hup:
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        if self._watcher is not None:
            await self._watcher.close()
            self._watcher = None
