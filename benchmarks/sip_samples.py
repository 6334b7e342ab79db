"""Representative messages for the SIP benchmarks: what a proxy sees in a basic call."""

from __future__ import annotations

__all__ = ["INVITE_SDP", "OK_200", "REGISTER"]

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
