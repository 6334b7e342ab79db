"""The registrar (RFC 3261 §10.3) over a real UDP socket against an in-process server."""

from __future__ import annotations

import asyncio
import re
import time

import pytest

from protocols.sip.builders import make_response
from protocols.sip.message import NameAddr, Request, Response
from protocols.sip.parser import parse_message
from protocols.sip.serializer import serialize
from protocols.sip.uri import parse_uri
from signaling.registry.base import RegistryFull
from signaling.registry.memory import MemoryRegistry
from signaling.sipcore import SipCore
from tests.signaling.corekit import node
from tests.signaling.inproc import UdpPeer, running_server


def _register(port: int, local: int, *, contacts: list[str], expires: int | None = None,
              call_id: str = "reg-1", cseq: int = 1, user: str = "alice",
              domain: str = "example.com", ruri_domain: str | None = None,
              extra: str = "") -> bytes:
    lines = [f"REGISTER sip:{ruri_domain or domain} SIP/2.0",
             f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK{call_id}{cseq}{len(extra)}",
             "Max-Forwards: 70", f"From: <sip:{user}@{domain}>;tag=f{cseq}",
             f"To: <sip:{user}@{domain}>", f"Call-ID: {call_id}", f"CSeq: {cseq} REGISTER"]
    lines += [f"Contact: {c}" for c in contacts]
    if expires is not None:
        lines.append(f"Expires: {expires}")
    if extra:
        lines.append(extra)
    lines.append("Content-Length: 0\r\n\r\n")
    return "\r\n".join(lines).encode()


async def _ask(peer: UdpPeer, port: int, data: bytes) -> Response:
    peer.send(data, port)
    return await peer.final()


def _expires(resp: Response) -> dict[str, int]:
    return {str(c.uri): int(c.params["expires"] or 0) for c in resp.contacts}


async def test_several_contacts_expires_param_and_header_q_order() -> None:
    async with running_server(domain=["example.com"], max_expires=7200) as srv:
        assert srv.udp_address is not None
        port = srv.udp_address[1]
        peer = await UdpPeer.open()
        resp = await _ask(peer, port, _register(port, peer.port, contacts=[
            "<sip:a@10.0.0.1>;q=0.5", "<sip:b@10.0.0.2>;expires=120;q=0.9",
            "<sip:c@10.0.0.3>"], expires=600))
        assert resp.status == 200
        assert resp.header("Date") is not None  # §10.3 step 8
        got = _expires(resp)
        assert got == {"sip:b@10.0.0.2": 120, "sip:a@10.0.0.1": 600, "sip:c@10.0.0.3": 600}
        # Highest q first (c has the default q=1.0).
        assert [str(c.uri) for c in resp.contacts] == [
            "sip:c@10.0.0.3", "sip:b@10.0.0.2", "sip:a@10.0.0.1"]
        peer.close()


async def test_query_star_removal_and_ordering() -> None:
    async with running_server(domain=["example.com"]) as srv:
        assert srv.udp_address is not None
        port = srv.udp_address[1]
        peer = await UdpPeer.open()
        ok = await _ask(peer, port, _register(port, peer.port, contacts=["<sip:a@10.0.0.1>"]))
        assert ok.status == 200
        query = await _ask(peer, port, _register(port, peer.port, contacts=[], cseq=2))
        assert [str(c.uri) for c in query.contacts] == ["sip:a@10.0.0.1"]
        # §10.3 step 7: same Call-ID, CSeq not higher: the request fails, nothing applied.
        stale = await _ask(peer, port, _register(port, peer.port, contacts=["<sip:a@10.0.0.1>"],
                                                 cseq=1, extra="X-Retry: 1"))
        assert stale.status == 500
        # "*" needs Expires: 0 and no other contact (step 6).
        bad = await _ask(peer, port, _register(port, peer.port, contacts=["*"], expires=60,
                                               cseq=3))
        assert bad.status == 400
        gone = await _ask(peer, port, _register(port, peer.port, contacts=["*"], expires=0,
                                                cseq=4))
        assert gone.status == 200 and gone.contacts == []
        after = await _ask(peer, port, _register(port, peer.port, contacts=[], cseq=5))
        assert after.contacts == []
        peer.close()


async def test_min_expires_domains_and_schemes() -> None:
    async with running_server(domain=["example.com"], min_expires=60) as srv:
        assert srv.udp_address is not None
        port = srv.udp_address[1]
        peer = await UdpPeer.open()
        brief = await _ask(peer, port, _register(port, peer.port, contacts=["<sip:a@10.0.0.1>"],
                                                 expires=10))
        assert brief.status == 423
        assert brief.header("Min-Expires") == "60"
        other = await _ask(peer, port, _register(port, peer.port, contacts=["<sip:a@10.0.0.1>"],
                                                 domain="elsewhere.org", call_id="r2"))
        assert other.status == 403  # step 1: not a domain served here
        aor = await _ask(peer, port, _register(port, peer.port, contacts=["<sip:a@10.0.0.1>"],
                                               domain="elsewhere.org",
                                               ruri_domain="example.com", call_id="r3"))
        assert aor.status == 404  # step 5: AOR not in a served domain
        bad_q = await _ask(peer, port, _register(port, peer.port,
                                                 contacts=["<sip:a@10.0.0.1>;q=2"],
                                                 call_id="r4"))
        assert bad_q.status == 400
        peer.close()


async def test_retransmitted_register_gets_the_same_answer_once_applied() -> None:
    async with running_server(domain=["example.com"]) as srv:
        assert srv.udp_address is not None
        port = srv.udp_address[1]
        peer = await UdpPeer.open()
        data = _register(port, peer.port, contacts=["<sip:a@10.0.0.1>"], call_id="rt")
        first = await _ask(peer, port, data)
        raw_first = peer.raw[-1]
        second = await _ask(peer, port, data)  # §17.2.2: absorbed, last response re-sent
        assert second.status == first.status == 200
        assert peer.raw[-1] == raw_first
        assert srv.core.c_retrans.get("received") == 1
        peer.close()


async def test_expired_bindings_disappear_on_time() -> None:
    async with running_server(domain=["example.com"], min_expires=1,
                              default_expires=1) as srv:
        assert srv.udp_address is not None
        port = srv.udp_address[1]
        peer = await UdpPeer.open()
        ok = await _ask(peer, port, _register(port, peer.port, contacts=["<sip:a@10.0.0.1>"],
                                              expires=1))
        assert _expires(ok) == {"sip:a@10.0.0.1": 1}
        await asyncio.sleep(1.6)
        query = await _ask(peer, port, _register(port, peer.port, contacts=[], cseq=2))
        assert query.contacts == []
        await asyncio.sleep(1.2)  # the sweeper has run: the stored binding is gone too
        assert await srv.registry.count_bindings() == 0
        peer.close()


def test_date_header_is_rfc1123() -> None:
    assert re.fullmatch(r"\w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} GMT",
                        __import__("email.utils").utils.formatdate(0, usegmt=True))


async def test_200_is_byte_identical_to_the_general_builder() -> None:
    # The 200 is written straight to bytes; it must be what make_response + serialize give
    # for the same bindings (§10.3 step 8), with a display name, escapes and URI parameters.
    async with running_server(domain=["example.com"]) as srv:
        assert srv.udp_address is not None
        port = srv.udp_address[1]
        peer = await UdpPeer.open()
        first = await _ask(peer, port, _register(port, peer.port, contacts=[
            "<sip:a%20b@10.0.0.1;transport=udp>;q=0.4"], call_id="b1", user="bytes"))
        assert first.status == 200
        data = _register(port, peer.port, contacts=[
            '"Bob B" <sip:b@10.0.0.2:5070;ob>;expires=90', "<sip:c@[2001:db8::1]>;q=0.7"],
            call_id="b2", user="bytes", extra="Subject: not copied")
        resp = await _ask(peer, port, data)
        assert resp.status == 200 and len(resp.contacts) == 3
        req = parse_message(data)
        assert isinstance(req, Request)
        general = make_response(req, 200, to_tag=SipCore.stateless_tag(req),
                                extra=[("Date", resp.header("Date") or ""),
                                       ("Server", "signaling")])
        general.contacts = [NameAddr(parse_uri(text), None, {"expires": str(left)})
                            for text, left in _expires(resp).items()]
        assert [str(c.uri) for c in general.contacts] == [
            "sip:b@10.0.0.2:5070;ob", "sip:c@[2001:db8::1]", "sip:a%20b@10.0.0.1;transport=udp"]
        assert peer.raw[-1] == serialize(general)
        # Only the wire form is kept (no transaction: protocols.sip.answered): a
        # retransmission gets the same.
        again = await _ask(peer, port, data)
        assert again.status == 200 and peer.raw[-1] == peer.raw[-2]
        assert srv.core.c_resp_out.get("REGISTER", "2xx", "udp") == 3
        assert srv.core.c_retrans.get("sent") == 1
        peer.close()


async def test_a_full_registry_is_answered_503_with_its_retry_after() -> None:
    # RegistryFull (a bound of the location service) is the registry's own answer: 503 with
    # the Retry-After it names (§21.5.4), counted by status; nothing is bound.
    async with running_server(registry=MemoryRegistry(max_aors=1),
                              domain=["example.com"]) as srv:
        assert srv.udp_address is not None
        port = srv.udp_address[1]
        peer = await UdpPeer.open()
        ok = await _ask(peer, port, _register(port, peer.port, contacts=["<sip:a@10.0.0.1>"],
                                              user="first", call_id="full-1"))
        assert ok.status == 200
        full = await _ask(peer, port, _register(port, peer.port, contacts=["<sip:b@10.0.0.2>"],
                                                user="second", call_id="full-2"))
        assert full.status == 503
        assert full.header("Retry-After") == str(RegistryFull.retry_after)
        assert full.to.tag and not full.contacts
        assert srv.registrar.c_register.get("503") == 1
        assert await srv.registry.count_aors() == 1
        peer.close()


async def test_registrar_without_sockets_stores_the_binding_and_answers_from_its_source(
) -> None:
    """§10.3 steps 1-8 decided with no listener (tests/signaling/corekit.py): the binding is in
    the registry before the 200 goes back to where the REGISTER came from; a malformed expires
    is 400 and stores nothing."""
    async with node() as n:
        n.receive(_register(5060, 5070, contacts=["<sip:alice@192.0.2.10:5070>"], expires=300),
                  "192.0.2.10", 5070)
        ok, peer = await n.udp.final()
        assert ok.status == 200 and (peer.host, peer.port) == ("192.0.2.10", 5070)
        assert _expires(ok) == {"sip:alice@192.0.2.10:5070": 300}
        bindings = await n.registry.lookup("sip:alice@example.com", time.time())
        assert [b.contact for b in bindings] == ["sip:alice@192.0.2.10:5070"]
        assert bindings[0].source == "192.0.2.10:5070"
        n.receive(_register(5060, 5070, contacts=["<sip:bad@192.0.2.10>;expires=x"],
                            user="bad", call_id="reg-bad"), "192.0.2.10", 5070)
        bad, _ = await n.udp.final()
        assert bad.status == 400
        assert await n.registry.lookup("sip:bad@example.com", time.time()) == []


@pytest.mark.parametrize("path_mode", ["strict", "lazy"])
async def test_path_is_stored_and_returned_when_supported(path_mode: str) -> None:
    """RFC 3327 §5.3: the Path of a REGISTER is stored with its bindings, and copied, in
    order, into the 200 when the UA supports path.  Without ``Supported: path`` it is the
    registrar's policy: ``strict`` (the recommended one) answers 420 with ``Unsupported:
    path`` and stores nothing; ``lazy`` stores the Path and returns none.  A malformed Path
    is 400."""
    async with running_server(domain=["example.com"], path_mode=path_mode) as srv:
        assert srv.udp_address is not None
        port = srv.udp_address[1]
        peer = await UdpPeer.open()
        path = ("Path: <sip:edge1.example.net;lr>, <sip:edge2.example.net:5070;lr>\r\n"
                "Path: <sip:core-edge.example.net;lr;ob>")
        resp = await _ask(peer, port, _register(
            port, peer.port, contacts=["<sip:alice@10.0.0.9:5060>"], cseq=1,
            extra=path + "\r\nSupported: outbound, path"))
        assert resp.status == 200
        assert resp.headers("Path") == ["<sip:edge1.example.net;lr>",
                                        "<sip:edge2.example.net:5070;lr>",
                                        "<sip:core-edge.example.net;lr;ob>"]
        bindings = await srv.registry.lookup("sip:alice@example.com", 0.0)
        assert [b.path for b in bindings] == [("<sip:edge1.example.net;lr>",
                                               "<sip:edge2.example.net:5070;lr>",
                                               "<sip:core-edge.example.net;lr;ob>")]
        resp = await _ask(peer, port, _register(
            port, peer.port, contacts=["<sip:alice@10.0.0.9:5060>"], cseq=2,
            extra="Path: <sip:edge1.example.net;lr>\r\nSupported: outbound"))
        bindings = await srv.registry.lookup("sip:alice@example.com", 0.0)
        if path_mode == "strict":
            assert (resp.status, resp.header("Unsupported")) == (420, "path")
            assert [b.path for b in bindings] == [("<sip:edge1.example.net;lr>",
                                                   "<sip:edge2.example.net:5070;lr>",
                                                   "<sip:core-edge.example.net;lr;ob>")]
        else:
            assert resp.status == 200 and resp.headers("Path") == []
            assert [b.path for b in bindings] == [("<sip:edge1.example.net;lr>",)]
        for bad, status in (("Path: <sip:edge1.example.net;lr", 400),
                            ("Path: <tel:+123>", 416)):
            resp = await _ask(peer, port, _register(
                port, peer.port, contacts=["<sip:alice@10.0.0.9:5060>"], cseq=3,
                call_id=f"bad{status}", extra=bad + "\r\nSupported: path"))
            assert resp.status == status
        peer.close()


async def test_what_one_binding_stores_is_bounded_400_and_nothing_kept() -> None:
    async with running_server(domain=["example.com"], max_contact_length=128) as srv:
        assert srv.udp_address is not None
        port = srv.udp_address[1]
        peer = await UdpPeer.open()
        long_uri = "sip:a@10.0.0.1;x=" + "y" * 120
        cases = [
            (_register(port, peer.port, contacts=[f"<{long_uri}>"], call_id="long-1"),
             "Contact URI too long"),
            (_register(port, peer.port, contacts=["<sip:a@10.0.0.1>"], call_id="c" * 257),
             "Call-ID too long"),
            (_register(port, peer.port, contacts=['<sip:a@10.0.0.1>;+sip.instance="<urn:'
                                                  + "u" * 260 + '>"'], call_id="long-3"),
             "+sip.instance too long"),
            (_register(port, peer.port, contacts=["<sip:a@10.0.0.1>"], call_id="long-4",
                       user="u" * 130), "To URI too long"),
        ]
        for data, reason in cases:
            resp = await _ask(peer, port, data)
            assert (resp.status, resp.reason) == (400, reason)
        # A contact just within the bound is stored; the rejected ones left nothing.
        ok = await _ask(peer, port, _register(port, peer.port, contacts=[f"<{long_uri[:128]}>"],
                                              call_id="long-5"))
        assert ok.status == 200 and len(ok.contacts) == 1
        assert await srv.registry.count_bindings() == 1
        assert srv.registrar.c_register.get("400") == 4
        peer.close()


async def test_bindings_per_aor_and_memory_budget_answer_503_counted_by_bound() -> None:
    async with running_server(domain=["example.com"], max_bindings_per_aor=3) as srv:
        assert srv.udp_address is not None
        port = srv.udp_address[1]
        peer = await UdpPeer.open()
        three = [f"<sip:d{i}@10.0.0.{i}>" for i in range(3)]
        assert (await _ask(peer, port, _register(port, peer.port, contacts=three))).status == 200
        full = await _ask(peer, port, _register(port, peer.port, call_id="reg-2",
                                                contacts=["<sip:d9@10.0.0.9>"]))
        assert full.status == 503 and full.header("Retry-After") == "60"
        assert srv.registrar.c_full.get("per_aor") == 1
        assert await srv.registry.count_bindings() == 3
        peer.close()
    budget = MemoryRegistry(max_bytes=2000)  # room for one small AOR (~1.4 kB), not two
    async with running_server(registry=budget, domain=["example.com"]) as srv:
        assert srv.udp_address is not None
        port = srv.udp_address[1]
        peer = await UdpPeer.open()
        ok = await _ask(peer, port, _register(port, peer.port, contacts=["<sip:m@10.0.0.1>"],
                                              user="m1", call_id="mem-1"))
        assert ok.status == 200
        full = await _ask(peer, port, _register(port, peer.port, contacts=["<sip:m@10.0.0.2>"],
                                                user="m2", call_id="mem-2"))
        assert full.status == 503 and full.header("Retry-After") == "60"
        assert srv.registrar.c_full.get("memory") == 1
        assert await srv.registry.count_aors() == 1
        peer.close()


async def test_udp_answer_is_cut_to_the_requests_own_contacts_beyond_the_limit() -> None:
    # Reflection: ten bindings with 200-byte contacts make a ~2.5 kB list; a small query
    # REGISTER over UDP (spoofable) must not return it.
    async with running_server(domain=["example.com"]) as srv:
        assert srv.udp_address is not None
        port = srv.udp_address[1]
        peer = await UdpPeer.open()
        uris = [f"sip:r{i}@10.0.0.{i};x={'z' * 180}" for i in range(10)]
        for i, uri in enumerate(uris):
            resp = await _ask(peer, port, _register(port, peer.port, contacts=[f"<{uri}>"],
                                                    call_id=f"refl-{i}", user="refl"))
            assert resp.status == 200
        assert await srv.registry.count_bindings() == 10
        cut_before = srv.registrar.c_cut.get()  # the later registrations were cut already
        assert cut_before > 0
        query = _register(port, peer.port, contacts=[], call_id="refl-q", user="refl")
        resp = await _ask(peer, port, query)
        answer = peer.raw[-1]
        assert resp.status == 200 and not resp.contacts
        assert (resp.header("Warning") or "").startswith("399 ")
        assert len(answer) <= srv.cfg.udp_answer_limit and len(answer) < 2 * len(query)
        # A refresh lists its own binding, with its expiry, and nothing else.
        refresh = _register(port, peer.port, contacts=[f"<{uris[3]}>"], call_id="refl-3",
                            cseq=2, user="refl")
        resp = await _ask(peer, port, refresh)
        assert resp.status == 200 and [str(c.uri) for c in resp.contacts] == [uris[3]]
        assert len(peer.raw[-1]) < len(refresh) + 400
        assert srv.registrar.c_cut.get() == cut_before + 2
        peer.close()
