"""OpenTelemetry spans of a Diameter application's requests and Credit-Control sessions.

``TracedApplication`` wraps any ``Application`` the node serves (the node and the application
know nothing of tracing): a span per request (kind SERVER, named after the command, ended with
the Result-Code sent) and, for Credit-Control (RFC 4006 §8.3), a session span from the
CCR-Initial to the CCR-Termination whose children are the session's requests.  A session is
sampled once, at its CCR-Initial (``--trace-sample``); its later requests follow that decision.
A session that never terminates (its client died; the Tcc timer ends it in the store) has its
span closed when the bound of open sessions pushes it out, so spans cannot pile up.

Attributes: ``rpc.system`` = ``diameter`` (the semantic conventions' RPC attributes are the
nearest fit), ``diameter.application_id``, ``diameter.command_code``, ``diameter.result_code``,
``diameter.session_id`` (a keyed hash unless ``--trace-plain-ids``), ``net.peer.name`` the
peer's Origin-Host.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from opentelemetry.trace import Span, SpanKind, Status, StatusCode, set_span_in_context

from protocols.diameter.codec import Message
from protocols.diameter.constants import AvpCode, CCRequestType
from protocols.diameter.errors import RemoteProtocolError
from signaling.diameter.application import Application
from signaling.tracing import MAX_OPEN_SPANS, Tracing

__all__ = ["TracedApplication"]

_SESSION_ID = int(AvpCode.SESSION_ID)
_REQUEST_TYPE = int(AvpCode.CC_REQUEST_TYPE)
_RESULT_CODE = int(AvpCode.RESULT_CODE)
_INITIAL = int(CCRequestType.INITIAL_REQUEST)
_TERMINATION = int(CCRequestType.TERMINATION_REQUEST)


class TracedApplication:
    """``app`` with spans around its requests (see the module docstring)."""

    def __init__(self, app: Application, tracing: Tracing) -> None:
        self.app = app
        self.tracing = tracing
        self.application_id = app.application_id
        self.commands = app.commands
        #: Open session spans by Session-Id, oldest first (bounded: MAX_OPEN_SPANS).
        self._sessions: OrderedDict[str, Span] = OrderedDict()

    async def start(self) -> None:
        await self.app.start()

    async def close(self) -> None:
        await self.app.close()
        for span in self._sessions.values():
            span.end()
        self._sessions.clear()

    async def handle(self, request: Message, peer: str) -> Message:
        sid_avp = request.find(_SESSION_ID)
        sid = sid_avp.data.decode("utf-8", "replace") if sid_avp is not None else ""
        kind_avp = request.find(_REQUEST_TYPE)
        request_type = int.from_bytes(kind_avp.data, "big") if kind_avp is not None else 0
        session = self._session(sid, request_type, request, peer)
        if session is None and (request_type or not self.tracing.sampled()):
            # A Credit-Control request of a session not traced here, or a request of another
            # application that was not sampled: no span, no attributes.
            return await self.app.handle(request, peer)
        span = self.tracing.tracer.start_span(
            f"Diameter {request.command_code}",
            context=set_span_in_context(session) if session is not None else None,
            kind=SpanKind.SERVER, attributes=self._attributes(request, sid, peer))
        try:
            answer = await self.app.handle(request, peer)
        except RemoteProtocolError as exc:
            self._end(span, exc.result_code)
            raise
        except Exception:
            self._end(span, 0, failed=True)
            raise
        code_avp = answer.find(_RESULT_CODE)
        self._end(span, int.from_bytes(code_avp.data, "big") if code_avp is not None else 0)
        if request_type == _TERMINATION and session is not None:
            self._sessions.pop(sid, None)
            session.end()
        return answer

    def _session(self, sid: str, request_type: int, request: Message,
                 peer: str) -> Span | None:
        """The session span a request belongs to; a CCR-Initial opens one when sampled."""
        known = self._sessions.get(sid) if sid else None
        if known is not None or request_type != _INITIAL or not sid:
            return known
        if not self.tracing.sampled():
            return None
        if len(self._sessions) >= MAX_OPEN_SPANS:
            _, oldest = self._sessions.popitem(last=False)
            oldest.end()
        span = self.tracing.tracer.start_span(
            "Diameter Credit-Control session", kind=SpanKind.SERVER,
            attributes=self._attributes(request, sid, peer))
        self._sessions[sid] = span
        return span

    def _attributes(self, request: Message, sid: str, peer: str) -> dict[str, Any]:
        return {"rpc.system": "diameter", "net.peer.name": peer,
                "diameter.application_id": request.application_id,
                "diameter.command_code": request.command_code,
                "diameter.session_id": self.tracing.ident(sid)}

    @staticmethod
    def _end(span: Span, code: int, failed: bool = False) -> None:
        if code:
            span.set_attribute("diameter.result_code", code)
        if failed or code >= 3000:  # protocol, transient and permanent failures (§7.1)
            span.set_status(Status(StatusCode.ERROR))
        span.end()
