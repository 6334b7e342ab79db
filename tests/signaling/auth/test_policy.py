"""The digest policy against an in-process server over real UDP sockets (RFC 3261 §22)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from protocols.sip.digest import challenge_head
from protocols.sip.message import Request, Response
from signaling.auth.subscribers import FileSubscribers, Subscriber
from signaling.config import load_config
from signaling.server import Server
from signaling.transports.base import Peer
from tests.peers.sipua import StreamUA, WsUA
from tests.signaling.auth.sipauth import DOMAIN, Client, open_peer
from tests.signaling.inproc import running_server
from tests.tlscerts import make_pki

PASSWORDS = {"alice": "wonderland", "bob": "builder"}


@asynccontextmanager
async def auth_server(tmp: Path, **options: Any) -> AsyncIterator[tuple[Server, int]]:
    path = tmp / "subscribers.jsonl"
    store = FileSubscribers(str(path))
    for user, password in PASSWORDS.items():
        await store.put(Subscriber.create(user, DOMAIN, password))
    opts: dict[str, Any] = {"domain": [DOMAIN], "auth": "on", "subscribers": str(path),
                            "auth_algorithms": ["MD5", "SHA-256", "SHA-512-256"]}
    opts.update(options)
    async with running_server(**opts) as srv:
        assert srv.udp_address is not None
        yield srv, srv.udp_address[1]


async def _bindings(srv: Server, user: str) -> list[str]:
    return [b.contact for b in await srv.registry.lookup(f"sip:{user}@{DOMAIN}", time.time())]


def _shape(resp: Response) -> list[tuple[tuple[str, str], ...]]:
    """A challenge without its nonce: what must not differ between unknown and wrong."""
    return [tuple(sorted((k, v) for k, v in c.items() if k != "nonce"))
            for c in Client.challenges(resp, "WWW-Authenticate")]


async def test_default_offers_md5_alone(tmp_path: Path) -> None:
    async with auth_server(tmp_path, auth_algorithms=None) as (_srv, port):
        first, _ = await Client(await open_peer(), port, "alice").register(None)
        assert [c["algorithm"] for c in Client.challenges(first, "WWW-Authenticate")] == ["MD5"]


async def test_register_is_challenged_strongest_first_and_accepted_with_each_algorithm(
        tmp_path: Path) -> None:
    async with auth_server(tmp_path) as (srv, port):
        alice = Client(await open_peer(), port, "alice")
        first, _ = await alice.register(None)
        assert first.status == 401
        chals = Client.challenges(first, "WWW-Authenticate")
        assert [c["algorithm"] for c in chals] == ["SHA-512-256", "SHA-256", "MD5"]
        assert {c["realm"] for c in chals} == {DOMAIN} and all(c["qop"] == "auth" for c in chals)
        assert len({c["nonce"] for c in chals}) == 1
        assert await _bindings(srv, "alice") == []
        for n, alg in enumerate(("SHA-512-256", "SHA-256", "MD5")):
            resp, _ = await alice.register("wonderland", algorithm=alg, call_id=f"r{n}")
            assert resp.status == 200, alg
        assert len(await _bindings(srv, "alice")) == 1
        assert srv.metrics.exposition().count(b'signaling_auth_total{result="ok"} 3.0') == 1


async def test_unknown_user_and_wrong_password_get_the_same_answer(tmp_path: Path) -> None:
    async with auth_server(tmp_path) as (srv, port):
        mallory = Client(await open_peer(), port, "alice")
        wrong, _ = await mallory.register("guess", call_id="w")
        ghost = Client(await open_peer(), port, "nobody")
        unknown, _ = await ghost.register("guess", call_id="u")
        assert wrong.status == unknown.status == 401
        assert _shape(wrong) == _shape(unknown)
        assert wrong.reason == unknown.reason
        assert await _bindings(srv, "alice") == [] and await _bindings(srv, "nobody") == []


async def test_replayed_authorization_cannot_take_over_a_binding(tmp_path: Path) -> None:
    async with auth_server(tmp_path) as (srv, port):
        alice = Client(await open_peer(), port, "alice")
        resp, header = await alice.register("wonderland")
        assert resp.status == 200 and header is not None
        assert await _bindings(srv, "alice") == [f"sip:alice@127.0.0.1:{alice.peer.port}"]
        # The attacker captured alice's header and puts it in its own REGISTER, pointing
        # alice's AOR at itself: a new transaction, another Contact, the same nonce count.
        attacker = Client(await open_peer(), port, "alice")
        forged = attacker.request("REGISTER", f"sip:{DOMAIN}", to=f"sip:alice@{DOMAIN}",
                                  call_id="evil", expires=600, auth=("Authorization", header),
                                  contact="sip:evil@10.6.6.6")
        answer = await attacker.ask(forged)
        assert answer.status == 401
        assert all(c.get("stale") == "true"
                   for c in Client.challenges(answer, "WWW-Authenticate"))
        assert await _bindings(srv, "alice") == [f"sip:alice@127.0.0.1:{alice.peer.port}"]


async def test_user_cannot_register_another_users_aor(tmp_path: Path) -> None:
    async with auth_server(tmp_path) as (srv, port):
        bob = Client(await open_peer(), port, "bob")
        resp, _ = await bob.register("builder", aor_user="alice", username="bob")
        assert resp.status == 403
        assert await _bindings(srv, "alice") == []


async def test_expired_nonce_is_stale_and_the_retry_succeeds(tmp_path: Path) -> None:
    async with auth_server(tmp_path) as (srv, port):
        clock = [time.time()]
        srv.auth.clock = lambda: clock[0]
        alice = Client(await open_peer(), port, "alice")
        first = await alice.ask(alice.request("REGISTER", f"sip:{DOMAIN}",
                                              to=f"sip:alice@{DOMAIN}", call_id="s"))
        value = alice.answer(first, "WWW-Authenticate", "REGISTER", f"sip:{DOMAIN}", "alice",
                             "wonderland")
        clock[0] += srv.cfg.auth_nonce_lifetime + 1
        late = await alice.ask(alice.request("REGISTER", f"sip:{DOMAIN}",
                                             to=f"sip:alice@{DOMAIN}", call_id="s",
                                             auth=("Authorization", value)))
        assert late.status == 401
        assert all(c.get("stale") == "true" for c in Client.challenges(late, "WWW-Authenticate"))
        again = alice.answer(late, "WWW-Authenticate", "REGISTER", f"sip:{DOMAIN}", "alice",
                             "wonderland")
        ok = await alice.ask(alice.request("REGISTER", f"sip:{DOMAIN}", to=f"sip:alice@{DOMAIN}",
                                           call_id="s", auth=("Authorization", again)))
        assert ok.status == 200


async def test_calls_need_proxy_authorization_for_the_from_identity(tmp_path: Path) -> None:
    async with auth_server(tmp_path) as (_srv, port):
        bob = Client(await open_peer(), port, "bob")
        assert (await bob.register("builder"))[0].status == 200
        alice = Client(await open_peer(), port, "alice")
        invite = alice.request("INVITE", f"sip:bob@{DOMAIN}", to=f"sip:bob@{DOMAIN}",
                               call_id="call-1")
        first = await alice.ask(invite)
        assert first.status == 407
        assert [c["algorithm"] for c in Client.challenges(first, "Proxy-Authenticate")] == [
            "SHA-512-256", "SHA-256", "MD5"]
        assert await bob.peer.silent(0.3)  # nothing reached bob
        # Authenticated as bob while calling as alice: forbidden.
        as_bob = alice.answer(first, "Proxy-Authenticate", "INVITE", f"sip:bob@{DOMAIN}",
                              "bob", "builder")
        resp = await alice.ask(alice.request("INVITE", f"sip:bob@{DOMAIN}",
                                             to=f"sip:bob@{DOMAIN}", call_id="call-1",
                                             auth=("Proxy-Authorization", as_bob)))
        assert resp.status == 403
        # The nonce's count 1 is spent (RFC 7616 §3.4): the next use counts 2.
        value = alice.answer(first, "Proxy-Authenticate", "INVITE", f"sip:bob@{DOMAIN}",
                             "alice", "wonderland", algorithm="SHA-256", nc=2)
        alice.peer.send(alice.request("INVITE", f"sip:bob@{DOMAIN}", to=f"sip:bob@{DOMAIN}",
                                      call_id="call-1", auth=("Proxy-Authorization", value)),
                        port)
        while not isinstance(got := await bob.peer.recv(5.0), Request):
            pass
        assert got.method == "INVITE" and got.call_id == "call-1"
        # §22.3: the proxy consumed the credentials for its realm.
        assert got.header("Proxy-Authorization") is None


async def test_ack_cancel_and_in_dialog_requests_are_not_challenged(tmp_path: Path) -> None:
    async with auth_server(tmp_path) as (_srv, port):
        alice = Client(await open_peer(), port, "alice")
        cancel = await alice.ask(alice.request("CANCEL", f"sip:bob@{DOMAIN}",
                                               to=f"sip:bob@{DOMAIN}", call_id="c"))
        assert cancel.status == 481  # §9.2: no transaction to cancel, never 407 (§22.1)
        bye = await alice.ask(alice.request("BYE", f"sip:bob@{DOMAIN}", to=f"sip:bob@{DOMAIN}",
                                            to_tag="x", call_id="d"))
        assert bye.status == 481  # follows the (missing) dialog, not a new challenge


async def test_foreign_callers_reach_our_users_and_relaying_needs_our_identity(
        tmp_path: Path) -> None:
    async with auth_server(tmp_path, relay=True) as (_srv, port):
        peer = Client(await open_peer(), port, "carol")
        # From another domain to one of ours: not ours to authenticate (bob is not online).
        inbound = peer.request("MESSAGE", f"sip:bob@{DOMAIN}", to=f"sip:bob@{DOMAIN}",
                               call_id="m1").replace(f"carol@{DOMAIN}".encode(),
                                                     b"carol@elsewhere.org")
        assert (await peer.ask(inbound)).status == 404  # the proxy's answer, not 407
        # From another domain to another domain: an open relay if let through.
        relay = peer.request("MESSAGE", "sip:dave@elsewhere.net", to="sip:dave@elsewhere.net",
                             call_id="m2").replace(f"carol@{DOMAIN}".encode(),
                                                   b"carol@elsewhere.org")
        assert (await peer.ask(relay)).status == 403


async def test_trusted_sources_pass_without_credentials(tmp_path: Path) -> None:
    async with auth_server(tmp_path, trusted=["127.0.0.0/8"]) as (srv, port):
        alice = Client(await open_peer(), port, "alice")
        resp, _ = await alice.register(None)
        assert resp.status == 200
        assert len(await _bindings(srv, "alice")) == 1


async def test_trusted_tls_identity_passes_without_credentials(tmp_path: Path) -> None:
    """Mutual TLS (RFC 5922 §7.3), over TLS and WSS: a client certificate from the configured
    CA naming a trusted identity (``tls_trusted_peers``) passes without credentials, as a
    trusted source does; one naming another identity, or none, is challenged like anyone; a
    self-signed certificate claiming the trusted name does not even connect."""
    pki = make_pki(tmp_path / "pki")
    tls = {"sip_tls": "127.0.0.1:0", "sip_wss": "127.0.0.1:0",
           "tls_cert": str(pki.cert("server")), "tls_key": str(pki.key("server")),
           "tls_client_ca": str(pki.ca), "tls_trusted_peers": ["Trunk.Example.Net"]}

    def context(cert: str | None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(pki.ca))
        if cert is not None:
            ctx.load_cert_chain(pki.cert(cert), pki.key(cert))
        return ctx

    def final(method: str) -> Callable[[Request | Response], bool]:
        return lambda m: isinstance(m, Response) and m.status >= 200 and m.cseq.method == method

    async with auth_server(tmp_path, **tls) as (srv, port):
        assert srv.wss_address is not None
        tls_port, wss_port = srv.stream_addresses["tls"][1], srv.wss_address[1]
        outcomes = {}
        for cert in ("client", "other", None):
            uas: list[StreamUA | WsUA] = [StreamUA("alice", DOMAIN, port, tls_port, context(cert)),
                             WsUA("alice", DOMAIN, port, wss_port, context(cert))]
            for ua in uas:
                await ua.start()
                try:
                    await ua.send(ua.register())
                    registered = await ua.recv(final("REGISTER"))
                    await ua.send(ua.invite("bob"))  # bob has no binding: 404 once admitted
                    invited = await ua.recv(final("INVITE"))
                finally:
                    await ua.close()
                assert isinstance(registered, Response) and isinstance(invited, Response)
                outcomes[(cert, ua.transport)] = (registered.status, invited.status)
        assert outcomes == {("client", "TLS"): (200, 404), ("client", "WSS"): (200, 404),
                            ("other", "TLS"): (401, 407), ("other", "WSS"): (401, 407),
                            (None, "TLS"): (401, 407), (None, "WSS"): (401, 407)}
        # The trusted TLS connection's binding; the WSS one left with its connection (RFC 7118
        # §5), and nothing was bound without credentials.
        [binding] = await _bindings(srv, "alice")
        assert binding.endswith(";transport=tls")
        stranger = StreamUA("alice", DOMAIN, port, tls_port, context("stranger"))
        with contextlib.suppress(ssl.SSLError, ConnectionError):  # refused in the handshake
            await stranger.start()
            # TLS 1.3: the client's side of the handshake completes first; the server's
            # alert then closes the connection, and the REGISTER gets no answer.
            await stranger.send(stranger.register())
            await asyncio.wait_for(stranger.closed.wait(), 10)
        await stranger.close()
        assert stranger.received == []


async def test_password_guessing_blocks_the_source_not_others(tmp_path: Path) -> None:
    async with auth_server(tmp_path, auth_fail_limit=3) as (srv, port):
        guesser = Client(await open_peer(), port, "alice")
        for n in range(3):
            resp, _ = await guesser.register(f"guess{n}", call_id=f"g{n}")
            assert resp.status == 401
        guesser.peer.send(guesser.request("REGISTER", f"sip:{DOMAIN}", to=f"sip:alice@{DOMAIN}",
                                          call_id="g9"), port)
        assert await guesser.peer.silent(0.5)  # blocked: dropped, not answered
        assert [b.host for b in srv.guard.active(srv.core.now())] == ["127.0.0.1"]
        # Even the right password is not heard while the block lasts.
        guesser.peer.send(guesser.request("REGISTER", f"sip:{DOMAIN}", to=f"sip:alice@{DOMAIN}",
                                          call_id="g10"), port)
        assert await guesser.peer.silent(0.5)
        bob = Client(await open_peer("127.0.0.2"), port, "bob", host="127.0.0.2")
        assert (await bob.register("builder"))[0].status == 200
        text = srv.metrics.exposition()
        assert b'signaling_guard_blocks_total{reason="auth_failures"} 1.0' in text
        assert b'signaling_auth_total{result="failed"} 3.0' in text


async def test_flooding_source_is_blocked_while_another_keeps_registering(
        tmp_path: Path) -> None:
    async with auth_server(tmp_path, pike_rate=1, pike_burst=5, pike_block=60) as (srv, port):
        flood = Client(await open_peer(), port, "alice")
        for n in range(30):  # far beyond 5 + 1/s even if sending took many seconds
            flood.peer.send(flood.request("REGISTER", f"sip:{DOMAIN}", to=f"sip:alice@{DOMAIN}",
                                          call_id=f"f{n}"), port)
        answered = 0
        while not await flood.peer.silent(0.5):
            answered += 1
        assert 1 <= answered <= 10
        assert [b.reason for b in srv.guard.active(srv.core.now())] == ["flood"]
        bob = Client(await open_peer("127.0.0.2"), port, "bob", host="127.0.0.2")
        assert (await bob.register("builder"))[0].status == 200
        text = srv.metrics.exposition()
        assert b'signaling_guard_blocks_total{reason="flood"} 1.0' in text
        assert b'signaling_guard_dropped_total{reason="flood"}' in text


async def test_unauthenticated_register_leaves_no_state_and_retransmissions_match(
        tmp_path: Path) -> None:
    async with auth_server(tmp_path) as (srv, port):
        alice = Client(await open_peer(), port, "alice")
        data = alice.request("REGISTER", f"sip:{DOMAIN}", to=f"sip:alice@{DOMAIN}",
                             call_id="st", expires=600)
        before = len(srv.core.table)
        alice.peer.send(data, port)
        first = await alice.peer.final(5.0)
        alice.peer.send(data, port)  # the same request again: a retransmission
        again = await alice.peer.final(5.0)
        assert first.status == 401
        # The same answer, byte for byte, but for the nonce's head when a tick (the nonce's
        # time, digest.TICK) began between the two; its salted unique part is the same.
        nonce, nonce_again = (Client.challenges(r, "WWW-Authenticate")[0]["nonce"]
                              for r in (first, again))
        assert nonce[32:] == nonce_again[32:]
        assert alice.peer.raw[0].replace(nonce.encode(), nonce_again.encode()) == \
            alice.peer.raw[1]
        assert len(srv.core.table) == before  # answered statelessly: no transaction


#: REGISTERs the unparsed challenge takes or leaves: a SIPp-like one, then shapes of other
#: clients (display names, compact names, no rport, a leading-zero CSeq, sips) and ones the
#: full way must judge (credentials, Require, two Vias, a To tag, a body, a folded line).
_SHAPES = [
    "REGISTER sip:{d} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{p};branch=z9hG4bK-{n};rport\r\n"
    "Max-Forwards: 70\r\nFrom: <sip:alice@{d}>;tag={n}r1\r\nTo: <sip:alice@{d}>\r\n"
    "Call-ID: {n}-cid@127.0.0.1\r\nCSeq: 1 REGISTER\r\nContact: <sip:alice@127.0.0.1:{p}>\r\n"
    "Expires: 600\r\nContent-Length: 0\r\n\r\n",
    "REGISTER sips:{d} SIP/2.0\r\nv: SIP/2.0/UDP 10.9.9.9:5060;branch=z9hG4bK{n};rport=7\r\n"
    "f: \"Al \\\"A\\\"\" <sip:alice@{d}>;tag=a{n};x=y\r\nt: <sip:alice@{d}:5060;transport=udp>\r\n"
    "i: {n}\r\nCSeq: 0042 REGISTER\r\nl: 0\r\n\r\n",
    "REGISTER sip:{d} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{p};branch=z9hG4bK{n}\r\n"
    "From: <sip:alice@{d}>\r\nTo: <sip:{d}>\r\nCall-ID: {n}\r\nCSeq: 9 REGISTER\r\n\r\n",
    "REGISTER sip:{d} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{p};branch=z9hG4bK{n}\r\n"
    "Via: SIP/2.0/UDP 10.1.1.1;branch=z9hG4bKx\r\nFrom: <sip:alice@{d}>;tag=1\r\n"
    "To: <sip:alice@{d}>\r\nCall-ID: {n}\r\nCSeq: 9 REGISTER\r\n\r\n",
    "REGISTER sip:{d} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{p};branch=z9hG4bK{n}\r\n"
    "From: <sip:alice@{d}>;tag=1\r\nTo: \"A\" <sip:alice@{d}>;foo=bar\r\nCall-ID: {n}\r\n"
    "CSeq: 9 REGISTER\r\nRequire: path\r\n\r\n",
    "REGISTER sip:{d} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{p};branch=z9hG4bK{n}\r\n"
    "From: <sip:alice@{d}>;tag=1\r\nTo: <sip:alice@{d}>\r\nCall-ID: {n}\r\n"
    "CSeq: 9 REGISTER\r\nAuthorization: Digest username=\"alice\", realm=\"{d}\", "
    "nonce=\"x\", uri=\"sip:{d}\", response=\"0\"\r\nContent-Length: 2\r\n\r\nhi",
]


async def test_the_unparsed_challenge_sends_the_bytes_the_full_way_sends(
        tmp_path: Path) -> None:
    """Each shape and every one-character deletion of the first (the copied headers
    included), sent through the core twice, with and without the unparsed challenge: where
    the full way answers 401, the unparsed one answers the very same bytes; where the
    unparsed one answers and the full way does not, the full way refused the request for
    what the challenge does not look at (the parse: 400), never let it through."""
    async with auth_server(tmp_path) as (srv, _port):
        srv.auth.clock = lambda: 1_000_000.0  # one nonce tick: salted nonces repeat
        fast, head_of = srv.core.answer_unparsed, challenge_head
        assert fast is not None and head_of is not None, "the C fast path is not built"
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        peer = Peer("udp", "127.0.0.1", sock.getsockname()[1])

        async def answers(data: bytes, unparsed: bool) -> list[bytes]:
            srv.core.answer_unparsed = fast if unparsed else None
            srv.core.receive(data, peer)
            await srv.core.dispatcher.drain(10.0)  # the answers of the full way's workers
            out = []
            with contextlib.suppress(BlockingIOError):
                while True:
                    out.append(sock.recv(65535))
            return out

        # Every variant has its own branch and Call-ID ({n}): none is taken for another's
        # retransmission by a transaction the full way left.
        first = _SHAPES[0]
        templates = list(_SHAPES) + [first[:i] + first[i + 1:] for i in range(len(first))]
        variants = []
        for n, template in enumerate(templates):
            with contextlib.suppress(KeyError, IndexError, ValueError):
                variants.append(template.format(d=DOMAIN, p=peer.port, n=n).encode())
        taken = same = 0
        try:
            for n, data in enumerate(variants):
                if n % 50 == 49:
                    await asyncio.sleep(0.2)  # stay well within the admission limit (503s)
                quick, full = await answers(data, True), await answers(data, False)
                head = head_of(data, peer.host, peer.port)
                took = head is not None and head[0] in srv.core.domains  # answered unparsed
                taken += took
                if len(full) == 1 and full[0].startswith(b"SIP/2.0 401 "):
                    assert quick == full, data
                    same += took
                elif took:
                    assert full == [] or full[0].startswith(b"SIP/2.0 400 "), (data, full)
        finally:
            srv.core.answer_unparsed = fast
            sock.close()
        assert head_of(variants[0], peer.host, peer.port) is not None
        assert head_of(variants[1], peer.host, peer.port) is not None
        assert all(head_of(v, peer.host, peer.port) is None
                   for v in variants[3:len(_SHAPES)])
        assert same > 100 and taken >= same  # compared on many, not vacuously


async def test_the_unparsed_challenge_is_no_work_for_admission_but_a_late_read_is(
        tmp_path: Path) -> None:
    """A stateless 401 gives the workers nothing to do: with admission control at its lowest
    limit, far more REGISTERs without credentials than it would admit all get their 401
    (none a 503, none dropped) and take none of its admissions; a REGISTER read later than
    max_receive_delay is left to the screen, which drops it unanswered."""
    async with auth_server(tmp_path, overload_max_rate="1") as (srv, _port):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        peer = Peer("udp", "127.0.0.1", sock.getsockname()[1])
        try:
            count = 40  # the limit's burst is 2 and its 503 budget 6 times that
            for n in range(count):
                srv.core.receive(_SHAPES[0].format(d=DOMAIN, p=peer.port, n=n).encode(), peer)
            answers = []
            with contextlib.suppress(BlockingIOError):
                while True:
                    answers.append(sock.recv(65535))
            assert len(answers) == count
            assert all(a.startswith(b"SIP/2.0 401 ") for a in answers)
            assert srv.core.overload.c_admitted.get("REGISTER") == 0
            late = _SHAPES[0].format(d=DOMAIN, p=peer.port, n=count).encode()
            srv.core.receive(late, peer, waited=srv.cfg.max_receive_delay * 3)
            with pytest.raises(BlockingIOError):
                sock.recv(65535)
            assert srv.core.overload.c_dropped.get("receive_delay", "REGISTER") == 1
        finally:
            sock.close()


@asynccontextmanager
async def shared_node(tmp: Path, redis_url: str) -> AsyncIterator[tuple[Server, int]]:
    """A node on the shared Redis registry, with the nonce secret every node shares."""
    path = tmp / "subscribers.jsonl"
    store = FileSubscribers(str(path))
    await store.put(Subscriber.create("alice", DOMAIN, PASSWORDS["alice"]))
    cfg = load_config({"sip_udp": "127.0.0.1:0", "sip_ws": "off", "admin": "off",
                       "diameter": "off", "pike_rate": "0", "domain": [DOMAIN],
                       "subscribers": str(path), "registry": redis_url,
                       "auth_secret": "shared-nonce-secret-0123456789"}, env={})
    server = Server(cfg)
    await server.start()
    try:
        assert server.udp_address is not None
        yield server, server.udp_address[1]
    finally:
        await server.stop()


async def test_nodes_sharing_a_registry_refuse_a_count_used_on_another(
        tmp_path: Path, redis_url: str) -> None:
    async with shared_node(tmp_path, redis_url) as (_a, port_a), \
            shared_node(tmp_path, redis_url) as (b, port_b):
        alice = Client(await open_peer(), port_a, "alice")
        resp, header = await alice.register("wonderland", call_id="shared")
        assert resp.status == 200 and header is not None
        # Node B never saw this nonce, yet verifies it (same secret) and knows its count 1
        # was used on node A: the replay gets a fresh challenge, not a 200.
        thief = Client(await open_peer(), port_b, "alice")
        replay = await thief.ask(thief.request(
            "REGISTER", f"sip:{DOMAIN}", to=f"sip:alice@{DOMAIN}", call_id="theft",
            expires=600, auth=("Authorization", header), contact="sip:evil@10.6.6.6"))
        assert replay.status == 401
        assert b'signaling_auth_total{result="replayed"} 1.0' in b.metrics.exposition()
        # The control: node B accepts a registration it challenged itself.
        assert (await Client(await open_peer(), port_b, "alice").register(
            "wonderland", call_id="b-own"))[0].status == 200
