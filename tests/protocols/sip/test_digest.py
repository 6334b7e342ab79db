"""Digest authentication: RFC example values, header syntax, nonces and replay protection."""

from __future__ import annotations

from pathlib import Path

import pytest

from protocols.sip.digest import (
    ALGORITHMS,
    TICK,
    Credentials,
    DigestError,
    NonceCounts,
    NonceMinter,
    NonceState,
    authorization,
    challenge,
    expected_response,
    ha1,
    parse_challenge,
    parse_credentials,
    verify,
)
from tests.sanitizers import build_sanitized, run_sanitized

# RFC 7616 §3.9.1 (the same request answered with MD5 and with SHA-256).
RFC7616 = {
    "username": "Mufasa", "realm": "http-auth@example.org", "password": "Circle of Life",
    "nonce": "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
    "cnonce": "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    "opaque": "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS", "uri": "/dir/index.html",
}
RFC7616_MD5 = "8ca523f5e9506fed4657c9700eebdbec"
RFC7616_SHA256 = "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"


def _rfc7616_header(algorithm: str, response: str) -> str:
    v = RFC7616
    return (f'Digest username="{v["username"]}", realm="{v["realm"]}", uri="{v["uri"]}", '
            f'algorithm={algorithm}, nonce="{v["nonce"]}", nc=00000001, cnonce="{v["cnonce"]}", '
            f'qop=auth, response="{response}", opaque="{v["opaque"]}"')


@pytest.mark.parametrize("algorithm,response", [("MD5", RFC7616_MD5),
                                                ("SHA-256", RFC7616_SHA256)])
def test_rfc7616_examples(algorithm: str, response: str) -> None:
    creds = parse_credentials(_rfc7616_header(algorithm, response))
    assert (creds.algorithm, creds.nc, creds.qop, creds.opaque) == (
        algorithm, 1, "auth", RFC7616["opaque"])
    secret = ha1(algorithm, "Mufasa", "http-auth@example.org", "Circle of Life")
    assert expected_response(creds, secret, "GET") == response
    assert verify(creds, secret, "GET")
    assert not verify(creds, secret, "POST")
    assert not verify(creds, ha1(algorithm, "Mufasa", "http-auth@example.org", "circle of life"),
                      "GET")


def test_rfc2617_example() -> None:
    # RFC 2617 §3.5.
    value = ('Digest username="Mufasa", realm="testrealm@host.com", '
             'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", qop=auth, '
             'nc=00000001, cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1", '
             'opaque="5ccc069c403ebaf9f0171e9517f40e41"')
    creds = parse_credentials(value)
    assert creds.algorithm == "MD5"  # the default when absent
    assert verify(creds, ha1("MD5", "Mufasa", "testrealm@host.com", "Circle Of Life"), "GET")


def test_rfc2617_without_qop() -> None:
    # RFC 2069 style: response = H(HA1:nonce:HA2), the RFC 2617 §3.5 values without qop;
    # the expected value was computed outside Python with coreutils md5sum.
    creds = parse_credentials('Digest username="Mufasa", realm="testrealm@host.com", '
                              'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", '
                              'uri="/dir/index.html", response="670fd8c2df070c60b045671b8b24ff02"')
    secret = ha1("MD5", "Mufasa", "testrealm@host.com", "Circle Of Life")
    assert secret == "939e7578ed9e3c518a452acee763bce9"
    assert verify(creds, secret, "GET")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_client_and_server_agree(algorithm: str) -> None:
    chal = parse_challenge(challenge("example.com", "abc", algorithm, opaque="o"))
    assert chal["algorithm"] == algorithm and chal["qop"] == "auth"
    value = authorization(chal, method="REGISTER", uri="sip:example.com", username="alice",
                          password="pw")
    creds = parse_credentials(value)
    assert verify(creds, ha1(algorithm, "alice", "example.com", "pw"), "REGISTER")
    assert not verify(creds, ha1(algorithm, "alice", "example.com", "pw2"), "REGISTER")


def test_auth_int_covers_the_body() -> None:
    chal = {"realm": "r", "nonce": "n", "qop": "auth-int", "algorithm": "SHA-256"}
    value = authorization(chal, method="INVITE", uri="sip:b@r", username="a", password="p",
                          body=b"v=0\r\n")
    creds = parse_credentials(value)
    assert creds.qop == "auth-int"
    secret = ha1("SHA-256", "a", "r", "p")
    assert verify(creds, secret, "INVITE", b"v=0\r\n")
    assert not verify(creds, secret, "INVITE", b"v=1\r\n")


def test_challenge_quotes_and_stale() -> None:
    text = challenge('we"ird', "n", "sha-512-256", stale=True)
    assert 'realm="we\\"ird"' in text and "algorithm=SHA-512-256" in text
    assert text.endswith("stale=true")
    assert parse_challenge(text)["realm"] == 'we"ird'


@pytest.mark.parametrize("bad", [
    'Basic dXNlcjpwYXNz',
    'Digest username="a", realm="r", nonce="n", uri="u"',                  # no response
    'Digest username="a", realm="r", nonce="n", uri="u", response="x", algorithm=SHA-1',
    'Digest username="a", realm="r", nonce="n", uri="u", response="x", qop=auth',  # no nc
    'Digest username="a", realm="r", nonce="n", uri="u", response="x", qop=auth, nc=1, '
    'cnonce="c"',                                                          # nc not 8 hex
    'Digest username="a", username="b", realm="r", nonce="n", uri="u", response="x"',
    'Digest username="a, realm="r"',
    'Digest username',
])
def test_malformed_credentials(bad: str) -> None:
    with pytest.raises(DigestError):
        parse_credentials(bad)


def test_nonce_life_cycle() -> None:
    minter = NonceMinter(b"s" * 32, lifetime=30)
    nonce = minter.make("example.com", 1000.0)
    assert minter.check(nonce, "example.com", 1010.0) is NonceState.VALID
    assert minter.check(nonce, "example.com", 1031.0) is NonceState.STALE
    assert minter.check(nonce, "other.com", 1010.0) is NonceState.INVALID
    # Another process with the same secret accepts it; one with another secret does not.
    assert NonceMinter(b"s" * 32, 30).check(nonce, "example.com", 1001.0) is NonceState.VALID
    assert NonceMinter(b"t" * 32, 30).check(nonce, "example.com", 1001.0) is NonceState.INVALID
    tampered = nonce[:5] + ("A" if nonce[5] != "A" else "B") + nonce[6:]
    assert minter.check(tampered, "example.com", 1001.0) is NonceState.INVALID
    assert minter.check("short", "example.com", 1001.0) is NonceState.INVALID
    assert minter.check(nonce + "0", "example.com", 1001.0) is NonceState.INVALID
    # Issued at the start of its tick.
    assert NonceMinter.issued_at(nonce) == 1000 // TICK * TICK
    later = minter.make("example.com", 1000.0 + TICK + 0.5)
    assert minter.judge(later, "example.com", 1010.0) == (NonceState.VALID,
                                                          (1000 // TICK + 1) * TICK)


def test_nonces_of_one_tick_share_their_checked_head_and_differ_after_it() -> None:
    minter = NonceMinter(b"s" * 32, lifetime=300)
    a, b = minter.make("r", 1000.0), minter.make("r", 1001.0)
    assert a != b and len(a) == len(b) == 48
    assert a[:32] == b[:32] and a[32:] != b[32:]  # one head (tick and tag), unique tails
    assert minter.make("r", 1000.0 + TICK)[:32] != a[:32]  # the next tick: a new head
    assert minter.make("q", 1000.0)[:32] != a[:32]  # another realm: another tag
    # A head is checked by its MAC once, then known: a forged head is never learnt.
    other = NonceMinter(b"s" * 32, lifetime=300)
    assert other.check(a, "r", 1002.0) is NonceState.VALID
    assert list(other._known) == [a[:32]]
    forged = "A" * 32 + a[32:]
    assert other.check(forged, "r", 1002.0) is NonceState.INVALID
    assert list(other._known) == [a[:32]]
    # Expired heads are stale, not invalid (stale=true lets the client retry silently).
    assert other.check(a, "r", 1400.0) is NonceState.STALE


def test_unsalted_nonces_are_unique() -> None:
    minter = NonceMinter(b"s" * 32, lifetime=300)
    assert len({minter.make("r", 1000.0) for _ in range(1000)}) == 1000


def test_nonce_counts_refuse_replays() -> None:
    counts = NonceCounts(capacity=100)
    assert counts.use("n1", 1, 10.0) is NonceState.VALID
    assert counts.use("n1", 1, 10.0) is NonceState.STALE   # the same count again: replay
    assert counts.use("n1", 2, 10.0) is NonceState.VALID
    assert counts.use("n1", 1, 10.0) is NonceState.STALE   # going back
    assert counts.use("n2", None, 10.0) is NonceState.VALID  # no qop: good once
    assert counts.use("n2", None, 10.0) is NonceState.STALE


def test_nonce_counts_stay_bounded_and_safe() -> None:
    minter = NonceMinter(b"s" * 32, lifetime=30)
    counts = NonceCounts(capacity=10)
    nonces = [minter.make("r", 100.0 + i) for i in range(25)]
    for n in nonces:
        assert counts.use(n, 1, NonceMinter.issued_at(n) or 0) is NonceState.VALID
    assert len(counts) == 10
    # The evicted nonces cannot be replayed: their record is gone, so they are stale.
    for n in nonces[:15]:
        assert counts.use(n, 1, NonceMinter.issued_at(n) or 0) is NonceState.STALE
    assert counts.use(nonces[-1], 2, 124.0) is NonceState.VALID


def test_a_table_holding_a_few_ticks_keeps_accepting_the_current_ones() -> None:
    """Eviction turns stale what was issued up to the evicted record's tick: with room for
    more than a tick of challenges, the nonces being given now are never hit."""
    minter = NonceMinter(b"s" * 32, lifetime=300)
    per_tick, ticks = 50, 20
    counts = NonceCounts(capacity=3 * per_tick)
    for tick in range(ticks):
        now = 1000.0 + tick * TICK
        for _ in range(per_tick):
            nonce = minter.make("r", now)
            assert counts.use(nonce, 1, NonceMinter.issued_at(nonce) or 0) is NonceState.VALID
    assert len(counts) == 3 * per_tick
    assert counts.floor == 1000.0 + (ticks - 4) * TICK  # three ticks back: not the current


def test_credentials_are_plain_values() -> None:
    c = Credentials(username="u", realm="r", nonce="n", uri="x", response="r")
    assert c.qop is None and c.algorithm == "MD5"


def test_salted_nonces_repeat_within_their_window_only() -> None:
    minter = NonceMinter(b"s" * 32, lifetime=300)
    a = minter.make("r", 64.5, "call|branch")
    assert minter.make("r", 64.9, "call|branch") == a          # a retransmission: same bytes
    assert minter.make("r", 64.9, "call|other") != a           # another request
    assert minter.make("r", 64.0 + TICK, "call|branch") != a  # the next tick ...
    assert minter.make("r", 64.0 + TICK, "call|branch")[32:] == a[32:]  # ... the same salt
    assert minter.check(a, "r", 100.0) is NonceState.VALID
    assert NonceMinter(b"t" * 32, 300).make("r", 64.5, "call|branch") != a  # secret-keyed


#: Auth-param lists as clients write them, and odd ones: the differential test's seeds.
_PARAM_SEEDS = [
    'username="Mufasa", realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",'
    ' uri="/dir/index.html", qop=auth, nc=00000001, cnonce="0a4f113b",'
    ' response="6629fae49393a05397450978507c4ef1", opaque="5ccc069c403ebaf9f0171e9517f40e41"',
    # belle-sip (linphone): two spaces, quoted names first, unquoted qop last
    ' realm="127.0.0.1", nonce="AAABokIqRGBuZknDWMBSx1aRee-SCxpa7c721f93a2bc8d1e",'
    ' algorithm=SHA-256, username="1000",  uri="sip:1001@127.0.0.1", response="20a6",'
    ' cnonce="c9uciwixQyiZs4cD", nc=00000001, qop=auth',
    'username="a",realm="r",nonce="n",uri="sip:x;lr,y",response="x"',  # comma inside quotes
    'USERNAME = "a" , Realm= r ,, nonce="" , uri=, response="x",\r\n',
    'username="we\\"ird", realm="r"',                                   # an escape: slow path
    'username="a", username="b"',                                       # repeated: an error
    'username="a, realm="r"', 'username', 'a=b c', 'a="b"c', '=x', 'a=b\r\nc=d', 'a="\x01"',
    'a=\x7fb', 'a="b\tc", d=e\t', '', ' , ,', 'n\xe4me="x"', 'x' * 70 + '=1',
]


def _both(text: str) -> tuple[object, object]:
    from protocols.sip import digest
    results: list[object] = []
    for fn in (digest._params, digest._params_slow):
        try:
            results.append(fn(text))
        except DigestError as exc:
            results.append(type(exc))
    return results[0], results[1]


def test_the_c_fast_path_of_auth_params_agrees_with_the_python_loop() -> None:
    """Where the C fast path answers it must answer what the Python loop does; elsewhere it
    leaves the judgement (errors included) to the loop.  Seeds, then every single-character
    deletion and a set of insertions at every position of each."""
    from protocols.sip import digest
    fast_params = vars(digest)["_fast_params"]
    assert fast_params is not None, "the C fast path is not built"
    answered = 0
    for seed in _PARAM_SEEDS:
        variants = {seed}
        for i in range(len(seed) + 1):
            variants.add(seed[:i] + seed[i + 1:])
            for c in ' \t",=\\\r\n\x00a':
                variants.add(seed[:i] + c + seed[i:])
        for text in variants:
            fast, slow = _both(text)
            assert fast == slow, repr(text)
            answered += fast_params(text) is not None
    assert answered > 1000  # the fast path did answer, most of the time


_HEAD = ("REGISTER sip:example.com SIP/2.0\r\n"
         "Via: SIP/2.0/UDP 10.0.0.7:5070;branch=z9hG4bK-1;rport\r\n"
         "Max-Forwards: 70\r\n"
         "From: \"Alice\" <sip:alice@example.com>;tag=f1\r\n"
         "To: <sip:alice@Example.COM>\r\n"
         "Call-ID: c1@10.0.0.7\r\n"
         "CSeq: 007 REGISTER\r\n"
         "Contact: <sip:alice@10.0.0.7:5070>\r\n"
         "Content-Length: 0\r\n\r\n")


def test_challenge_head_finds_what_a_stateless_401_copies() -> None:
    from protocols.sip.digest import challenge_head
    assert challenge_head is not None, "the C fast path is not built"
    head = challenge_head(_HEAD.encode(), "192.0.2.1", 40000)
    assert head == (
        "example.com", "c1@10.0.0.7", "f1", "z9hG4bK-1",
        b"\r\nVia: SIP/2.0/UDP 10.0.0.7:5070;branch=z9hG4bK-1;rport=40000;received=192.0.2.1"
        b"\r\nFrom: \"Alice\" <sip:alice@example.com>;tag=f1\r\nTo: <sip:alice@Example.COM>;tag=",
        b"\r\nCall-ID: c1@10.0.0.7\r\nCSeq: 7 REGISTER")
    # Compact names; from its own address without rport, the Via is copied as it came.
    compact = (_HEAD.replace("Via:", "v:").replace("From:", "f:").replace("To:", "t:")
               .replace("Call-ID:", "i:").replace(";rport", ""))
    head = challenge_head(compact.encode(), "10.0.0.7", 5070)
    assert head is not None
    assert head[4].startswith(b"\r\nVia: SIP/2.0/UDP 10.0.0.7:5070;branch=z9hG4bK-1\r\n")


@pytest.mark.parametrize("change", [
    ("To: <sip:alice@Example.COM>\r\n", "To: <sip:alice@Example.COM>;tag=x\r\n"),
    ("To: <sip:alice@Example.COM>\r\n", "To: Alice <sip:alice@Example.COM>\r\n"),
    ("Max-Forwards: 70\r\n", "Authorization: Digest username=\"alice\"\r\n"),
    ("Max-Forwards: 70\r\n", "authorization: Digest username=\"alice\"\r\n"),
    ("Max-Forwards: 70\r\n", "Require: foo\r\n"),
    ("Max-Forwards: 70\r\n", "Proxy-Require: foo\r\n"),
    ("Max-Forwards: 70\r\n", "Via: SIP/2.0/UDP 10.0.0.8;branch=z9hG4bK-2\r\n"),
    (";rport", ";rport,SIP/2.0/UDP 10.0.0.8;branch=z9hG4bK-2"),
    (";rport", ";received=10.0.0.9"),
    (";rport", ";RPORT"),
    (";rport", ";rport;oc"),
    (";branch=z9hG4bK-1", ""),
    (";branch=z9hG4bK-1", ";Branch=z9hG4bK-1"),
    ("SIP/2.0/UDP", "SIP/2.0/udp"),
    ("SIP/2.0/UDP 10.0.0.7", "SIP/2.0/UDP  10.0.0.7"),
    ("10.0.0.7:5070;", "10.0.0.7:05070;"),
    ("CSeq: 007 REGISTER", "CSeq: 7 INVITE"),
    ("CSeq: 007 REGISTER", "CSeq: 4294967296 REGISTER"),
    ("Content-Length: 0\r\n\r\n", "Content-Length: 4\r\n\r\nbody"),
    ("Max-Forwards: 70\r\n", "Max-Forwards:\r\n 70\r\n"),
    ("Call-ID: c1@10.0.0.7", "Call-ID: c1 @10.0.0.7"),
    ("Call-ID: c1@10.0.0.7", "Call-ID: c1\xe9@10.0.0.7"),
    ("From: \"Alice\" <sip:alice@example.com>;tag=f1", "From: sip:alice@example.com;tag=f1"),
    ("From: \"Alice\" <sip:alice@example.com>;tag=f1", "From: <sip:alice@example.com>;TAG=f1"),
    ("REGISTER sip:", "REGISTER tel:"),
    ("\r\n\r\n", "\n\n"),
])
def test_challenge_head_leaves_everything_else_to_the_full_way(change: tuple[str, str]) -> None:
    from protocols.sip.digest import challenge_head
    assert challenge_head is not None, "the C fast path is not built"
    old, new = change
    assert old in _HEAD
    data = _HEAD.replace(old, new, 1).encode("utf-8")
    assert challenge_head(data, "192.0.2.1", 40000) is None



def _answer_of_head(data: bytes, host: str, port: int, parts: tuple[bytes, ...],
                    head: str) -> bytes | str | None:
    """What ``challenge_answer`` must write, from ``challenge_head`` and Python's own tag and
    nonce (stateless_tag_of, NonceMinter.make's salted unique part)."""
    from protocols.sip.digest import challenge_head
    from signaling.stateless import stateless_tag_of
    assert challenge_head is not None
    found = challenge_head(data, host, port)
    if found is None:
        return None
    realm, call_id, from_tag, branch, before, after = found
    if realm != "example.com":
        return realm
    nonce = (head + format(hash(f"{call_id}|{branch}") & (2**64 - 1), "016x")).encode()
    pieces = [p[:-len(head)] for p in parts[1:-1]] + [parts[-1]]
    return b"".join((parts[0], before, stateless_tag_of(call_id, from_tag, branch).encode(),
                     after, nonce.join(pieces)))


@pytest.mark.parametrize("pieces", [1, 2, 3])
def test_challenge_answer_writes_the_bytes_python_makes_of_challenge_head(pieces: int) -> None:
    """Differential: over _HEAD, its compact form, its one-character deletions and
    insertions, and 1 to 3 challenges (one nonce slot each), the C answer is the bytes Python
    builds from challenge_head's pieces (or the same None, or the realm to judge)."""
    from protocols.sip.digest import challenge_answer
    assert challenge_answer is not None, "the C fast path is not built"
    head = "HEAD-of-the-tick-"
    parts = (b"SIP/2.0 401 Unauthorized",
             *[f'\r\nWWW-Authenticate: Digest n{i}="'.encode() + head.encode()
               for i in range(pieces)], b'"\r\nContent-Length: 0\r\n\r\n')
    seeds = [_HEAD, _HEAD.replace(";rport", "").replace("Via:", "v:"),
             _HEAD.replace(";tag=f1", "")]
    variants = set(seeds)
    for i in range(len(_HEAD)):
        variants.add(_HEAD[:i] + _HEAD[i + 1:])
        for c in "a;:<@ \r":
            variants.add(_HEAD[:i] + c + _HEAD[i:])
    answered = 0
    for text in variants:
        data = text.encode()
        for host, port in (("192.0.2.1", 40000), ("10.0.0.7", 5070)):
            fast = challenge_answer(data, host, port, {"example.com": parts})
            assert fast == _answer_of_head(data, host, port, parts, head), text
            answered += isinstance(fast, bytes)
    assert answered > 500  # compared on many answers, not vacuously
    assert challenge_answer(_HEAD.encode(), "192.0.2.1", 1, {}) == "example.com"
    with pytest.raises(TypeError):
        challenge_answer(_HEAD.encode(), "192.0.2.1", 1, {"example.com": (b"x",)})


_CREDENTIAL_SEEDS = [
    'Digest username="a12",realm="127.0.0.1",uri="sip:127.0.0.1:5060",nonce="AAABjK0sXYZ",'
    'response="0123456789ABCDEF",algorithm=MD5,cnonce="6b8b4567",qop=auth,nc=0000001f',
    'digest username="a", realm="r", nonce="n", uri="sip:r", response="x", opaque="o"',
    ' Digest  username="a", realm="r", nonce="n", uri="sip:r", response="x", algorithm=sha-256,'
    ' qop=Auth-Int, nc=000000aB, cnonce="c"\r\n',
    'Digest username="a", realm="r", nonce="n", uri="sip:r", response="x", qop=auth, nc=1,'
    ' cnonce="c"',
    'Digest username="a", realm="r", nonce="n", uri="sip:r", response="x", foo=bar',
    'Digest username="a", realm="r", nonce="n", uri="sip:r", response="x", algorithm=SHA-1',
    'Basic dXNlcjpwYXNz',
]


def test_the_c_fast_path_of_credentials_agrees_with_parse_credentials() -> None:
    """Where ``credentials`` (C) answers it must give the Credentials the Python code gives, and
    it leaves every error to that code: seeds, then every one-character deletion and a set of
    insertions at every position of each."""
    from protocols.sip import digest
    fast = vars(digest)["_fast_credentials"]
    assert fast is not None, "the C fast path is not built"
    answered = 0
    for seed in _CREDENTIAL_SEEDS:
        variants = {seed}
        for i in range(len(seed) + 1):
            variants.add(seed[:i] + seed[i + 1:])
            for c in ' \t",=\\\r\n\x00aA0':
                variants.add(seed[:i] + c + seed[i:])
        for text in variants:
            creds = fast(text, digest.Credentials)
            saved, vars(digest)["_fast_credentials"] = fast, None
            try:
                slow: object = digest.parse_credentials(text)
            except DigestError:
                slow = DigestError
            finally:
                vars(digest)["_fast_credentials"] = saved
            if creds is not None:
                assert creds == slow, repr(text)
                answered += 1
    assert answered > 500  # the fast path did answer, most of the time


_ASAN_RUN = r"""
import pickle, random, sys
build, repo, seeds_file, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
sys.path[:0] = [build, repo]
import _digest_speedups as c
from tests.sanitizers import mutated
assert c.__file__.startswith(build), c.__file__
with open(seeds_file, "rb") as f:
    heads, creds = pickle.load(f)
rnd = random.Random(8760)
parts = (b"SIP/2.0 401 Unauthorized", b'\r\nWWW-Authenticate: Digest nonce="HEAD',
         b'"\r\nContent-Length: 0\r\n\r\n')
answered = found = 0
for _ in range(count):
    data = mutated(rnd, heads)
    found += c.challenge_head(data, "192.0.2.1", 40000) is not None
    answered += isinstance(c.challenge_answer(data, "10.0.0.7", 5070, {"example.com": parts}),
                           bytes)
    c.credentials(mutated(rnd, creds).decode("latin-1"), lambda *fields: fields)
print("found", found, "answered", answered)
"""


def test_no_memory_error_under_address_sanitizer(tmp_path: Path) -> None:
    """The digest extension rebuilt with ASan and UBSan takes mutated REGISTERs (the 401 it
    writes from their bytes) and mutated Authorization values: any out-of-bounds access or
    undefined behaviour on what a peer sends aborts the run."""
    repo = Path(__file__).resolve().parents[3]
    build_sanitized([repo / "protocols/sip/_digest_speedups.c",
                     repo / "protocols/sip/_challenge.c"], tmp_path / "_digest_speedups")
    heads = [_HEAD.encode(), _HEAD.replace("Via:", "v:").replace(";rport", "").encode()]
    creds = [seed.encode() for seed in _CREDENTIAL_SEEDS]
    found, answered = run_sanitized(_ASAN_RUN, tmp_path, repo, (heads, creds), 30000)
    assert found > 3000 and answered > 3000  # the run reached both writers, not only declines
