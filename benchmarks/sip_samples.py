"""Representative messages for the SIP benchmarks: what a proxy sees in a basic call."""

from __future__ import annotations

__all__ = [
    "INVITE_SDP", "OK_200", "REGISTER", "invite_for_call", "ok_for_call", "register_for_user",
]

REGISTER = (
    b"REGISTER sip:example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: Bob <sip:bob@example.com>\r\n"
    b"From: Bob <sip:bob@example.com>;tag=456248\r\n"
    b"Call-ID: 843817637684230@998sdasdh09\r\n"
    b"CSeq: 1826 REGISTER\r\n"
    b"Contact: <sip:bob@192.0.2.10:5060;transport=udp>\r\n"
    b"Expires: 7200\r\n"
    b"User-Agent: bench/1.0\r\n"
    b"Content-Length: 0\r\n\r\n"
)

_SDP = (
    b"v=0\r\no=alice 2890844526 2890844526 IN IP4 192.0.2.20\r\ns=-\r\n"
    b"c=IN IP4 192.0.2.20\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0 8 97\r\n"
    b"a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:97 iLBC/8000\r\n"
)

INVITE_SDP = (
    b"INVITE sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.30:5060;branch=z9hG4bK74bf9;received=192.0.2.30;rport=5060\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bKnashds8\r\n"
    b"Max-Forwards: 69\r\n"
    b"Record-Route: <sip:192.0.2.30;lr>\r\n"
    b"To: Bob <sip:bob@example.com>\r\n"
    b"From: Alice <sip:alice@example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@pc33.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@192.0.2.20:5060>\r\n"
    b"Allow: INVITE, ACK, CANCEL, OPTIONS, BYE\r\n"
    b"Supported: replaces, timer\r\n"
    b"User-Agent: bench/1.0\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(_SDP)).encode() + b"\r\n\r\n" + _SDP
)

OK_200 = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.30:5060;branch=z9hG4bK74bf9;received=192.0.2.30;rport=5060\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bKnashds8\r\n"
    b"Record-Route: <sip:192.0.2.30;lr>\r\n"
    b"To: Bob <sip:bob@example.com>;tag=a6c85cf\r\n"
    b"From: Alice <sip:alice@example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@pc33.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:bob@192.0.2.40:5060>\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def invite_for_call(i: int) -> bytes:
    """An INVITE with SDP for call ``i``: every per-call value distinct (users, tags, branches,
    Call-ID, SDP origin), as a proxy sees them, so no cache keyed by text can serve it twice."""
    sdp = (
        f"v=0\r\no=u{i} {2890844526 + i} {2890844526 + i} IN IP4 192.0.{i % 250}.20\r\ns=-\r\n"
        f"c=IN IP4 192.0.{i % 250}.20\r\nt=0 0\r\n"
        f"m=audio {10000 + 2 * (i % 20000)} RTP/AVP 0 8 97\r\n"
        "a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:97 iLBC/8000\r\n"
    ).encode()
    head = (
        f"INVITE sip:bob{i}@example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 192.0.2.30:5060;branch=z9hG4bKp{i:08x}"
        ";received=192.0.2.30;rport=5060\r\n"
        f"Via: SIP/2.0/UDP 192.0.{i % 250}.20:5060;branch=z9hG4bKu{i:08x}\r\n"
        "Max-Forwards: 69\r\n"
        "Record-Route: <sip:192.0.2.30;lr>\r\n"
        f"To: Bob {i} <sip:bob{i}@example.com>\r\n"
        f"From: Alice <sip:alice{i}@example.com>;tag={1928301774 + i}\r\n"
        f"Call-ID: {i:012x}a84b4c76e66710@pc33.example.com\r\n"
        f"CSeq: {314159 + i} INVITE\r\n"
        f"Contact: <sip:alice{i}@192.0.{i % 250}.20:5060>\r\n"
        "Allow: INVITE, ACK, CANCEL, OPTIONS, BYE\r\n"
        "Supported: replaces, timer\r\n"
        "User-Agent: bench/1.0\r\n"
        "Content-Type: application/sdp\r\n"
        f"Content-Length: {len(sdp)}\r\n\r\n"
    )
    return head.encode() + sdp


def register_for_user(i: int) -> bytes:
    """A REGISTER from user ``i`` (distinct AOR, contact, tag, branch and Call-ID)."""
    return (
        "REGISTER sip:example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 192.0.{i % 250}.10:5060;branch=z9hG4bKr{i:08x};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"To: <sip:user{i}@example.com>\r\n"
        f"From: <sip:user{i}@example.com>;tag={456248 + i}\r\n"
        f"Call-ID: {i:012x}843817637684230@998sdasdh09\r\n"
        f"CSeq: {1826 + i} REGISTER\r\n"
        f"Contact: <sip:user{i}@192.0.{i % 250}.10:5060;transport=udp>\r\n"
        "Expires: 7200\r\n"
        "User-Agent: bench/1.0\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def ok_for_call(i: int) -> bytes:
    """The 200 OK answering ``invite_for_call(i)`` (To tag added, Contact of the callee)."""
    return (
        "SIP/2.0 200 OK\r\n"
        f"Via: SIP/2.0/UDP 192.0.2.30:5060;branch=z9hG4bKp{i:08x}"
        ";received=192.0.2.30;rport=5060\r\n"
        f"Via: SIP/2.0/UDP 192.0.{i % 250}.20:5060;branch=z9hG4bKu{i:08x}\r\n"
        "Record-Route: <sip:192.0.2.30;lr>\r\n"
        f"To: Bob {i} <sip:bob{i}@example.com>;tag=a6c{i:x}\r\n"
        f"From: Alice <sip:alice{i}@example.com>;tag={1928301774 + i}\r\n"
        f"Call-ID: {i:012x}a84b4c76e66710@pc33.example.com\r\n"
        f"CSeq: {314159 + i} INVITE\r\n"
        f"Contact: <sip:bob{i}@192.0.{(i + 7) % 250}.40:5060>\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
