"""TLS over memory BIOs for accepted connections (signaling/transports/tlsstream.py): a real
OpenSSL client (``ssl.SSLObject`` over its own BIOs) talks to ``TlsStream`` byte for byte, with
the listener's own contexts (``signaling.tls``: SNI, mutual TLS, TLS 1.2 and 1.3 only)."""

from __future__ import annotations

import contextlib
import ssl
from pathlib import Path

import pytest

from signaling.tls import TlsContexts, TlsSettings
from signaling.transports.tlsstream import TlsStream
from tests.tlscerts import Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


class Client:
    """A TLS client over memory BIOs."""

    def __init__(self, ctx: ssl.SSLContext, name: str = "sip.example.com") -> None:
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.sslobj = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname=name)

    def step(self) -> bytes:
        with contextlib.suppress(ssl.SSLWantReadError):
            self.sslobj.do_handshake()
        return self.outgoing.read()

    def records(self, data: bytes) -> bytes:
        self.sslobj.write(data)
        return self.outgoing.read()

    def read(self, data: bytes) -> bytes:
        self.incoming.write(data)
        out = b""
        while True:
            try:
                out += self.sslobj.read(65536)
            except ssl.SSLWantReadError:
                return out


def contexts(pki: Pki, **kw: object) -> TlsContexts:
    return TlsContexts(TlsSettings(cert=str(pki.cert("server")), key=str(pki.key("server")),
                                   **kw))  # type: ignore[arg-type]


def connect(server: TlsStream, client: Client) -> None:
    """Run the handshake to its end, as the connection does with each read."""
    data = client.step()
    for _ in range(10):
        done = server.handshake(data)
        client.incoming.write(server.output())
        data = client.step()
        if done:
            client.read(b"")  # the session tickets after a TLS 1.3 handshake
            assert not server.handshaking
            return
    raise AssertionError("the handshake did not finish")


MSG = b"REGISTER sip:example.com SIP/2.0\r\nContent-Length: 0\r\n\r\n"


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2])
def test_handshake_then_records_both_ways(pki: Pki, version: ssl.TLSVersion) -> None:
    server = TlsStream(contexts(pki).front)
    client = Client(pki.client_context(version=version))
    connect(server, client)
    assert server.sslobj.version() == {ssl.TLSVersion.TLSv1_3: "TLSv1.3",
                                       ssl.TLSVersion.TLSv1_2: "TLSv1.2"}[version]
    assert server.decrypt(client.records(MSG)) == MSG
    assert client.read(server.encrypt(b"SIP/2.0 200 OK\r\n\r\n")) == b"SIP/2.0 200 OK\r\n\r\n"


def test_tls_1_1_is_refused(pki: Pki) -> None:
    server = TlsStream(contexts(pki).front)
    client = Client(pki.client_context(version=ssl.TLSVersion.TLSv1_1))
    with pytest.raises(ssl.SSLError):
        connect(server, client)


def test_several_records_in_one_read_and_one_record_split_across_reads(pki: Pki) -> None:
    server = TlsStream(contexts(pki).front)
    client = Client(pki.client_context())
    connect(server, client)
    wire = client.records(MSG) + client.records(MSG * 2) + client.records(MSG)
    assert server.decrypt(wire) == MSG * 4
    record = client.records(MSG * 3)
    got = b"".join(server.decrypt(record[i:i + 7]) for i in range(0, len(record), 7))
    assert got == MSG * 3
    assert server.decrypt(b"") == b""


def test_a_message_larger_than_a_record(pki: Pki) -> None:
    server = TlsStream(contexts(pki).front)
    client = Client(pki.client_context())
    connect(server, client)
    big = b"x" * 70_000  # five records
    assert server.decrypt(client.records(big)) == big
    assert client.read(server.encrypt(big)) == big


def test_close_notify_ends_the_stream_and_shutdown_sends_ours(pki: Pki) -> None:
    server = TlsStream(contexts(pki).front)
    client = Client(pki.client_context())
    connect(server, client)
    wire = client.records(MSG)
    with pytest.raises(ssl.SSLWantReadError):
        client.sslobj.unwrap()  # writes the client's close_notify
    assert server.decrypt(wire + client.outgoing.read()) == MSG
    assert server.closed
    notify = server.shutdown()
    assert notify
    client.incoming.write(notify)
    client.sslobj.unwrap()  # the server's close_notify completes the client's shutdown


def test_a_tampered_record_is_an_error(pki: Pki) -> None:
    server = TlsStream(contexts(pki).front)
    client = Client(pki.client_context())
    connect(server, client)
    record = bytearray(client.records(MSG))
    record[-1] ^= 1
    with pytest.raises(ssl.SSLError):
        server.decrypt(bytes(record))


def test_bytes_that_are_not_tls_fail_the_handshake(pki: Pki) -> None:
    server = TlsStream(contexts(pki).front)
    with pytest.raises(ssl.SSLError):
        server.handshake(MSG)
    assert server.shutdown() == b""  # no close_notify mid-handshake


def test_sni_picks_the_certificate_and_mutual_tls_gives_the_identity(pki: Pki) -> None:
    ctx = contexts(pki, sni=(("other.example.com", str(pki.cert("other")),
                              str(pki.key("other"))),),
                   client_ca=str(pki.ca), trusted_peers=frozenset({"trunk.example.net"}))
    server = TlsStream(ctx.front)
    client = Client(pki.client_context(cert="client"), name="other.example.com")
    connect(server, client)
    served = client.sslobj.getpeercert()
    assert served is not None and ("DNS", "other.example.com") in served["subjectAltName"]
    assert ctx.trusted_peer(server.sslobj) == "trunk.example.net"


def test_a_reload_reaches_the_next_handshake(pki: Pki, tmp_path: Path) -> None:
    cert, key = tmp_path / "live.crt", tmp_path / "live.key"
    cert.write_bytes(pki.cert("server").read_bytes())
    key.write_bytes(pki.key("server").read_bytes())
    ctx = TlsContexts(TlsSettings(cert=str(cert), key=str(key)))
    trusting = pki.client_context()
    trusting.check_hostname = False  # either certificate, verified against the CA
    first = Client(trusting, name="other.example.com")
    connect(TlsStream(ctx.front), first)
    cert.write_bytes(pki.cert("other").read_bytes())
    key.write_bytes(pki.key("other").read_bytes())
    assert ctx.reload()
    second = Client(trusting, name="other.example.com")
    connect(TlsStream(ctx.front), second)
    assert first.sslobj.getpeercert() != second.sslobj.getpeercert()
    served = second.sslobj.getpeercert()
    assert served is not None and ("DNS", "other.example.com") in served["subjectAltName"]
