"""The PROTOS c07-sip robustness suite replayed against the running server (issue 3, "Bad input").

Every one of the 4527 cases (``../shared/conformance/sip/protos-c07/cases/``, format in
``../shared/conformance/README.md``) is filled in and sent to ``signaling serve`` as a real
client would: the INVITE under test, then its teardown PDU (ACK when the INVITE got a final
answer, so the server transaction moves to Confirmed and ends after Timer I, RFC 3261
§17.2.1; CANCEL when it got none).  Each case uses a fresh UDP socket, so an answer can only
belong to its own case even when the case mangled its Call-ID.

Cases larger than one UDP datagram (81 of them, 67-287 kB; IPv4 UDP carries at most 65,507
octets) cannot be sent over UDP at all.  The README lets them "go over a stream transport, or be
refused as too large": they are sent over the server's WebSocket transport (subprotocol
``sip``), where ``ws_max_size`` (65,535, the parser's ``MAX_MESSAGE_SIZE``) refuses them: the
server must close the connection with 1009 (message too big, RFC 6455 §7.4.1) or answer 513
(RFC 3261 §21.5.14), and stay up.

What is held (the suite's own rule, plus the stronger ones of the README):
- the server stays up through every case;
- after every ``CHECKPOINT`` cases and at the end it still answers the valid case #0 with a
  well-formed final response carrying its Call-ID and CSeq (the status is not asserted: 501
  until the proxy exists, then 404/480), and an OPTIONS to itself with 200;
- every datagram it sends back is a SIP response: a status line and a complete header section
  with a Via (see ``answer_status`` for why it need not parse as a whole);
- no unhandled exception or ERROR line in its log;
- its resident memory stays flat: the suite is run twice and the second pass may not grow it
  by more than ``RSS_GROWTH_LIMIT_KIB`` (see there why the first pass is the warm-up).

- nothing is left behind: the ``signaling_transactions`` and ``signaling_dialogs`` gauges of
  ``/metrics`` (admin listener) fall to zero once the timers of the last cases have run out;
- nothing is lost silently: every UDP case that got no answer is a counted drop
  (``signaling_sip_dropped``).
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import socket
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from harness.serverproc import ServerProcess, options, sip_request
from protocols.sip.errors import RemoteProtocolError
from protocols.sip.message import Request, Response
from protocols.sip.parser import parse_message

CASES_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "conformance" / "sip" \
    / "protos-c07" / "cases"
#: The suite's size (README): a missing or partial checkout must fail loudly, not pass quietly.
CASE_COUNT = 4527
#: Largest UDP payload over IPv4 (65,535 - 8 UDP header - 20 IP header).
UDP_MAX_PAYLOAD = 65_507
#: Cases in flight at once.  Enough to keep the run well under a minute (a few hundred to a
#: thousand cases per second) without ever filling the server's queues: the point here is
#: robustness, not load.
WINDOW = 16
#: How long a case waits for a final answer.  The server answers on loopback in well under a
#: millisecond; cases it discards (no Via to answer to, a mangled response) cost this much each,
#: divided by ``WINDOW``.
ANSWER_TIMEOUT = 0.25
#: The valid case #0 and an OPTIONS are checked after this many cases (the suite's rule: the
#: server still answers the valid case after any case; every 500 localises a regression to a
#: slice of the suite without slowing the run).
CHECKPOINT = 500
#: Allowed growth of the server's VmRSS over the second pass of the whole suite.  The first
#: pass is the warm-up: it fills the parser's bounded value caches (``VALUE_CACHE_SIZE`` and
#: ``URI_CACHE_SIZE`` entries of at most 256 characters: measured 5.5 MB of objects after one
#: pass) and raises the malloc high-water mark with the 64 kB cases (fragmented arenas are
#: not returned to the system): measured +25 MB over the first pass, +5 MB over the second and
#: +0.03 MB over a third, i.e. a plateau.  A per-case leak shows up in the second pass in
#: proportion to the 4527 cases: keeping anything of 2.3 kB or more per case (a transaction, a
#: parsed message, a buffer; the average case is 11 kB) crosses this bound.
RSS_GROWTH_LIMIT_KIB = 10 * 1024
#: Passes over the suite: the warm-up pass, then the measured one.
PASSES = 2
#: Timer I (T4 = 5 s over UDP, §17.2.1) plus margin: every confirmed INVITE transaction has
#: ended by then, so an RSS reading is not inflated by transactions about to end.
DRAIN_WAIT = 6.0
#: When the transaction and dialog tables must be empty after the last case: the longest
#: server or client transaction lifetime, 64*T1 (Timer B/F/H = 32 s, §17) plus Timer I
#: (T4 = 5 s) and margin.  In practice they are empty within DRAIN_WAIT; this is a deadline.
EMPTY_DEADLINE = 40.0
LOG_FORBIDDEN = ("Traceback", "unexpected error", " ERROR ")


def _split_pdu(data: bytes, offset: int) -> tuple[bytes, int]:
    """One ``<decimal length><space><bytes>`` PDU at ``offset``; returns it and the next offset."""
    while data[offset:offset + 1] in (b"\n", b"\r"):
        offset += 1  # the separator, when a case has one
    space = data.index(b" ", offset)
    length = int(data[offset:space])
    start = space + 1
    assert start + length <= len(data), "truncated PROTOS case"
    return data[start:start + length], start + length


def load_case(path: Path) -> tuple[bytes, bytes]:
    """The INVITE template and the teardown template of one case file."""
    data = path.read_bytes()
    invite, offset = _split_pdu(data, 0)
    teardown, _ = _split_pdu(data, offset)
    return invite, teardown


def _body_length(message: bytes) -> int:
    # "the byte length of the body (everything after the first blank line)" (README).
    ends = [i + len(sep) for sep in (b"\r\n\r\n", b"\n\n") if (i := message.find(sep)) >= 0]
    return len(message) - min(ends) if ends else 0


def fill(template: bytes, values: dict[str, str]) -> bytes:
    """Fill the placeholders; Content-Length last, from the filled body (README)."""
    out = template
    for name, value in values.items():
        out = out.replace(f"<{name}>".encode(), value.encode())
    return out.replace(b"<Content-Length>", str(_body_length(out)).encode())


_STATUS_LINE = re.compile(rb"SIP/2\.0 ([1-6][0-9][0-9]) [^\r\n]*\r\n")


def answer_status(data: bytes) -> int | None:
    """The status of a well-framed SIP response, None for anything else.

    An answer to a broken request need not parse as a whole: it copies the request's Via,
    From, To, Call-ID and CSeq as written (§8.2.6.2), broken or missing ones included (RFC 4475
    insuf, badaspec and quotbal expect exactly such a 400).  What it must be is a response:
    a status line, a header section ending in an empty line, an empty body.
    """
    m = _STATUS_LINE.match(data)
    if m is None or not data.endswith(b"\r\n\r\n") or b"\r\nVia: " not in data:
        return None
    with contextlib.suppress(RemoteProtocolError):
        msg = parse_message(data)
        if not isinstance(msg, Response):
            return None
    return int(m.group(1))


@dataclass
class CaseResult:
    index: int
    final: int | None = None          # status of the final answer, None when none came
    transport: str = "udp"
    unparsable: list[bytes] = field(default_factory=list)  # answers that are not responses


class Protos:
    """Fills and sends cases to one server; ``run_case`` is thread-safe (one socket per case)."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.port = server.udp_port
        self.run_id = f"{random.getrandbits(32):08x}"

    def values(self, index: int, local_port: int, method: str = "INVITE") -> dict[str, str]:
        return {
            "To": f"protos@127.0.0.1:{self.port}",
            "From": "tester@127.0.0.1",
            "From-Address": "127.0.0.1",
            "From-IP": "127.0.0.1",
            "Local-Port": str(local_port),
            "Call-ID": f"protos-{self.run_id}-{index}-{random.getrandbits(24)}",
            "CSeq": "1",
            "Branch-ID": f"{index}x{random.getrandbits(32):x}",
            "Teardown-Method": method,
        }

    def run_case(self, index: int, invite_t: bytes, teardown_t: bytes) -> CaseResult:
        result = CaseResult(index)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            values = self.values(index, s.getsockname()[1])
            invite = fill(invite_t, values)
            if len(invite) > UDP_MAX_PAYLOAD:
                with pytest.raises(OSError):  # EMSGSIZE: UDP cannot carry it
                    s.sendto(invite, ("127.0.0.1", self.port))
                return self.run_case_ws(result, invite)
            s.sendto(invite, ("127.0.0.1", self.port))
            result.final = self._await_final(s, result)
            values["Teardown-Method"] = "ACK" if result.final is not None else "CANCEL"
            s.sendto(fill(teardown_t, values), ("127.0.0.1", self.port))
        return result

    def _await_final(self, s: socket.socket, result: CaseResult) -> int | None:
        deadline = time.monotonic() + ANSWER_TIMEOUT
        while (left := deadline - time.monotonic()) > 0:
            s.settimeout(left)
            try:
                data = s.recv(65_535)
            except TimeoutError:
                return None
            status = answer_status(data)
            if status is None:
                result.unparsable.append(data)
            elif status >= 200:
                return status
        return None

    def run_case_ws(self, result: CaseResult, invite: bytes) -> CaseResult:
        """An oversized case over WebSocket: refused with close 1009 or answered 513."""
        assert self.server.ws_port is not None
        result.transport = "ws"
        with connect(f"ws://127.0.0.1:{self.server.ws_port}", subprotocols=["sip"],  # type: ignore[list-item]
                     max_size=None, open_timeout=5) as ws:
            try:
                ws.send(invite)
                answer = ws.recv(timeout=5)
            except ConnectionClosed as closed:
                assert closed.rcvd is not None, "closed without a close frame"
                assert closed.rcvd.code == 1009, closed
                return result
        data = answer.encode() if isinstance(answer, str) else answer
        msg = parse_message(data)
        assert isinstance(msg, Response) and msg.status == 513, data[:200]
        result.final = 513
        return result


def check_valid_case(protos: Protos, invite_t: bytes, teardown_t: bytes) -> None:
    """Case #0 gets a well-formed final answer with its own Call-ID and CSeq; OPTIONS 200."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        values = protos.values(0, s.getsockname()[1])
        s.sendto(fill(invite_t, values), ("127.0.0.1", protos.port))
        final: Response | None = None
        s.settimeout(2.0)
        while final is None:
            msg = parse_message(s.recv(65_535))
            assert isinstance(msg, Response)
            assert msg.call_id == f"{values['Call-ID']}@127.0.0.1"
            assert (msg.cseq.seq, msg.cseq.method) == (1, "INVITE")
            assert msg.vias and msg.vias[0].branch == f"z9hG4bK00000{values['Branch-ID']}"
            if msg.status >= 200:
                final = msg
        # A final answer of a UAS or proxy carries a To tag (§8.2.6.2, §16.7).
        assert final.to.tag, final
        values["Teardown-Method"] = "ACK"
        s.sendto(fill(teardown_t, values), ("127.0.0.1", protos.port))
    answer = sip_request(protos.port, options(protos.port))
    assert answer is not None, "no answer to OPTIONS"
    resp = parse_message(answer)
    assert isinstance(resp, Response) and resp.status == 200


def metric_sum(server: ServerProcess, name: str) -> float:
    """The sum over labels of one metric of the server's /metrics (Prometheus text)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{server.admin_port}/metrics",
                                timeout=5) as resp:
        text = resp.read().decode()
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith((name + " ", name + "{"))]
    assert values, f"no metric {name} in /metrics"  # a renamed metric must not pass vacuously
    return sum(values)


def wait_empty(server: ServerProcess) -> tuple[float, float]:
    """Poll until no transaction and no dialog is left; returns what is left at the end."""
    deadline = time.monotonic() + EMPTY_DEADLINE
    while True:
        left = (metric_sum(server, "signaling_transactions"),
                metric_sum(server, "signaling_dialogs"))
        if left == (0.0, 0.0) or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def test_case_zero_is_a_valid_invite() -> None:
    """The reference case parses as an INVITE once filled (guards the filling itself)."""
    invite_t, teardown_t = load_case(CASES_DIR / "0000000")
    values = {"To": "protos@127.0.0.1:5060", "From": "tester@127.0.0.1",
              "From-Address": "127.0.0.1", "From-IP": "127.0.0.1", "Local-Port": "5061",
              "Call-ID": "c0", "CSeq": "1", "Branch-ID": "b0", "Teardown-Method": "CANCEL"}
    invite = parse_message(fill(invite_t, values))
    assert isinstance(invite, Request) and invite.method == "INVITE"
    assert int(invite.header("Content-Length") or len(invite.body)) == len(invite.body) > 0
    teardown = parse_message(fill(teardown_t, values))
    assert isinstance(teardown, Request) and teardown.method == "CANCEL"
    assert teardown.vias[0].branch == invite.vias[0].branch


def test_protos_c07_suite() -> None:
    names = sorted(os.listdir(CASES_DIR))
    assert len(names) == CASE_COUNT
    cases = [load_case(CASES_DIR / n) for n in names]
    server = ServerProcess(admin=True).start()
    protos = Protos(server)
    results: list[CaseResult] = []
    rss: list[int] = []
    try:
        with ThreadPoolExecutor(WINDOW) as pool:
            for _ in range(PASSES):
                for start in range(0, CASE_COUNT, CHECKPOINT):
                    chunk = range(start, min(start + CHECKPOINT, CASE_COUNT))
                    results += pool.map(lambda i: protos.run_case(i, *cases[i]), chunk)
                    assert server.alive(), f"server died during cases {start}-{chunk[-1]}"
                    check_valid_case(protos, *cases[0])
                time.sleep(DRAIN_WAIT)
                check_valid_case(protos, *cases[0])
                rss.append(server.rss_kib())
        left = wait_empty(server)
        drops = metric_sum(server, "signaling_sip_dropped_total")
    finally:
        status = server.stop()
    outcomes = Counter((r.transport, r.final) for r in results)
    print(f"PROTOS outcomes (transport, final status): {sorted(outcomes.items(), key=str)}")
    print(f"server VmRSS after each pass: {rss} kB")
    silent = sum(1 for r in results if r.transport == "udp" and r.final is None)
    print(f"no answer: {silent} cases; counted drops: {drops}")
    assert left == (0.0, 0.0), f"(transactions, dialogs) left behind: {left}"
    assert drops >= silent, "a case got no answer and no counted drop"
    unparsable = [(r.index, d[:120]) for r in results for d in r.unparsable]
    assert not unparsable, f"answers that are not SIP responses: {unparsable[:5]}"
    assert status == 0, "the server did not shut down cleanly"
    bad = [line for line in server.log.splitlines() if any(f in line for f in LOG_FORBIDDEN)]
    assert not bad, "\n".join(bad[:20])
    # README: 81 cases are larger than one datagram.
    assert sum(1 for r in results if r.transport == "ws") == 81 * PASSES
    assert rss[-1] - rss[0] <= RSS_GROWTH_LIMIT_KIB, rss
