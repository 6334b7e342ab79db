"""RFC 4475 torture messages sent over UDP to the running server (issue 3, "Bad input").

Each ``.dat`` of ``../shared/conformance/sip/rfc4475/`` is sent as it is on the wire, from a
fresh socket, to ``signaling serve --domain example.com``, and gets the answer of that folder's
INDEX.md.  The server is a registrar and a stateful proxy for example.com, so where INDEX.md
distinguishes "UAS" from "proxy" answers the proxy's applies.

Where INDEX.md lets the server choose, the choice (documented in protocols/sip/parser.py and
signaling/registrar.py) is what is asserted, with the reason beside it.  Requests for users of
example.com that are valid are proxied: without a registered user they get 404 (§16.5, the
proxy knows nobody by that name); ``test_forwarded_*`` register a user first and check that the
request really is forwarded unchanged where INDEX.md says "proxy: forward".

Several messages reuse the same Via branch (``z9hG4bKkdjuw``) and sent-by: to the server they
would be retransmissions of one transaction (RFC 3261 §17.2.3) and the later one would be
absorbed.  ``ServerPool`` therefore gives each message a server on which its (branch, method)
is new; registrar checks get a server of their own so no earlier binding of the same AOR shows
up in their 200.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.serverproc import ServerProcess
from protocols.sip.message import Request, Response, SipURI
from protocols.sip.parser import parse_message

DAT = Path(__file__).resolve().parents[2] / ".." / "shared" / "conformance" / "sip" / "rfc4475"
SERVER_ARGS = ("--domain", "example.com")
#: How long to wait for an answer.  The server answers on loopback within milliseconds; for
#: the messages that must get nothing back this is how long "nothing" is watched for.
ANSWER_TIMEOUT = 1.0
SILENCE_WINDOW = 0.3
_STATUS_LINE = re.compile(rb"SIP/2\.0 ([1-6][0-9][0-9]) [^\r\n]*\r\n")
_BRANCH = re.compile(rb"(?i)branch\s*=\s*([^;,\s]+)")

#: file -> the final status the server answers with, or None: nothing comes back.
EXPECTED: dict[str, int | None] = {
    # 3.1.1 valid messages: accepted, i.e. handled as a request of their kind.
    "wsinv": 481,       # an INVITE with a To tag: in-dialog, and the proxy knows no such
                        # dialog (§12.2.2, the proxy's documented answer to a lost dialog)
    "intmeth": 404,     # unknown method for a user of example.com: proxied; nobody registered
    "esc01": 403,       # for example.net: not served here and relaying is off (the proxy's 403)
    "escnull": 200,     # registrar; contacts checked in test_registrar_contacts
    "esc02": 403,       # for registrar.example.com: not served here, relaying off
    "lwsdisp": 404,     # OPTIONS for a user: proxied, nobody registered
    "longreq": 404,     # INVITE for a user: proxied, nobody registered
    "dblreq": 200,      # the REGISTER is handled, the INVITE-looking junk after it ignored
    "semiuri": 404,     # user "user;par=u@example.net" at example.com: proxied, unknown
    "transports": 404,  # OPTIONS for a user: proxied, nobody registered
    "mpart01": None,    # MESSAGE with a Route: forwarded to its Route, which never answers
                        # within the window (the answer would be 408 after Timer F)
    "unreason": None,   # responses matching no transaction are dropped by a proxy (§16.7)
    "noreason": None,
    # 3.1.2 invalid messages: rejected, never a crash.
    "badinv01": 400,
    "clerr": 400,       # datagram: Content-Length larger than the datagram
    "ncl": None,        # negative Content-Length: datagram discarded (parser policy)
    "scalar02": 400,
    "scalarlg": None,   # a response: discarded
    "quotbal": 400,
    "ltgtruri": 400,
    "lwsruri": 400,
    "lwsstart": 400,    # parser policy: extra whitespace in the request line rejected
    "trws": 400,        # parser policy: trailing whitespace after the version rejected
    "escruri": 400,     # parser policy: headers in the Request-URI rejected
    "baddate": 404,     # parser policy: Date ignored, so a valid INVITE for an unknown user
    "regbadct": 400,
    "badaspec": 400,
    "baddn": 400,
    "badvers": 505,
    "mismatch01": 400,
    "mismatch02": 400,  # parser policy: 400 (RFC 4475 accepts it; 501 needs a parse refused)
    "bigcode": None,    # a response with a status beyond 699: dropped
    # 3.2 transaction layer.
    "badbranch": 404,   # parsed and proxied like any OPTIONS for an unknown user
    # 3.3 application layer.
    "insuf": 400,
    "unkscm": 416,
    "novelsc": 416,
    "unksm2": 416,      # registrar policy: the AOR is not sip/sips: 416 (400 also allowed)
    "bext01": 420,      # Unsupported checked in test_bext01_lists_unsupported
    "invut": 404,       # proxy: forwarded (see test_forwarded_*); unknown user here: 404
    "regaut01": 200,    # registrar policy: no authentication configured, so 200
    "multi01": 400,
    "mcl01": 400,       # datagram with two different Content-Length values: 400
    "bcast": None,      # a response matching no transaction: dropped, never relayed
    "zeromf": 483,      # OPTIONS for a user with Max-Forwards 0: the proxy answers 483
    "cparam01": 200,
    "cparam02": 200,
    "regescrt": 200,
    "sdp01": 404,       # proxy: forwarded (see test_forwarded_*); unknown user here: 404
    # 3.4 backward compatibility.
    "inv2543": 404,     # an RFC 2543 INVITE is accepted: proxied, unknown user
}
#: Messages whose checks read the registrar's state: each gets a server of its own.
OWN_SERVER = frozenset({"escnull", "dblreq", "regaut01", "cparam01", "cparam02", "regescrt"})


def load(name: str) -> bytes:
    return (DAT / f"{name}.dat").read_bytes()


def tx_key(data: bytes) -> tuple[str, str]:
    """What the server matches a request's transaction by (§17.2.3), approximately."""
    method = data.split(b" ", 1)[0].decode("latin-1")
    m = _BRANCH.search(data.split(b"\r\n\r\n", 1)[0])
    return (m.group(1).decode("latin-1") if m else "", "INVITE" if method == "ACK" else method)


class ServerPool:
    """Servers with ``--domain example.com``, started on demand (see the module docstring)."""

    def __init__(self) -> None:
        self.servers: list[tuple[ServerProcess, set[tuple[str, str]]]] = []

    def for_message(self, data: bytes, own: bool = False) -> ServerProcess:
        key = tx_key(data)
        if not own:
            for server, keys in self.servers:
                if key not in keys:
                    keys.add(key)
                    return server
        server = ServerProcess(*SERVER_ARGS, ws=False).start()
        self.servers.append((server, {key}))
        return server

    def close(self) -> list[str]:
        logs = []
        for server, _ in self.servers:
            assert server.stop() == 0
            logs.append(server.log)
        return logs


@pytest.fixture(scope="module")
def pool() -> Iterator[ServerPool]:
    p = ServerPool()
    try:
        yield p
    finally:
        logs = p.close()
    bad = [line for log in logs for line in log.splitlines()
           if "Traceback" in line or " ERROR " in line or "unexpected error" in line]
    assert not bad, "\n".join(bad)


def exchange(server: ServerProcess, data: bytes, sock: socket.socket | None = None,
             timeout: float = ANSWER_TIMEOUT) -> tuple[list[bytes], socket.socket]:
    """Send ``data``; collect answers up to the first final one (or the timeout)."""
    s = sock or socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if sock is None:
        s.bind(("127.0.0.1", 0))
    s.sendto(data, ("127.0.0.1", server.udp_port))
    answers: list[bytes] = []
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        s.settimeout(left)
        try:
            answer = s.recv(65_535)
        except TimeoutError:
            break
        answers.append(answer)
        if final_status([answer]) is not None:
            break
    return answers, s


def final_status(answers: list[bytes]) -> int | None:
    for a in answers:
        m = _STATUS_LINE.match(a)
        assert m, f"not a SIP response: {a[:200]!r}"
        if int(m.group(1)) >= 200:
            return int(m.group(1))
    return None


def later_answers(s: socket.socket, window: float = SILENCE_WINDOW) -> list[bytes]:
    """What else arrives within ``window``."""
    out: list[bytes] = []
    deadline = time.monotonic() + window
    while (left := deadline - time.monotonic()) > 0:
        s.settimeout(left)
        try:
            out.append(s.recv(65_535))
        except TimeoutError:
            break
    return out


def test_every_message_has_an_expectation() -> None:
    assert {p.stem for p in DAT.glob("*.dat")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_answer(pool: ServerPool, name: str) -> None:
    data = load(name)
    server = pool.for_message(data, own=name in OWN_SERVER)
    expected = EXPECTED[name]
    answers, s = exchange(server, data, timeout=ANSWER_TIMEOUT if expected else SILENCE_WINDOW)
    with s:
        expected = EXPECTED[name]
        if expected is None:
            assert answers == [] and later_answers(s) == [], answers
            return
        assert final_status(answers) == expected, (answers, server.alive(),
                                                    server.read_log()[-2000:])
        # One message, one transaction: nothing more comes (dblreq's junk is not a request)
        # but retransmissions of a final answer to an INVITE that nobody ACKs (§17.2.1).
        assert all(a == answers[-1] for a in later_answers(s)), f"second answer to {name}"
        assert all(a.endswith(b"\r\n\r\n") and b"Content-Length: 0\r\n" in a for a in answers)
    assert server.alive()


def _contacts(answer: bytes) -> list[str]:
    resp = parse_message(answer)
    assert isinstance(resp, Response) and resp.status == 200
    return [str(c.uri) for c in resp.contacts]


def _register(pool: ServerPool, name: str) -> list[str]:
    data = load(name)
    answers, s = exchange(pool.for_message(data, own=True), data)
    s.close()
    assert len(answers) == 1, answers
    return _contacts(answers[0])


def test_cparam01_parameter_is_not_part_of_the_uri(pool: ServerPool) -> None:
    # Without <>, ";unknownparam" is a contact (header) parameter (§20.10), not the URI's.
    assert _register(pool, "cparam01") == ["sip:+19725552222@gw1.example.net"]


def test_cparam02_parameter_is_part_of_the_uri(pool: ServerPool) -> None:
    assert _register(pool, "cparam02") == ["sip:+19725552222@gw1.example.net;unknownparam"]


def test_regescrt_keeps_the_escaped_header(pool: ServerPool) -> None:
    # The binding keeps the escaped Route header as it is: never unescaped, never a header.
    assert _register(pool, "regescrt") == ["sip:user@example.com?Route=%3Csip:sip.example.com%3E"]


def test_escnull_keeps_two_distinct_contacts(pool: ServerPool) -> None:
    # %00 is never a string terminator: "%00" and "%00%00" are two different contacts.
    contacts = _register(pool, "escnull")
    assert sorted(contacts) == ["sip:%00%00@host5.example.com", "sip:%00@host5.example.com"]


def test_dblreq_registers_the_first_message_only(pool: ServerPool) -> None:
    assert _register(pool, "dblreq") == ["sip:j.user@host.example.com"]


def test_bext01_lists_unsupported(pool: ServerPool) -> None:
    data = load("bext01")
    answers, s = exchange(pool.for_message(data), data)
    s.close()
    resp = parse_message(answers[-1])
    assert isinstance(resp, Response) and resp.status == 420
    # A proxy checks Proxy-Require only (§16.3 step 5); Require is the UAS's business.
    unsupported = {t.strip() for t in (resp.header("Unsupported") or "").split(",")}
    assert unsupported == {"noProxiesSupportThis", "norDoAnyProxiesSupportThis"}


def test_zeromf_for_the_server_itself_is_answered(pool: ServerPool) -> None:
    """zeromf's OPTIONS addressed to the server rather than a user: answered 200 (§11)."""
    data = load("zeromf").replace(b"OPTIONS sip:user@example.com ", b"OPTIONS sip:example.com ",
                                  1)
    assert data.startswith(b"OPTIONS sip:example.com ")
    answers, s = exchange(pool.for_message(data), data)
    s.close()
    assert final_status(answers) == 200


def _answer(request: Request, raw: bytes, status: int, reason: str, extra: str) -> bytes:
    """The UAS's final answer to a request it received (§8.2.6): headers copied, a To tag."""
    head = raw.split(b"\r\n\r\n", 1)[0].decode()
    lines = [ln for ln in head.split("\r\n")[1:]
             if ln.split(":", 1)[0].strip().lower() in ("via", "from", "call-id", "cseq")]
    return (f"SIP/2.0 {status} {reason}\r\n" + "\r\n".join(lines)
            + f"\r\nTo: {request.to};tag=uas1\r\n{extra}Content-Length: 0\r\n\r\n").encode()


def _ack(original: Request, raw: bytes, response: Response) -> bytes:
    """The caller's ACK for a non-2xx final answer (§17.1.1.3): same top Via and Request-URI."""
    head = raw.split(b"\r\n\r\n", 1)[0].decode()
    top_via = next(ln for ln in head.split("\r\n")
                   if ln.split(":", 1)[0].strip().lower() in ("via", "v"))
    return (f"ACK {original.uri} SIP/2.0\r\n{top_via}\r\nMax-Forwards: 70\r\n"
            f"From: {original.from_}\r\nTo: {response.to}\r\nCall-ID: {original.call_id}\r\n"
            f"CSeq: {original.cseq.seq} ACK\r\nContent-Length: 0\r\n\r\n").encode()


#: INDEX.md's UAS answers, sent here by the registered user agent the proxy forwarded to.
UAS_ANSWER = {"invut": (415, "Unsupported Media Type", "Accept: application/sdp\r\n"),
              "sdp01": (406, "Not Acceptable", "")}


@pytest.mark.parametrize("name", sorted(UAS_ANSWER))
def test_forwarded_to_a_registered_user(name: str) -> None:
    """INDEX.md: a proxy forwards these INVITEs; the 415 / 406 is the UAS's and is relayed."""
    data = load(name)
    original = parse_message(data)
    assert isinstance(original, Request) and isinstance(original.uri, SipURI)
    with ServerProcess(*SERVER_ARGS, ws=False) as server, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as ua:
        ua.bind(("127.0.0.1", 0))
        ua_port = ua.getsockname()[1]
        user = original.uri.user
        register = (
            f"REGISTER sip:example.com SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{ua_port};branch=z9hG4bK-reg-{name}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:{user}@example.com>;tag=r1\r\n"
            f"To: <sip:{user}@example.com>\r\nCall-ID: reg-{name}\r\nCSeq: 1 REGISTER\r\n"
            f"Contact: <sip:{user}@127.0.0.1:{ua_port}>\r\nExpires: 600\r\n"
            f"Content-Length: 0\r\n\r\n"
        ).encode()
        answers, _ = exchange(server, register, ua)
        assert final_status(answers) == 200
        caller = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        caller.bind(("127.0.0.1", 0))
        caller.sendto(data, ("127.0.0.1", server.udp_port))
        with caller:
            ua.settimeout(ANSWER_TIMEOUT)
            raw = ua.recv(65_535)
            forwarded = parse_message(raw)
            assert isinstance(forwarded, Request) and forwarded.method == "INVITE"
            assert forwarded.call_id == original.call_id
            assert forwarded.body == original.body
            assert forwarded.content_type == original.content_type
            assert forwarded.max_forwards == (original.max_forwards or 70) - 1
            assert len(forwarded.vias) == len(original.vias) + 1
            assert forwarded.header("Accept") == original.header("Accept")
            status, reason, extra = UAS_ANSWER[name]
            ua.sendto(_answer(forwarded, raw, status, reason, extra),
                      ("127.0.0.1", server.udp_port))
            relayed = _final_from(caller)
            assert relayed.status == status and relayed.call_id == original.call_id
            if status == 415:
                assert relayed.header("Accept") == "application/sdp"
            caller.sendto(_ack(original, data, relayed), ("127.0.0.1", server.udp_port))
            # The proxy's client transaction ACKs the UAS's answer itself (§17.1.1.3).
            ack = parse_message(ua.recv(65_535))
            assert isinstance(ack, Request) and ack.method == "ACK"
        assert server.alive()


def _final_from(s: socket.socket) -> Response:
    s.settimeout(ANSWER_TIMEOUT)
    while True:
        msg = parse_message(s.recv(65_535))
        assert isinstance(msg, Response)
        if msg.status >= 200:
            return msg
