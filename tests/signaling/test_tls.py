"""TLS contexts: versions, SNI, mutual TLS identities, reload, one-line errors.  Every check is
a real handshake over a loopback socket with certificates made by ``openssl`` in the test."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from signaling.config import ConfigError, load_config
from signaling.tls import (
    TlsContexts,
    TlsSettings,
    admin_tls,
    certificate_not_after,
    parse_sni,
    peer_identities,
    tls_settings,
)
from tests.tlscerts import Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def live(pki: Pki, tmp_path: Path) -> Pki:
    """A copy of the server files that a test may overwrite."""
    for name in ("server.crt", "server.key", "other.crt", "other.key"):
        shutil.copy(pki.dir / name, tmp_path / name)
    return Pki(tmp_path, pki.ca)


def settings(pki: Pki, **kw: object) -> TlsSettings:
    return TlsSettings(cert=str(pki.cert("server")), key=str(pki.key("server")), **kw)  # type: ignore[arg-type]


class Listener:
    """A TLS echo of the peer's identity: each connection gets one line, the names the
    contexts found in its client certificate and whether it is a trusted peer."""

    def __init__(self, contexts: TlsContexts) -> None:
        self.contexts = contexts
        self.port = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Listener:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0,
                                                 ssl=self.contexts.front,
                                                 ssl_handshake_timeout=5)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sslobj = writer.get_extra_info("ssl_object")
        names = ",".join(sorted(self.contexts.peer_names(sslobj)))
        writer.write(f"{names};{self.contexts.trusted_peer(sslobj)}\n".encode())
        await writer.drain()
        writer.close()


async def connect(port: int, ctx: ssl.SSLContext,
                  name: str = "sip.example.com") -> tuple[str, dict[str, object], str]:
    """Handshake, then (negotiated version, server certificate, the server's line)."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=name), 5)
    try:
        sslobj = writer.get_extra_info("ssl_object")
        # A refused client certificate (TLS 1.3) shows as an alert or a close on this read.
        line = (await asyncio.wait_for(reader.readuntil(b"\n"), 5)).decode().strip()
        return sslobj.version(), sslobj.getpeercert(), line
    finally:
        writer.close()


def san(cert: dict[str, object]) -> set[str]:
    return {v for k, v in cert["subjectAltName"] if k == "DNS"}  # type: ignore[attr-defined]


# --- versions and SNI -------------------------------------------------------------------------


async def test_tls13_and_tls12_are_served(pki: Pki) -> None:
    async with Listener(TlsContexts(settings(pki))) as srv:
        version, cert, _ = await connect(srv.port, pki.client_context())
        assert version == "TLSv1.3" and "sip.example.com" in san(cert)
        version, _, _ = await connect(srv.port, pki.client_context(version=ssl.TLSVersion.TLSv1_2))
        assert version == "TLSv1.2"


async def test_tls11_is_refused(pki: Pki) -> None:
    ctx = pki.client_context()
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let the client offer 1.1 at all
    with pytest.warns(DeprecationWarning):
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    async with Listener(TlsContexts(settings(pki))) as srv:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await connect(srv.port, ctx)


async def test_sni_selects_the_certificate_for_the_name(pki: Pki) -> None:
    sni = ((("other.example.com", str(pki.cert("other")), str(pki.key("other")))),)
    async with Listener(TlsContexts(settings(pki, sni=sni))) as srv:
        _, cert, _ = await connect(srv.port, pki.client_context(), "other.example.com")
        assert san(cert) == {"other.example.com"}
        _, cert, _ = await connect(srv.port, pki.client_context(), "sip.example.com")
        assert "sip.example.com" in san(cert)


async def test_sni_wildcard_matches_one_label(pki: Pki) -> None:
    contexts = TlsContexts(settings(pki, sni=(("*.example.org", str(pki.cert("other")),
                                                str(pki.key("other"))),)))
    assert contexts.context_for("a.example.org") is not contexts.context_for(None)
    assert contexts.context_for("A.EXAMPLE.ORG") is contexts.context_for("a.example.org")
    assert contexts.context_for("a.b.example.org") is contexts.context_for(None)
    assert contexts.context_for("example.org") is contexts.context_for(None)


def test_settings_from_the_configuration() -> None:
    assert tls_settings(load_config({}, env={})) is None
    cfg = load_config({"tls_cert": "/c.pem", "tls_key": "/k.pem", "tls_sni": ["A.example=/a"],
                       "tls_client_ca": "/ca.pem", "tls_trusted_peers": ["Trunk.Example"]},
                      env={})
    assert tls_settings(cfg) == TlsSettings(
        cert="/c.pem", key="/k.pem", sni=(("a.example", "/a", "/a"),), client_ca="/ca.pem",
        trusted_peers=frozenset({"trunk.example"}))


def test_admin_tls_is_its_own_pair_and_names_its_option(pki: Pki, tmp_path: Path) -> None:
    assert admin_tls(load_config({}, env={})) is None
    cfg = load_config({"admin_tls_cert": str(pki.cert("other")),
                       "admin_tls_key": str(pki.key("other"))}, env={})
    contexts = admin_tls(cfg)
    assert contexts is not None and contexts.settings.cert == str(pki.cert("other"))
    cfg = load_config({"admin_tls_cert": str(tmp_path / "nope.crt"),
                       "admin_tls_key": str(pki.key("other"))}, env={})
    with pytest.raises(ConfigError) as info:
        admin_tls(cfg)
    assert str(info.value) == f"admin_tls_cert: certificate file {tmp_path / 'nope.crt'} " \
                              "does not exist"


def test_parse_sni() -> None:
    assert parse_sni(["Sip.Example.com=/a.crt:/a.key", "b=/b.pem"]) == (
        ("sip.example.com", "/a.crt", "/a.key"), ("b", "/b.pem", "/b.pem"))
    with pytest.raises(ConfigError, match="NAME=CERTFILE"):
        parse_sni(["/a.crt"])


# --- mutual TLS -------------------------------------------------------------------------------


async def test_client_certificate_gives_a_trusted_identity(pki: Pki) -> None:
    s = settings(pki, client_ca=str(pki.ca), trusted_peers=frozenset({"trunk.example.net"}))
    async with Listener(TlsContexts(s)) as srv:
        _, _, line = await connect(srv.port, pki.client_context("client"))
        assert line == "trunk.example.net;trunk.example.net"
        # Optional: a phone without a certificate still connects, as nobody in particular.
        _, _, line = await connect(srv.port, pki.client_context())
        assert line == ";None"


async def test_verified_but_untrusted_identity_is_not_a_trusted_peer(pki: Pki) -> None:
    s = settings(pki, client_ca=str(pki.ca), trusted_peers=frozenset({"carrier.example"}))
    async with Listener(TlsContexts(s)) as srv:
        _, _, line = await connect(srv.port, pki.client_context("client"))
        assert line == "trunk.example.net;None"


async def test_certificate_from_an_unknown_ca_is_refused(pki: Pki) -> None:
    s = settings(pki, client_ca=str(pki.ca), trusted_peers=frozenset({"trunk.example.net"}))
    async with Listener(TlsContexts(s)) as srv:
        with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
            await connect(srv.port, pki.client_context("stranger"))


async def test_required_client_certificate(pki: Pki) -> None:
    s = settings(pki, client_ca=str(pki.ca), require_client_cert=True)
    async with Listener(TlsContexts(s)) as srv:
        _, _, line = await connect(srv.port, pki.client_context("client"))
        assert line.startswith("trunk.example.net;")
        # TLS 1.3: the client learns of the refusal on its first read.
        with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
            await connect(srv.port, pki.client_context())


async def test_no_client_ca_means_no_identity_even_with_a_certificate(pki: Pki) -> None:
    s = settings(pki, trusted_peers=frozenset({"trunk.example.net"}))
    async with Listener(TlsContexts(s)) as srv:
        _, _, line = await connect(srv.port, pki.client_context("client"))
        assert line == ";None"


def test_peer_identities_follow_rfc5922() -> None:
    cert = {"subject": ((("commonName", "cn.example"),),),
            "subjectAltName": (("DNS", "A.example"), ("URI", "sip:b.example;transport=tls"),
                               ("URI", "https://c.example"), ("IP Address", "192.0.2.1"))}
    assert peer_identities(cert) == {"a.example", "b.example"}
    assert peer_identities({"subject": cert["subject"]}) == {"cn.example"}  # CN only without SAN
    assert peer_identities(None) == frozenset()


# --- reload -----------------------------------------------------------------------------------


async def test_reload_serves_the_new_certificate_to_new_connections(live: Pki,
                                                                    pki: Pki) -> None:
    contexts = TlsContexts(settings(live))
    async with Listener(contexts) as srv:
        _, cert, _ = await connect(srv.port, pki.client_context())
        first_serial = cert["serialNumber"]
        assert not contexts.changed()
        live.issue("server", "sip.example.com", ["DNS:sip.example.com"])
        assert contexts.changed()
        assert contexts.reload() and contexts.reloads == 1
        _, cert, _ = await connect(srv.port, pki.client_context())
        assert cert["serialNumber"] != first_serial


async def test_failed_reload_keeps_the_previous_certificate(live: Pki, pki: Pki) -> None:
    contexts = TlsContexts(settings(live))
    async with Listener(contexts) as srv:
        _, before, _ = await connect(srv.port, pki.client_context())
        live.cert("server").write_text("half-written\n")
        assert not contexts.reload() and contexts.reload_failures == 1
        _, after, _ = await connect(srv.port, pki.client_context())
        assert after["serialNumber"] == before["serialNumber"]
        assert not contexts.changed()  # the failure is not retried until the file changes


async def test_sighup_and_file_change_trigger_reloads(live: Pki, pki: Pki) -> None:
    contexts = TlsContexts(settings(live))
    contexts.start(interval=0.05)
    try:
        os.kill(os.getpid(), signal.SIGHUP)
        await wait_for(lambda: contexts.reloads == 1)
        live.issue("server", "sip.example.com", ["DNS:sip.example.com"])
        await wait_for(lambda: contexts.reloads == 2)
    finally:
        await contexts.stop()


async def wait_for(cond: object, timeout: float = 10.0) -> None:
    assert callable(cond)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


# --- configuration errors ---------------------------------------------------------------------


def one_line_error(s: TlsSettings) -> str:
    with pytest.raises(ConfigError) as info:
        TlsContexts(s)
    text = str(info.value)
    assert "\n" not in text
    return text


def test_missing_certificate_is_a_one_line_error(pki: Pki, tmp_path: Path) -> None:
    s = TlsSettings(cert=str(tmp_path / "nope.crt"), key=str(pki.key("server")))
    assert one_line_error(s) == f"tls_cert: certificate file {tmp_path / 'nope.crt'} does not exist"


def test_bad_certificate_is_a_one_line_error(pki: Pki, tmp_path: Path) -> None:
    bad = tmp_path / "bad.crt"
    bad.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    text = one_line_error(TlsSettings(cert=str(bad), key=str(pki.key("server"))))
    assert text.startswith(f"tls_cert: cannot use certificate {bad}")


def test_mismatched_key_is_a_one_line_error(pki: Pki) -> None:
    text = one_line_error(TlsSettings(cert=str(pki.cert("server")), key=str(pki.key("other"))))
    assert "cannot use certificate" in text and "KEY_VALUES_MISMATCH" in text.upper()


def test_bad_client_ca_and_sni_files_are_one_line_errors(pki: Pki, tmp_path: Path) -> None:
    text = one_line_error(settings(pki, client_ca=str(tmp_path / "ca.pem")))
    assert text.startswith("tls_client_ca: CA file")
    text = one_line_error(settings(pki, sni=(("x.example", str(tmp_path / "x"), "y"),)))
    assert text.startswith("tls_sni x.example: certificate file")


async def test_client_context_verifies_the_server(pki: Pki) -> None:
    contexts = TlsContexts(settings(pki))
    async with Listener(contexts) as srv:
        version, _, _ = await connect(srv.port, contexts.client_context(str(pki.ca)))
        assert version == "TLSv1.3"
        with pytest.raises(ssl.SSLCertVerificationError):
            await connect(srv.port, contexts.client_context(str(pki.ca)), "wrong.example")


@pytest.fixture(autouse=True)
async def _no_leaked_tasks() -> AsyncIterator[None]:
    yield
    current = asyncio.current_task()
    left = [t for t in asyncio.all_tasks() if t is not current and t.get_name() == "tls-watch"]
    assert not left


def test_certificate_expiry_is_read_from_the_files_served(pki: Pki, tmp_path: Path) -> None:
    """The expiry gauge's values (deploy/prometheus: SignalingCertificateExpiresSoon): notAfter
    of the default and the SNI certificates; a file that cannot be read is left out."""
    short, short_key = pki.issue("short", "short.example.com", ["DNS:short.example.com"],
                                 days=3)
    contexts = TlsContexts(TlsSettings(
        cert=str(pki.cert("server")), key=str(pki.key("server")),
        sni=(("short.example.com", str(short), str(short_key)),)))
    expiries = contexts.expiries()
    now = time.time()
    assert 29 * 86400 < expiries[(str(pki.cert("server")),)] - now <= 30 * 86400
    assert 2 * 86400 < expiries[(str(short),)] - now <= 3 * 86400
    assert certificate_not_after(str(tmp_path / "missing.crt")) is None
