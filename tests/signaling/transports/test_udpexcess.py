"""The listening socket's excess drain (``signaling/transports/_udpexcess.c``) on real sockets:
what the pace allows comes back in order, new requests beyond it (or that waited too long in
the kernel) get a 503 written from their bytes, the ACK or BYE of such a 503 and the
retransmission of a request let through are dropped and counted, never refused."""

from __future__ import annotations

import contextlib
import os
import random
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.sip_samples import INVITE_SDP, OK_200, REGISTER
from protocols.sip.message import Response
from protocols.sip.parser import parse_message
from signaling.transports import _udpexcess as excess
from signaling.transports.udpshed import WORDS, transaction_hash
from tests.sanitizers import build_sanitized, run_sanitized

_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_SO_RXQ_OVFL = getattr(socket, "SO_RXQ_OVFL", 40)
#: (read, payload, max_wait, overflow, answered INVITE/REGISTER/other, dropped new,
#: dropped retransmissions, dropped of-503, dropped other, late, admitted, REGISTERs of the
#: kernel shed's band answered, dropped): the indexes of ``drain``'s result.
ANSWERED_INVITE, ANSWERED_REGISTER, DROPPED_NEW, DROPPED_RETRANSMISSION = 4, 5, 7, 8
DROPPED_OF_503, DROPPED_OTHER, LATE, ADMITTED, BAND_ANSWERED, BAND_DROPPED = range(9, 15)
#: What one drain lets through of admitted work before it stops reading (``HOLD_MOST``).
HOLD_MOST = 256


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    excess.set_key(os.urandom(16))  # a new key also forgets what earlier tests let through
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with contextlib.closing(server), contextlib.closing(client):
        server.bind(("127.0.0.1", 0))
        server.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        server.setsockopt(socket.SOL_SOCKET, _SO_RXQ_OVFL, 1)
        server.setblocking(False)
        client.bind(("127.0.0.1", 0))
        client.settimeout(2.0)
        yield server, client


def _request(server: socket.socket, client: socket.socket, n: int, method: str = "REGISTER",
             *, to_tag: str = "", via: str = "", call_id: str | None = None) -> bytes:
    port, cport = server.getsockname()[1], client.getsockname()[1]
    via = via or f"SIP/2.0/UDP 127.0.0.1:{cport};branch=z9hG4bK-{n}"
    return (f"{method} sip:127.0.0.1:{port} SIP/2.0\r\nVia: {via}\r\n"
            f"Via: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bK-down{n}\r\nMax-Forwards: 70\r\n"
            f"From: <sip:u{n}@127.0.0.1>;tag=f{n}\r\nTo: <sip:u{n}@127.0.0.1>{to_tag}\r\n"
            f"Call-ID: {call_id or f'c{n}@test'}\r\nCSeq: 1 {method}\r\n"
            f"Contact: <sip:u{n}@127.0.0.1:{cport}>\r\nContent-Length: 0\r\n\r\n").encode()


def _send(server: socket.socket, client: socket.socket, *datagrams: bytes) -> None:
    for data in datagrams:
        client.sendto(data, server.getsockname())


Passed = list[tuple[bytes, tuple[str, int] | tuple[str, int, int, int], float]]
Counts = tuple[int, int, float, int | None, int, int, int, int, int, int, int, int, int, int,
               int]


def _drain(server: socket.socket, passes: int, answers: int = 1000, late: float = 60.0,
           salt: int = 0, band: int = 0, band_from: bytes = b"") -> tuple[Counts, Passed]:
    passed: Passed = []
    result = excess.drain(server.fileno(), passes, answers, 1024, 2, 7,
                          b"\r\nServer: test", passed, late, salt, band, band_from)
    return result, passed


def _answers(client: socket.socket, count: int) -> list[Response]:
    out = []
    for _ in range(count):
        msg = parse_message(client.recv(65_535))
        assert isinstance(msg, Response)
        out.append(msg)
    return out


def test_the_pace_comes_back_in_order_and_the_excess_gets_a_503_from_its_bytes(
        pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    requests = [_request(server, client, i) for i in range(5)]
    _send(server, client, *requests)
    result, passed = _drain(server, passes=2)
    assert result[0] == 5
    assert [p[0] for p in passed] == requests[:2]
    assert all(p[1] == client.getsockname() and p[2] >= 0.0 for p in passed)
    assert result[ANSWERED_REGISTER] == 3
    for i, answer in zip(range(2, 5), _answers(client, 3), strict=True):
        req = parse_message(requests[i])
        assert answer.status == 503
        # RFC 3261 §8.2.6.2: Vias, From, Call-ID and CSeq copied, To with a tag of ours
        assert [str(v) for v in answer.vias] == [str(v) for v in req.vias]
        assert answer.from_.tag == f"f{i}" and answer.call_id == req.call_id
        assert (answer.cseq.seq, answer.cseq.method) == (1, "REGISTER")
        assert answer.to.uri == req.to.uri
        assert answer.to.tag == excess.refusal_tag(req.call_id.encode())
        retry = answer.header("Retry-After")
        assert retry is not None and 2 <= int(retry) <= 7  # jittered (§21.5.4, RFC 6357)
        assert answer.header("Server") == "test"
    client.settimeout(0.05)
    with pytest.raises(TimeoutError):
        client.recv(65_535)  # the two let through were not answered here


def test_a_bare_rport_is_filled_and_a_foreign_sent_by_gets_received(
        pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    cport = client.getsockname()[1]
    _send(server, client,
          _request(server, client, 1, via="SIP/2.0/UDP 127.0.0.1:9;rport;branch=z9hG4bK-a"),
          _request(server, client, 2, via="SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-b"))
    _drain(server, passes=0)
    first, second = _answers(client, 2)
    assert first.vias[0].params["rport"] == str(cport)  # RFC 3581 §4
    assert first.vias[0].params["received"] == "127.0.0.1"
    assert second.vias[0].params["received"] == "127.0.0.1"  # RFC 3261 §18.2.1


def test_the_ack_or_bye_of_a_refusal_is_dropped_and_another_dialog_passes(
        pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    tag = excess.refusal_tag(b"c1@test")
    ours = [_request(server, client, 1, method, to_tag=f";tag={tag}") for method in
            ("ACK", "BYE")]
    other = _request(server, client, 1, "BYE", to_tag=";tag=x503" + "0" * 16)
    _send(server, client, *ours, other)
    result, passed = _drain(server, passes=10)
    assert result[DROPPED_OF_503] == 2
    assert [p[0] for p in passed] == [other]  # a tag of the form but not ours: a dialog's


def test_a_retransmission_of_what_was_let_through_is_dropped_never_refused(
        pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    invite = _request(server, client, 7, "INVITE")
    _send(server, client, invite)
    _, passed = _drain(server, passes=1)
    assert len(passed) == 1
    _send(server, client, invite)  # Timer A fired before our 100 Trying arrived
    result, passed = _drain(server, passes=0)
    assert passed == [] and result[DROPPED_RETRANSMISSION] == 1 and result[ANSWERED_INVITE] == 0
    _send(server, client, invite)
    result, passed = _drain(server, passes=1)  # within the pace: to its transaction
    assert [p[0] for p in passed] == [invite]


def test_a_new_request_that_waited_too_long_gets_a_503_whatever_the_pace(
        pair: tuple[socket.socket, socket.socket]) -> None:
    """Let through, a request that waited past the server's max_receive_delay would be
    dropped unanswered by the admission gate and come back retransmitted: it is refused
    here, and what arrived since is let through with the pace it did not use."""
    server, client = pair
    stale = [_request(server, client, i) for i in range(3)]
    _send(server, client, *stale)
    time.sleep(1.0)  # past ``late`` for certain; the fresh one has half a second of slack
    fresh = _request(server, client, 9)
    _send(server, client, fresh)
    result, passed = _drain(server, passes=10, late=0.5)
    assert [p[0] for p in passed] == [fresh]
    assert result[ANSWERED_REGISTER] == 3 and result[LATE] == 3
    assert [a.status for a in _answers(client, 3)] == [503] * 3


def test_beyond_the_503_budget_or_outside_the_subset_new_requests_are_dropped_counted(
        pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    no_cseq = _request(server, client, 3).replace(b"CSeq: 1 REGISTER\r\n", b"")
    _send(server, client, _request(server, client, 1), _request(server, client, 2), no_cseq)
    result, _ = _drain(server, passes=0, answers=1)
    assert result[ANSWERED_REGISTER] == 1 and result[DROPPED_NEW] == 2


def test_rfc7339_clients_and_requests_that_start_nothing_go_the_python_way_or_are_dropped(
        pair: tuple[socket.socket, socket.socket]) -> None:
    """An oc client's request needs our report written into its Via (RFC 7339 §5.2): never
    answered here.  A request of no dialog that starts nothing (OPTIONS) is never refused:
    beyond the pace both are dropped as the kernel's tail drop would have, and the client
    retransmits."""
    server, client = pair
    oc = _request(server, client, 1, via="SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK-o;oc")
    options = _request(server, client, 2, "OPTIONS")
    _send(server, client, oc, options)
    result, passed = _drain(server, passes=2)
    assert [p[0] for p in passed] == [oc, options] and result[ADMITTED] == 0
    _send(server, client, oc, options)
    result, passed = _drain(server, passes=0)
    assert passed == [] and result[DROPPED_OTHER] == 2 and sum(result[4:7]) == 0


def test_admitted_work_passes_whatever_the_pace_and_is_not_charged_to_it(
        pair: tuple[socket.socket, socket.socket]) -> None:
    """Issue 13: responses, in-dialog requests (a To tag not of our 503s: the ACK of a 2xx,
    BYE, PRACK, §12.2) and CANCEL (§9.2) are admitted work, never dropped, whatever the pace:
    a caller that sends its ACK and BYE to the listening port (SIPp does) must not lose them
    to the new requests of a storm.  They do not use the pace: a new request after them
    still gets the one pass there is."""
    server, client = pair
    in_dialog = [_request(server, client, 1, method, to_tag=";tag=callee1")
                 for method in ("ACK", "BYE", "PRACK", "INFO")]
    cancel = _request(server, client, 2, "CANCEL")
    response = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK-r\r\n\r\n"
    invites = [_request(server, client, n, "INVITE") for n in (3, 4)]
    _send(server, client, invites[0], *in_dialog, cancel, response, invites[1])
    result, passed = _drain(server, passes=1)
    assert [p[0] for p in passed] == [invites[0], *in_dialog, cancel, response]
    assert result[ADMITTED] == 6 and result[DROPPED_OTHER] == 0
    assert result[ANSWERED_INVITE] == 1  # the second INVITE: beyond the pace, refused
    assert _answers(client, 1)[0].status == 503
    _send(server, client, *in_dialog)
    result, passed = _drain(server, passes=0)
    assert [p[0] for p in passed] == in_dialog and result[DROPPED_OTHER] == 0


def test_a_flood_of_admitted_work_is_let_through_a_bounded_batch_at_a_time(
        pair: tuple[socket.socket, socket.socket]) -> None:
    """One drain holds the loop for a bounded time: past ``HOLD_MOST`` datagrams of admitted
    work it stops reading, and the rest waits queued for the next drain, none dropped."""
    server, client = pair
    # Room for them all (Linux grants at least twice rmem_max's usual 212,992 bytes: ~1.3 kB
    # a datagram of this size as the kernel counts it).
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    byes = [_request(server, client, n, "BYE", to_tag=";tag=callee") for n in range(270)]
    _send(server, client, *byes)
    result, passed = _drain(server, passes=0)
    assert result[3] is None  # the kernel dropped none: the premise
    assert result[0] == HOLD_MOST == len(passed) == result[ADMITTED]
    result, more = _drain(server, passes=0)
    assert [p[0] for p in passed + more] == byes and result[DROPPED_OTHER] == 0


def test_receive_reads_the_queue_in_order_with_addresses_and_waits(
        pair: tuple[socket.socket, socket.socket]) -> None:
    """The ordinary read (``UdpTransport._read``): every datagram, in order, with its source
    and the time it waited; ``most`` bounds one call; an empty queue reads nothing and raises
    nothing."""
    server, client = pair
    got: Passed = []
    assert excess.receive(server.fileno(), 64, got) == (0, 0, 0.0, -1.0, None, 0)
    assert got == []
    sent = [_request(server, client, n) for n in range(70)]
    _send(server, client, *sent, b"\r\n\r\n")  # a keep-alive is a datagram like any other
    read, payload, max_wait, min_wait, overflow, errors = excess.receive(server.fileno(), 66, got)
    assert (read, errors) == (66, 0) and payload == sum(len(d) for d in sent[:66])
    assert [g[0] for g in got] == sent[:66]
    assert {g[1] for g in got} == {client.getsockname()}
    assert all(0.0 <= g[2] < 60.0 for g in got)  # stamped by the kernel, read just after
    assert min_wait == min(g[2] for g in got) and max_wait == max(g[2] for g in got)
    assert overflow is None  # SO_RXQ_OVFL comes only once the kernel has dropped some
    got.clear()
    assert excess.receive(server.fileno(), 64, got)[0] == 5
    assert [g[0] for g in got] == [*sent[66:], b"\r\n\r\n"]


def test_the_band_a_kernel_shed_dropped_is_refused_whatever_the_pace(
        pair: tuple[socket.socket, socket.socket]) -> None:
    """After the kernel shed's share came down (``udpshed.KernelShed.band``), a REGISTER whose
    transaction hash is in the band it dropped gets a 503, with the pace open: it is the next
    retransmission of a transaction dropped in the storm, which served would be answered
    seconds late.  Out of the band, and what is not a REGISTER, passes; so does the
    retransmission of a REGISTER let through before (its transaction has it)."""
    server, client = pair
    salt, share = 0x5EED_0013, 0.5
    band = int(share * 2**32)
    before = _request(server, client, 999)
    _send(server, client, before)
    assert len(_drain(server, passes=10)[1]) == 1
    registers = [_request(server, client, i) for i in range(100)]  # the queue holds them
    invites = [_request(server, client, i, "INVITE") for i in range(10)]
    _send(server, client, *registers, *invites, before)
    result, passed = _drain(server, passes=1000, salt=salt, band=band)
    inside = [r for r in registers if transaction_hash(r, salt) < band]
    assert 20 < len(inside) < 80  # Binomial(100, 0.5): sd 5
    assert [p[0] for p in passed] == [r for r in registers if r not in inside] + invites + [
        before]
    assert result[BAND_ANSWERED] == len(inside) and result[BAND_DROPPED] == 0
    assert result[ANSWERED_REGISTER] == result[DROPPED_NEW] == result[LATE] == 0
    answers = _answers(client, len(inside))
    assert sorted(a.call_id for a in answers) == sorted(
        str(parse_message(r).call_id) for r in inside)
    assert all(a.status == 503 and a.header("Retry-After") is not None for a in answers)
    # the 503 budget spent: the rest of the band is dropped, counted apart
    _send(server, client, *inside[:10])
    result, passed = _drain(server, passes=1000, answers=4, salt=salt, band=band)
    assert not passed and result[BAND_ANSWERED] == 4 and result[BAND_DROPPED] == 6
    # no band: all pass
    _send(server, client, *inside[:10])
    assert len(_drain(server, passes=1000, salt=salt)[1]) == 10
    # the filter named sources (a flooder): the band is theirs alone, a polite source passes
    _send(server, client, *inside[:10])
    flooder = socket.inet_aton("127.0.0.9")
    assert len(_drain(server, passes=1000, salt=salt, band=band, band_from=flooder)[1]) == 10
    _send(server, client, *inside[10:20])  # not let through before: not remembered
    named = flooder + socket.inet_aton("127.0.0.1")
    result, passed = _drain(server, passes=1000, salt=salt, band=band, band_from=named)
    assert not passed and result[BAND_ANSWERED] == 10
    _answers(client, 10)


def test_the_drain_hashes_as_the_kernel_shed_does(
        pair: tuple[socket.socket, socket.socket]) -> None:
    """The band is the kernel program's (``transaction_hash``, its Python reference): the
    drain's verdicts for REGISTERs of every length (ending within a word, longer than the
    words hashed) are those of the reference against the band."""
    server, client = pair
    rnd = random.Random(13)
    salt = rnd.getrandbits(32)
    band = int(0.6 * 2**32)
    sent = []
    for i in range(300):
        pad = "".join(rnd.choice("abcdefgh0123;=") for _ in range(rnd.choice(
            [0, 1, 2, 3, 50, 200, 4 * WORDS, 1200])))
        sent.append(_request(server, client, i).replace(
            b"Content-Length", f"X-Pad: {pad}\r\nContent-Length".encode()))
    for i in range(0, len(sent), 50):
        _send(server, client, *sent[i:i + 50])
        _, passed = _drain(server, passes=1000, salt=salt, band=band)
        expected = [d for d in sent[i:i + 50] if transaction_hash(d, salt) >= band]
        assert [p[0] for p in passed] == expected
        _answers(client, 50 - len(expected))


def test_the_refusal_tag_is_stable_per_call_id() -> None:
    """§8.2.6.2: a retransmission gets the same tag, another request another."""
    assert excess.refusal_tag(b"a") == excess.refusal_tag(b"a")
    assert excess.refusal_tag(b"a") != excess.refusal_tag(b"b")
    assert excess.refusal_tag(b"a").startswith("x503") and len(excess.refusal_tag(b"a")) == 20


_ASAN_RUN = r"""
import pickle, random, socket, sys
build, repo, seeds_file, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
sys.path[:0] = [build, repo]
import _udpexcess
from tests.sanitizers import mutated
assert _udpexcess.__file__.startswith(build), _udpexcess.__file__
with open(seeds_file, "rb") as f:
    seeds = pickle.load(f)
rnd = random.Random(13)
_udpexcess.set_key(bytes(16))
server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
server.bind(("127.0.0.1", 0))
server.setsockopt(socket.SOL_SOCKET, 35, 1)  # SO_TIMESTAMPNS
server.setsockopt(socket.SOL_SOCKET, 40, 1)  # SO_RXQ_OVFL
server.setblocking(False)
client.bind(("127.0.0.1", 0))
client.setblocking(False)
answered = passed = 0
for _ in range(rounds):
    for _ in range(rnd.randint(1, 40)):
        client.sendto(mutated(rnd, seeds), server.getsockname())
    let_through = []
    result = _udpexcess.drain(server.fileno(), rnd.randint(0, 5), rnd.randint(0, 40), 1024,
                              2, 7, b"\r\nServer: test", let_through, rnd.choice((0.0, 60.0)),
                              rnd.getrandbits(32), rnd.choice((0, 1 << 31, (1 << 32) - 1)),
                              rnd.choice((b"", b"\x7f\x00\x00\x01", b"\x7f\x00\x00\x02" * 3)))
    answered += sum(result[4:7]) + result[13]
    passed += len(let_through)
    for _ in range(rnd.randint(0, 40)):
        client.sendto(mutated(rnd, seeds), server.getsockname())
    let_through = []
    passed += _udpexcess.receive(server.fileno(), rnd.randint(1, 100), let_through)[0]
    _udpexcess.refusal_tag(mutated(rnd, seeds)[:64])
    while True:
        try:
            client.recv(65535)
        except BlockingIOError:
            break
print("answered", answered, "passed", passed)
"""


def test_no_memory_error_under_address_sanitizer(
        tmp_path: Path, pair: tuple[socket.socket, socket.socket]) -> None:
    """The extension rebuilt with ASan and UBSan reads mutated requests, responses, ACKs and
    BYEs of its own refusals off a real socket, passes, refuses and drops them: any
    out-of-bounds access or undefined behaviour on what a peer sends aborts the run."""
    server, client = pair
    repo = Path(__file__).resolve().parents[3]
    build_sanitized([repo / f"signaling/transports/{name}.c"
                     for name in ("_udpexcess", "_udpband", "_udprecv")],
                    tmp_path / "_udpexcess")
    refused = ";tag=" + excess.refusal_tag(b"c1@test")
    seeds = [REGISTER, INVITE_SDP, OK_200,
             *(_request(server, client, 1, method) for method in ("REGISTER", "INVITE")),
             *(_request(server, client, 1, method, to_tag=refused) for method in ("ACK", "BYE")),
             _request(server, client, 2, via="SIP/2.0/UDP 127.0.0.1:9;rport;branch=z9hG4bK-a"),
             _request(server, client, 3, via="SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK-o;oc")]
    answered, passed = run_sanitized(_ASAN_RUN, tmp_path, repo, seeds, 3000)
    assert answered > 1000 and passed > 1000  # the run reached the 503 writer and the pace
