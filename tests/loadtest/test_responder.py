"""The trivial responder answers what the parser accepts, with the request's identifiers."""

from __future__ import annotations

import socket
import subprocess
import sys

from loadtest.responder import respond
from loadtest.sipmsg import BranchFactory, Identity, UaTemplates, render_ack
from protocols.sip.message import Request, Response
from protocols.sip.parser import parse_message

UA = Identity(b"alice", b"example.com", b"UDP", b"127.0.0.1:40000", b"sip:alice@127.0.0.1:40000")


def test_respond_copies_identifiers_and_adds_a_to_tag() -> None:
    data = UaTemplates(UA, b"c1@x", b"ft", 60).register(BranchFactory()(), 3)
    req = parse_message(data)
    out = respond(data)
    assert out is not None and isinstance(req, Request)
    resp = parse_message(out)
    assert isinstance(resp, Response) and resp.status == 200
    assert resp.vias == req.vias and resp.call_id == req.call_id and resp.cseq == req.cseq
    assert resp.from_ == req.from_ and resp.to.tag is not None
    assert resp.to.uri == req.to.uri


def test_ack_responses_and_garbage_get_no_answer() -> None:
    ack = render_ack(UA, b"z9hG4bKa", b"sip:b@x", b"<sip:b@x>;tag=1", b"c", b"t")
    assert respond(ack) is None
    assert respond(b"SIP/2.0 200 OK\r\n\r\n") is None
    assert respond(b"\x00\x01garbage") is None


def test_reject_first_answers_503_with_retry_after_once_per_call() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "loadtest.responder", "--port", "0",
                             "--reject-first", "503:2"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline().split()[1])
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(5)
        tpl = UaTemplates(UA, b"same-call@x", b"ft", 60)
        statuses = []
        for cseq in (1, 2):
            s.sendto(tpl.register(BranchFactory()(), cseq), ("127.0.0.1", port))
            resp = parse_message(s.recv(4096))
            assert isinstance(resp, Response)
            statuses.append((resp.status, resp.headers("Retry-After")))
        assert statuses == [(503, ["2"]), (200, [])]
        s.close()
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
