"""The injector answers digest challenges (loadtest.auth): unit checks, then whole runs against
the real server with authentication on (in process, over real UDP sockets)."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtest.auth import MAX_ROUNDS, Passwords, answer, with_header
from loadtest.engine import Engine, EngineConfig
from loadtest.trace import Call, Event, Register
from protocols.sip.digest import parse_credentials
from protocols.sip.message import Response
from protocols.sip.parser import parse_message
from signaling.auth.subscribers import FileSubscribers, Subscriber
from tests.signaling.inproc import running_server

DOMAIN = "example.com"


def _challenge(status: int, *values: str) -> Response:
    header = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
    lines = [f"SIP/2.0 {status} Challenge", "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKx",
             "From: <sip:a@example.com>;tag=1", "To: <sip:a@example.com>;tag=2",
             "Call-ID: c", "CSeq: 1 REGISTER", *(f"{header}: {v}" for v in values),
             "Content-Length: 0", "", ""]
    msg = parse_message("\r\n".join(lines).encode())
    assert isinstance(msg, Response)
    return msg


def test_passwords_from_a_pattern_and_a_file(tmp_path: Path) -> None:
    assert Passwords.load(None, None) is None
    assert Passwords.load("pw-{user}", None).of("u7") == "pw-u7"  # type: ignore[union-attr]
    path = tmp_path / "pw"
    path.write_text("# user password\nalice wonder land\n\nbob builder\n")
    both = Passwords.load("pw-{user}", str(path))
    assert both is not None
    assert (both.of("alice"), both.of("bob"), both.of("carol")) == ("wonder land", "builder",
                                                                     "pw-carol")
    only_file = Passwords.load(None, str(path))
    assert only_file is not None and only_file.of("carol") is None
    path.write_text("alice\n")
    with pytest.raises(ValueError, match="line 1"):
        Passwords.load(None, str(path))


def test_answer_picks_the_first_algorithm_it_can_and_never_retries_a_refusal() -> None:
    chal = _challenge(401, 'Digest realm="example.com", nonce="n1", algorithm=SHA-999, '
                           'qop="auth"',
                      'Digest realm="example.com", nonce="n1", algorithm=SHA-256, qop="auth"')
    line = answer(chal, "REGISTER", "sip:example.com", "a", "pw", False, 0)
    assert line is not None and line.startswith(b"Authorization: Digest ")
    creds = parse_credentials(line.split(b": ", 1)[1].decode())
    assert (creds.algorithm, creds.nonce, creds.nc, creds.uri) == ("SHA-256", "n1", 1,
                                                                  "sip:example.com")
    # Refused although credentials were sent: a wrong password, answered no further ...
    assert answer(chal, "REGISTER", "sip:example.com", "a", "pw", True, 1) is None
    # ... unless the nonce was only stale (RFC 7616 §3.3), and then within the bound.
    stale = _challenge(407, 'Digest realm="example.com", nonce="n2", algorithm=MD5, '
                            'qop="auth", stale=true')
    line = answer(stale, "INVITE", "sip:b@example.com", "a", "pw", True, 1)
    assert line is not None and line.startswith(b"Proxy-Authorization: Digest ")
    assert answer(stale, "INVITE", "sip:b@example.com", "a", "pw", True, MAX_ROUNDS) is None


def test_with_header_goes_before_content_length() -> None:
    req = b"REGISTER sip:x SIP/2.0\r\nCSeq: 2 REGISTER\r\nContent-Length: 0\r\n\r\n"
    assert with_header(req, b"Authorization: Digest x") == (
        b"REGISTER sip:x SIP/2.0\r\nCSeq: 2 REGISTER\r\nAuthorization: Digest x\r\n"
        b"Content-Length: 0\r\n\r\n")
    with pytest.raises(ValueError):
        with_header(b"OPTIONS sip:x SIP/2.0\r\n\r\n", b"X: y")


async def _subscribers(tmp: Path, users: list[str]) -> str:
    path = tmp / "subscribers.jsonl"
    store = FileSubscribers(str(path))
    for user in users:
        await store.put(Subscriber.create(user, DOMAIN, f"pw-{user}"))
    return str(path)


async def test_registrations_and_calls_against_a_server_with_authentication(
        tmp_path: Path) -> None:
    n = 12
    callers, callees = [f"a{i}" for i in range(n)], [f"b{i}" for i in range(n)]
    events: list[Event] = [Register(t=0.01 * i, user=u, domain=DOMAIN)
                           for i, u in enumerate(callers)]
    events += [Call(t=0.3 + 0.02 * i, user=callers[i], domain=DOMAIN, callee=callees[i],
                    hold=0.1) for i in range(n)]
    subs = await _subscribers(tmp_path, callers + callees)
    async with running_server(domain=DOMAIN, auth="on", subscribers=subs,
                              auth_algorithms=["SHA-256", "MD5"]) as server:
        assert server.udp_address is not None
        res = await Engine(events, EngineConfig(
            target=server.udp_address, sockets=4,
            passwords=Passwords.load("pw-{user}", None))).run()
        auth = server.metrics.exposition()
    reg, prereg, invite = res.kinds["register"], res.kinds["prereg"], res.kinds["invite"]
    # Every REGISTER challenged once (401) and accepted with credentials; the 401s are not
    # final answers, so nothing is an error.
    assert reg.answered == {"2xx": n} and reg.challenges_answered == n and reg.sent == 2 * n
    assert prereg.answered == {"2xx": n} and prereg.challenges_answered == n
    assert reg.offered.values and sum(reg.offered.values) == n  # offered once per event
    # Every call challenged by the proxy (407), re-sent with Proxy-Authorization, set up,
    # confirmed and hung up.
    assert invite.challenges_answered == n and invite.answered == {"2xx": n}
    assert res.calls.attempted == res.calls.established == res.calls.completed == n
    assert res.uas.requests == {"INVITE": n, "ACK": n, "BYE": n}
    assert sum(k.timeouts for k in res.kinds.values()) == 0
    # The server's side: a challenge and an acceptance per REGISTER (callers and callees) and
    # per INVITE; the BYEs follow their dialogs and are not challenged anew.
    for result in ("challenged", "ok"):
        assert f'signaling_auth_total{{result="{result}"}} {3.0 * n}'.encode() in auth


async def test_a_wrong_password_ends_in_its_401_without_a_loop(tmp_path: Path) -> None:
    n = 5
    events: list[Event] = [Register(t=0.01 * i, user=f"a{i}", domain=DOMAIN) for i in range(n)]
    subs = await _subscribers(tmp_path, [f"a{i}" for i in range(n)])
    async with running_server(domain=DOMAIN, auth="on", subscribers=subs) as server:
        assert server.udp_address is not None
        res = await Engine(events, EngineConfig(
            target=server.udp_address, sockets=4, register_callees=False,
            passwords=Passwords.load("not-{user}", None))).run()
    reg = res.kinds["register"]
    assert reg.challenges_answered == n  # the first challenge, answered once ...
    assert reg.codes == {401: n} and reg.sent == 2 * n  # ... then the refusal is final
