"""Answers without a transaction, written straight to bytes (RFC 3261 §8.2.7, §16.11).

Stateless answers (keepalive OPTIONS above all, 401 challenges, and 503s under overload, when
time is scarcest) are the hottest send path, and building a Response only to serialize it at
once costs about as much as the rest of the answer.  The functions here write the same bytes
as ``serialize(make_response(...))``; tests/signaling/test_sipcore.py holds the two identical.
"""

from __future__ import annotations

from collections.abc import Iterable

from protocols.sip.builders import reason_phrase
from protocols.sip.message import Request, param

__all__ = ["stateless_answer", "stateless_tag", "stateless_tag_of", "stateless_tail"]


def stateless_tag(request: Request) -> str:
    # §8.2.6.2: a stateless UAS must give a retransmission the same tag, so derive it from
    # what a retransmission repeats.  ``Via.branch`` and ``NameAddr.tag`` spelled out (the
    # exact-case lookup first, ``param``'s any-case scan only when it misses): every
    # stateless answer comes here, and the four calls cost ~1% of a REGISTER (callgrind).
    # test_sipcore pins it to the properties.
    vp = request.vias[0].params
    top = vp.get("branch")
    if top is None:
        top = param(vp, "branch")
    fp = request.from_.params
    from_tag = fp.get("tag")
    if from_tag is None and fp:
        from_tag = param(fp, "tag")
    return stateless_tag_of(request.call_id, from_tag, top or "")


def stateless_tag_of(call_id: str, from_tag: str | None, branch: str) -> str:
    """``SipCore.stateless_tag`` of a request with these Call-ID, From tag and top branch,
    for answers made from a request's bytes (``answer_unparsed``): the same tag either way."""
    return "%x" % (hash((call_id, from_tag, branch)) & 0xFFFFFFFF)


def stateless_tail(extra: Iterable[tuple[str, str]]) -> bytes:
    """The wire form of a stateless answer after its CSeq: ``extra`` and an empty body."""
    text = "".join([f"\r\n{k}: {v}" for k, v in extra])
    return text.encode("utf-8", "surrogateescape") + b"\r\nContent-Length: 0\r\n\r\n"


def stateless_answer(request: Request, status: int, reason: str | None, tail: bytes) -> bytes:
    """The bytes of ``serialize(make_response(request, status, reason, to_tag=<stateless tag>,
    extra=...))`` for the ``extra`` that made ``tail``, without building the Response (a 100
    gets no tag: the caller copies its Timestamp into ``extra``, §8.2.6.1).

    Stateless answers (keepalive OPTIONS above all, and 503s under overload, when time is
    scarcest) are the hottest send path, and a Response object only to serialize it at once
    costs about as much as the rest of the answer.  Same header order as the serializer:
    Vias, From, To, Call-ID, CSeq (a built response has no Route, Max-Forwards, Contact ...),
    then ``tail``; the tests hold the two paths to identical bytes.
    """
    to = request.to
    if status == 100:
        to_text = str(to)  # §8.2.6.1: a 100 gets no To tag
    elif not to.params:
        # The common case: no tag yet and nothing else to keep; rendered as NameAddr renders
        # a To given a tag (§8.2.6.2), without building one.
        tag = stateless_tag(request)
        # The wire text (``raw``) of the To URI, the top Via and From read inline rather than
        # through a helper: three calls are ~3% of a stateless OPTIONS answer (callgrind).
        # test_sipcore holds these bytes identical to serialize(make_response(...)).
        uri = to.uri.raw
        if uri is None:
            uri = str(to.uri)
        to_text = f"{to.display} <{uri}>;tag={tag}" if to.display else f"<{uri}>;tag={tag}"
    elif to.tag is None:
        to_text = str(to.with_param("tag", stateless_tag(request)))
    else:
        to_text = str(to)  # in a dialog already: the tag stays (§12.2.2)
    if reason is None:
        reason = reason_phrase(status)
    vias = request.vias
    if len(vias) == 1:
        via_text = vias[0].raw
        via = "\r\nVia: " + (via_text if via_text is not None else str(vias[0]))
    else:
        via = "".join([f"\r\nVia: {v}" for v in vias])
    cseq = request.cseq
    from_text = request.from_.raw
    if from_text is None:
        from_text = str(request.from_)
    head = (f"SIP/2.0 {status} {reason}{via}\r\nFrom: {from_text}\r\nTo: {to_text}"
            f"\r\nCall-ID: {request.call_id}\r\nCSeq: {cseq.seq} {cseq.method}")
    return head.encode("utf-8", "surrogateescape") + tail
