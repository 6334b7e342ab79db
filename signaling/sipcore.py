"""The SIP receive path: parse, answer errors, match transactions, queue new work.

Everything here runs synchronously in the transport callbacks and must stay cheap (the
ARCHITECTURE backpressure rule): parsing, the stateless checks of RFC 3261 §8.2 / §16.3, the
stateless OPTIONS answer, transaction matching (a retransmission is absorbed and answered with
the last response, §17.2), and the hand-off of a new request to a bounded shard.  Proxy logic
runs in the workers (``Dispatcher``); a REGISTER (``answer_at_once``: the in-memory or Redis
registry) is handled here as it is read, answered at once or, past its one wait for Redis,
from the reply's callback (``signaling.eager``), with no worker, transaction or task.

One asyncio timer serves every transaction: it is armed at the transaction table's earliest
deadline (the aioquic model) and re-armed after each firing, by every method here that gives a
transaction an event (receive, respond, ``start_client_transaction``), so no caller must
remember to.

Collaborators are given, not plugged in: the transports (``Transports``, filled as listeners
bind) at construction, and the one ``TransactionUser`` (registrar and proxy behind a router) at
``start``.  The TU sees the transaction layer only through the methods below.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from typing import cast

from protocols.sip.answered import AnsweredRequests
from protocols.sip.builders import error_response, make_response, reason_phrase
from protocols.sip.errors import RemoteProtocolError, TransactionError
from protocols.sip.message import (
    Request,
    Response,
    SipURI,
    TelURI,
)
from protocols.sip.parser import parse_message
from protocols.sip.serializer import serialize
from protocols.sip.timers import TimerConfig, TimerValues, timer_values
from protocols.sip.transaction import (
    ClientTransaction,
    Event,
    InviteServerTransaction,
    ResponseSummary,
    SendMessage,
    ServerTransaction,
    State,
    Transaction,
    TransactionKey,
    TransactionTerminated,
    new_client_transaction,
    new_server_transaction,
    response_summary,
    server_key,
)
from protocols.sip.txtable import TransactionTable, TransactionTableFull
from signaling.auth.guard import Guard
from signaling.config import Config
from signaling.dispatch import Dispatcher
from signaling.eager import run_at_once
from signaling.flows import FlowTable
from signaling.metrics import Metrics
from signaling.overload import Overload, Verdict
from signaling.sipnames import ALLOW, KNOWN_METHODS, METHOD_LABELS, SUPPORTED_EXTENSIONS
from signaling.stateless import stateless_answer, stateless_tag, stateless_tail
from signaling.streamanswer import StreamAnswer, StreamAnswers
from signaling.transports.base import Peer, Transports
from signaling.tu import NoTransactionUser, TransactionUser, TxnCallback, Work

__all__ = ["KNOWN_METHODS", "SUPPORTED_EXTENSIONS", "Peer", "SipCore", "StreamAnswer",
           "TransactionUser", "TxnCallback", "Work"]

log = logging.getLogger(__name__)



class SipCore:
    """The SIP transaction layer of one node: transactions, timers, queues and counters, over
    the transports it is given, for the one transaction user it serves."""

    def __init__(self, cfg: Config, metrics: Metrics, transports: Transports,
                 guard: Guard | None = None,
                 relay: Callable[[bytes, Peer], bool | None] | None = None) -> None:
        self.cfg = cfg
        self.transports = transports
        #: A worker of a multi-process server: sends to a connection another worker holds
        #: (``signaling.siblings``); None when the peer is not one.
        self.relay = relay
        self.domains = cfg.served_domains()
        self.myself = cfg.own_names() | self.domains
        self.table = TransactionTable(cfg.max_transactions)
        #: What absorbs duplicates of requests answered without a transaction.
        self.stream_answers = StreamAnswers()
        tc = TimerConfig(t1=cfg.t1, t2=cfg.t2, t4=cfg.t4, timer_c=max(cfg.ring_timeout, 180.0))
        #: Timer values by reliability of the transport (§17.1.1.2: A, E, G, K, I, J differ).
        self.timers: dict[bool, TimerValues] = {False: timer_values(tc, False),
                                                True: timer_values(tc, True)}
        #: Over UDP, the final answers of work answered at once (``answer_at_once``), for its
        #: retransmissions until Timer J (§17.2.2), in place of its transactions; bounded as
        #: the table is.
        self.answered = AnsweredRequests(self.timers[False].j, cfg.max_transactions)
        self.dispatcher: Dispatcher[Work] = Dispatcher(
            cfg.workers, cfg.queue_size, self._handle, self._handler_failed
        )
        self._tu: TransactionUser = NoTransactionUser(self)
        #: Transactions whose events a TU asked for (``observe``, ``start_client_transaction``).
        self._observers: dict[Transaction, TxnCallback] = {}
        self.accepting = True
        #: Per-source rate limit and blocks (signaling.auth.guard), checked before parsing.
        self.guard = guard
        #: Answers an admitted new REGISTER datagram from its bytes, before any parse, or
        #: returns False: the authenticator's stateless 401 (``challenge_unparsed``), when
        #: authentication is on.  Only for datagrams (``conn_id`` None): what comes over a
        #: connection may be a sibling worker's (``TransactionUser.answer_statelessly``).
        self.answer_unparsed: Callable[[bytes, Peer], bool] | None = None
        #: RFC 5626 UDP flows' last keep-alive: the UDP transport and the registrar write it,
        #: the proxy reads it (signaling/flows.py).
        self.flows = FlowTable(cfg.flow_timer)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: The clock of every deadline here: the event loop's (its ``call_at`` arms the
        #: timer).  From ``start`` on it is the loop's own ``time``, read ~19 times per
        #: proxied call without a method of ours around it; what took it before (the proxy's
        #: dialog keeper) keeps reading the loop through ``_loop_time``.
        self.now: Callable[[], float] = self._loop_time
        #: Headers of every answer this node makes itself (not of responses it relays):
        #: Server (§20.35), unless configured off.
        self.answer_headers: tuple[tuple[str, str], ...] = (
            () if cfg.server_header.lower() in ("", "off") else (("Server", cfg.server_header),))
        #: The 503's Retry-After (§21.5.4) never changes: encoded once, not per shed request.
        self._retry_tail = stateless_tail([("Retry-After", str(cfg.retry_after)),
                                           *self.answer_headers])
        #: §11.2: an OPTIONS answer tells what the server can do.
        self._options_tail = stateless_tail([
            ("Allow", ALLOW), ("Accept", "application/sdp"), ("Accept-Encoding", "identity"),
            ("Accept-Language", "en"), ("Supported", ", ".join(sorted(SUPPORTED_EXTENSIONS))),
            *self.answer_headers])
        self._declare_metrics(metrics)
        self.overload = Overload(cfg, metrics, time.monotonic)
        #: Reads later than this go through the overload screen, stateless answers included.
        self._max_receive_delay = cfg.max_receive_delay
        self.overload.backlog = lambda: self.dispatcher.backlog
        self.dispatcher.on_start = self._started
        #: The TU answers its own requests (``TransactionUser.answers_itself``) without a
        #: worker (``Server``: the in-memory registry, which never waits, and Redis, which
        #: waits once for its script's reply): they are handled in the receive callback and,
        #: past a wait, from the callback of what they wait on (``_answer_now``).
        self.answer_at_once = False
        #: Such requests over UDP waiting (for Redis), by transaction key: their
        #: retransmissions are absorbed meanwhile (§17.2.2 Trying: nothing is sent).
        self.waiting: dict[TransactionKey, StreamAnswer] = {}
        #: Such requests waiting over any transport, bounded as the workers' queues were.
        self.waiting_count = 0
        self.max_waiting = cfg.workers * cfg.queue_size

    def _declare_metrics(self, m: Metrics) -> None:
        self.c_req_in = m.fast_counter("sip_requests_received", "SIP requests received",
                                       ["method", "transport"])
        self.c_resp_in = m.fast_counter("sip_responses_received", "SIP responses received",
                                        ["method", "class", "transport"])
        self.c_resp_out = m.fast_counter("sip_responses_sent", "SIP responses sent",
                                         ["method", "class", "transport"])
        self.c_req_out = m.fast_counter("sip_requests_sent", "SIP requests sent",
                                        ["method", "transport"])
        self.c_retrans = m.fast_counter("sip_retransmissions", "SIP retransmissions",
                                        ["direction"])
        self.c_drop = m.fast_counter("sip_dropped", "SIP messages dropped, by reason",
                                     ["reason"])
        self.c_reject = m.fast_counter("sip_rejected", "Malformed SIP requests answered",
                                       ["status"])
        self.c_keepalive = m.fast_counter("sip_stun_keepalives",
                                          "STUN Binding requests answered on the SIP UDP port "
                                          "(RFC 5626 §8 keep-alives)")
        self.c_shed = m.fast_counter("sip_shed", "New SIP requests shed with 503", ["reason"])
        self.c_errors = m.fast_counter("handler_errors", "Unexpected errors in SIP workers")
        m.callback_gauge("queue_depth", "Requests waiting per worker shard", ["shard"],
                         lambda: {(str(i),): float(d)
                                  for i, d in enumerate(self.dispatcher.depths())})
        m.callback_gauge("transactions", "Live SIP transactions", [],
                         lambda: {(): float(len(self.table) + len(self.answered))})

    # -- life cycle --------------------------------------------------------------------------

    def start(self, tu: TransactionUser | None = None) -> None:
        if tu is not None:
            self._tu = tu
        self._loop = asyncio.get_running_loop()
        self.now = self._loop.time
        self.dispatcher.start()

    async def stop(self, timeout: float) -> None:
        """Stop taking new requests, let queued work and live transactions finish."""
        self.accepting = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        await self.dispatcher.drain(timeout)
        while self.waiting_count and loop.time() < deadline:
            await asyncio.sleep(0.01)  # a registry call is bounded (CALL_TIMEOUT): it ends
        while len(self.table) and loop.time() < deadline:
            # Completed transactions only wait out their absorb timers (J, K, I): nothing
            # is in flight any more once every one has a final response.
            if not self._unanswered():
                break
            await asyncio.sleep(0.05)
        # The bound is reached: a request still without a final answer (an INVITE ringing a
        # silent callee) gets 503 + Retry-After now, rather than only its 100 Trying and then
        # silence until the caller's Timer B (§21.5.4: the server is going away, try later).
        for txn in self._unanswered():
            self.c_shed.inc("shutdown_pending")
            self.respond(txn, make_response(txn.request, 503, to_tag=self.stateless_tag(
                txn.request), extra=[("Retry-After", str(self.cfg.retry_after))]))
        await self.dispatcher.stop()
        if self._timer is not None:
            self._timer.cancel()

    def _unanswered(self) -> list[ServerTransaction]:
        return [t for t in self.table if isinstance(t, ServerTransaction)
                and (t.last_response is None or t.last_response.status < 200)]

    # -- sending -----------------------------------------------------------------------------

    def send(self, data: bytes, peer: Peer) -> bool:
        if peer.conn_id is not None and self.relay is not None:
            relayed = self.relay(data, peer)
            if relayed is not None:
                if not relayed:
                    self.c_drop.inc("connection_gone")
                return relayed
        transport = self.transports.by_name.get(peer.transport)
        if transport is None:
            self.c_drop.inc("no_transport")
            return False
        if not transport.send(data, peer):
            self.c_drop.inc("connection_gone")
            return False
        return True

    def connect_failed(self, transport: str, host: str, port: int) -> None:
        """A connection to ``host:port`` could not be opened: the client transactions whose
        request waited for it and got no answer yet learn of the transport error (§17.1.4)
        now, instead of at Timer B or F.  A scan of the client transactions: connection
        failures are rare next to messages, and this keeps no per-message state."""
        self._fail_waiting(lambda p: p.transport == transport and p.host == host
                           and p.port == port)

    def connection_closed(self, transport: str, conn_id: str) -> None:
        """A connection closed: the client transactions whose request went over it and heard
        nothing back fail now (§17.1.4) instead of at Timer B or F, since their answer would
        have come over it; for a request to an RFC 5626 flow the proxy then tries the
        instance's next flow (§5.3, ``signaling.flows``)."""
        self._fail_waiting(lambda p: p.transport == transport and p.conn_id == conn_id)

    def _fail_waiting(self, over: Callable[[Peer], bool]) -> None:
        """The transport error for the client transactions still waiting for a first answer
        (their initial state) whose peer is ``over``."""
        now = self.now()
        for txn in [t for t in self.table if isinstance(t, ClientTransaction)
                    and t.state is t.INITIAL and isinstance(t.peer, Peer) and over(t.peer)]:
            self.run(txn, txn.transport_error(now))
        self.arm_timer()

    def connection_gone(self, peer: Peer) -> None:
        """A sibling worker could not send over ``peer``'s connection for us (it closed):
        what we sent over it and got no answer to fails now (§17.1.4), as ``connect_failed``
        does for a connection that never opened."""
        self._fail_waiting(lambda p: p == peer)

    def overloaded(self) -> bool:
        """A worker queue is full: stream transports stop reading (backpressure) until not."""
        return self.dispatcher.any_full()

    def timers_for(self, peer: Peer) -> TimerValues:
        """The timers of ``peer``'s transport: reliable ones do not retransmit (§17.1.1.2)."""
        return self.timers[self.transports.reliable(peer.transport)]

    def forward_stateless(self, message: Request | Response, peer: Peer,
                          data: bytes | None = None) -> None:
        """Send a message no transaction of ours owns (§16.11 ACK for a 2xx, §16.7 step 9);
        ``data``: its wire form when the caller has it (edited from the received bytes)."""
        if isinstance(message, Request):
            self.c_req_out.inc(_method[message.method], peer.transport)
        self.send(serialize(message) if data is None else data, peer)

    def send_stateless(self, request: Request, peer: Peer, status: int,
                       reason: str | None = None, extra: Iterable[tuple[str, str]] = ()) -> None:
        """Answer without a transaction (§8.2.7, §16.11): errors, OPTIONS, overload 503."""
        extra = [*extra, *self.answer_headers]
        if status <= 100:  # no To tag, Timestamp copied (§8.2.6.1): the general builder's case
            self.c_resp_out.inc(_method[request.method], "1xx", peer.transport)
            self.send(serialize(make_response(request, status, reason, extra=extra)), peer)
            return
        self._send_stateless(request, peer, status, reason, stateless_tail(extra))

    def send_stateless_tail(self, request: Request, peer: Peer, status: int, reason: str | None,
                            tail: bytes) -> None:
        """``send_stateless`` with the answer after its CSeq already encoded (``stateless_tail``
        of the extra headers, ``answer_headers`` included): for answers whose headers are
        encoded once and reused, as the authenticator's challenges."""
        self._send_stateless(request, peer, status, reason, tail)

    def send_unparsed_answer(self, method: str, status: int, data: bytes, peer: Peer) -> None:
        """Send ``data``, a stateless answer to a request ``answer_unparsed`` took (never
        parsed), counted as the parsed request and its answer would be."""
        transport = peer.transport
        self.c_req_in.inc(method, transport)
        self.c_resp_out.inc(method, _CLASS[status // 100], transport)
        self.send(data, peer)

    def _send_stateless(self, request: Request, peer: Peer, status: int, reason: str | None,
                        tail: bytes) -> None:
        self.c_resp_out.inc(_method[request.method], _CLASS[status // 100], peer.transport)
        self.send(stateless_answer(request, status, reason, tail), peer)

    #: §8.2.6.2: the To tag of a stateless answer (``signaling.stateless``).
    stateless_tag = staticmethod(stateless_tag)

    def respond(self, txn: ServerTransaction, response: Response | ResponseSummary,
                data: bytes | None = None) -> None:
        """Send ``response`` through its server transaction (retransmissions, timers).

        ``data``: the response's wire form when the TU wrote it already; ``response`` may then
        be a ``ResponseSummary`` (see ``protocols.sip.summary``).
        """
        if isinstance(txn, StreamAnswer):
            self._answer_stream(txn, response, data)
            return
        if txn.state is _TERMINATED:
            self.c_drop.inc("late_response")
            return
        loop = self._loop
        assert loop is not None
        try:
            events = txn.send_response(response, loop.time())
        except TransactionError:
            # A second final response racing the first (a 487 after a 486): §17.2 discards it.
            self.c_drop.inc("late_response")
            return
        if data is not None and txn.last_response_bytes is None:
            # The transaction took it as its last response (``run`` sends it from there);
            # not when Completed discarded it (§17.2.2) and kept the bytes it had.
            txn.cache_bytes(response, data)
        self.run(txn, events)
        txn.compact()  # once answered, only the response bytes are needed until G/H, J or L
        self.arm_timer()

    def _answer_stream(self, answer: StreamAnswer, response: Response | ResponseSummary,
                       data: bytes | None) -> None:
        """``respond`` without a transaction (``StreamAnswer``): a final answer is sent once."""
        last = answer.last_response
        if last is not None and last.status >= 200:
            self.c_drop.inc("late_response")
            return
        if data is None:
            assert isinstance(response, Response)  # a summary always comes with its bytes
            data = serialize(response)
        # Kept a while (``StreamAnswers``): the bytes a duplicate gets (``_duplicate``) and
        # a shared summary, which is all a reader of ``last_response`` needs (its status).
        answer.data = data
        answer.last_response = response if isinstance(response, ResponseSummary) else \
            response_summary(response.status, response.reason, response.cseq.method)
        method = response.method if isinstance(response, ResponseSummary) else \
            response.cseq.method
        peer = answer.peer
        self.c_resp_out.inc(_method[method], _CLASS[response.status // 100], peer.transport)
        self.send(data, peer)

    def _loop_time(self) -> float:
        loop = self._loop
        assert loop is not None
        return loop.time()

    # -- the receive path --------------------------------------------------------------------

    def receive(self, data: bytes, peer: Peer, waited: float = 0.0) -> bool:
        """One datagram or WebSocket message; ``waited``: seconds it sat in the kernel's
        receive queue before we read it.  Never raises.  False when ``data`` was not a SIP
        message (connection transports close peers that send only such data)."""
        guard = self.guard
        if guard is not None and not guard.admit(peer.host, self.now()):
            return True  # blocked source: dropped and counted by the guard, never answered
        unparsed = self.answer_unparsed
        if (unparsed is not None and data[:9] == b"REGISTER " and peer.conn_id is None
                and waited <= self._max_receive_delay and unparsed(data, peer)):
            # A stateless 401 gives the workers no work, so admission control has nothing to
            # weigh (its screen was 30k of the 120k instructions per 401, callgrind; a 503
            # would cost a parse more than the 401).  A read that came late still goes to the
            # screen, which drops it so the reader catches up.
            return True
        verdict = self.overload.screen(data, peer.host, waited)
        if verdict is _DROP:
            return True  # new work beyond what even a 503 can afford: counted, not parsed
        try:
            msg = parse_message(data)
        except RemoteProtocolError as err:
            self._rejected(err, peer)
            return False
        try:
            if isinstance(msg, Response):
                self._response(msg, peer)
            else:
                self._request(msg, peer, waited, verdict)
        except TransactionError:
            # The peer sent something its transaction cannot take (an ACK before any final
            # response, a second final response racing the first): a counted drop, §17.
            self.c_drop.inc("transaction_mismatch")
        except Exception:  # a bug here must cost one message, never the transport
            log.exception("unexpected error handling a SIP message from %s", peer)
            self.c_errors.inc()
        return True

    def _rejected(self, err: RemoteProtocolError, peer: Peer) -> None:
        # §8.2.6.2: the tag must be the same for a retransmission and differ between
        # requests: derive it from the request's own header text.
        err.extra_headers.extend(self.answer_headers)
        answer = error_response(err, format(hash(tuple(err.headers)) & 0xFFFFFFFF, "x"))
        if answer is None:
            self.c_drop.inc("malformed")
            return
        self.c_reject.inc(str(err.status))
        # The request did not parse: its method is not known for sure.
        self.c_resp_out.inc("other", _CLASS.get((err.status or 0) // 100, "other"),
                            peer.transport)
        self.send(answer, peer)

    def _response(self, resp: Response, peer: Peer) -> None:
        self.c_resp_in.inc(_method[resp.cseq.method], _CLASS[resp.status // 100],
                           peer.transport)
        txn = self.table.find_client(resp)
        if txn is not None:
            self.run(txn, txn.receive_response(resp, self.now()))
            txn.compact()  # a final response came: only D's ACK or absorbing are left
            self.arm_timer()
        else:
            self._tu.on_stray_response(resp, peer)

    def _request(self, req: Request, peer: Peer, waited: float = 0.0,
                 verdict: Verdict = Verdict.ADMIT) -> None:
        method = req.method
        self.c_req_in.inc(method if method in KNOWN_METHODS else "other", peer.transport)
        self._stamp_via(req, peer)
        if "oc" in req.vias[0].params:
            self.overload.stamp_oc(req)  # RFC 7339 §5.2: our report rides on its responses
        key = server_key(req)  # once: to match, then to create the transaction
        txn = self.table.find_server_by_key(key, req) if key is not None else None
        if txn is not None:
            if method != "ACK":
                self.c_retrans.inc("received")
                if req.to.tag is None:
                    # Screened as new work and admitted or refused: a retransmission is not
                    # (issue 13), what its admission took goes back.
                    self.overload.retransmitted(method, peer.host, verdict)
            self.run(txn, txn.receive_request(req, self.now()))
            self.arm_timer()
            return
        answers, waiting = self.stream_answers, self.waiting
        if key is not None and (answers.recent or answers.older or waiting):
            answer = answers.find(key) or waiting.get(key)
            if answer is not None:
                self._duplicate(answer.data, req, peer, verdict)
                return
        answered = self.answered
        if key is not None and answered.answers:
            data = answered.find(key, self.now())
            if data is not None:  # counted as a transaction's resent answer is (``run``)
                self.c_resp_out.inc(_method[method], _CLASS[data[8] - 48], peer.transport)
                self._duplicate(data, req, peer, verdict)
                return
        if method == "ACK":
            self._tu.on_ack(req, peer)
            return
        held = False
        if req.to.tag is not None:
            # Only the work of a dialog this node holds is admitted work (issue 13): any other
            # request with a To tag is admitted like a new one, or a flood of made-up BYEs
            # (or a load generator's BYEs after its REGISTERs were refused) would pass every
            # limit and go ahead of everything.
            held = self._tu.holds(req)
            verdict = _ADMIT if held else self.overload.decide(_method[method], peer.host,
                                                                waited)
            if verdict is _DROP:
                return
        if self._precheck(req, peer, waited, verdict):
            return
        if method == "CANCEL" and self._cancel(req, peer):
            return
        if self._tu.answer_statelessly(req, peer):
            return
        self._new_transaction(req, peer, key, held)

    def _stamp_via(self, req: Request, peer: Peer) -> None:
        """§18.2.1 received and RFC 3581 §4 rport, so responses find their way back."""
        top = req.vias[0]
        params = top.params
        if "rport" in params and params["rport"] is None:
            req.vias[0] = top.with_rport(peer.host, peer.port)
        elif top.host != peer.host:
            req.vias[0] = top.with_param("received", peer.host)

    def _precheck(self, req: Request, peer: Peer, waited: float = 0.0,
                  verdict: Verdict = Verdict.ADMIT) -> bool:
        """Stateless checks of §8.2 and §16.3; True when the request was answered."""
        if not isinstance(req.uri, SipURI | TelURI):
            self.send_stateless(req, peer, 416)  # §8.2.2.1, RFC 4475 unkscm / novelsc
            return True
        if req.proxy_require or req.require:
            # Require is the UAS's to check (§16.3 step 5: a proxy must not): only for what
            # this server answers itself, REGISTER and requests addressed to it.
            uas = (req.require if req.method == "REGISTER" or self.is_myself(req) else [])
            unsupported = [t for t in (*req.proxy_require, *uas)
                           if t.lower() not in SUPPORTED_EXTENSIONS]
            if unsupported:
                # §8.2.2.3 and §16.3 step 5: 420 listing what we do not support (bext01).
                self.send_stateless(req, peer, 420,
                                    extra=[("Unsupported", ", ".join(unsupported))])
                return True
        if req.method == "OPTIONS" and self.is_myself(req):
            # Keepalives and health probes (§11.2): answered at once, without state.
            self._send_stateless(req, peer, 200, "OK", self._options_tail)
            return True
        if verdict is _REJECT:
            # Refused by admission control (signaling/overload.py): a stateless 503 with a
            # jittered Retry-After (§21.5.4), no transaction left behind.  Only new work is
            # ever refused: ``_request`` admits every request of a dialog held here.
            self.c_shed.inc("overload")
            tail = self.overload.rejected(req, self.stateless_tag(req), waited, _method[req.method])
            self._send_stateless(req, peer, 503, None, tail)
            return True
        if not self.accepting and req.method != "CANCEL" and req.to.tag is None:
            # A CANCEL is no new work: it ends an INVITE this server still holds (§9.2), which
            # is what a draining server is finishing; so is a request within a dialog (a BYE
            # ending a call, which a reload's new worker hands over: signaling.handoff).
            self._shed(req, peer, "shutting_down")
            return True
        return False

    def _shed(self, req: Request, peer: Peer, reason: str) -> None:
        """A stateless 503 + Retry-After for a new request (§21.5.4), counted by reason."""
        self.c_shed.inc(reason)
        self._send_stateless(req, peer, 503, None, self._retry_tail)

    def is_myself(self, req: Request) -> bool:
        """The Request-URI names this server, not a user (§16.4 "myself", no user part)."""
        uri = req.uri
        return isinstance(uri, SipURI) and uri.user is None and uri.host.lower() in self.myself

    def _cancel(self, req: Request, peer: Peer) -> bool:
        if self._tu.on_cancel(req, peer, self.now()):
            return True
        # §9.2: a CANCEL matching no transaction gets 481.
        self.send_stateless(req, peer, 481)
        return True

    def _new_transaction(self, req: Request, peer: Peer,
                         key: TransactionKey | None = None, held: bool = False) -> None:
        if req.method == "REGISTER" and self._without_transaction(req, peer, key, held):
            return
        txn = new_server_transaction(req, self.timers_for(peer), peer, key)
        try:
            self.table.add(txn)
        except TransactionTableFull:
            self._shed(req, peer, "transaction_table_full")
            return
        if req.method == "INVITE":
            # §16.2 / §17.2.1: 100 Trying at once, so the caller stops retransmitting.
            self._trying(txn, req)
        work = Work(req, txn, peer, time.monotonic())
        # Work of a dialog held here goes ahead of new requests (issue 13).
        if not self.dispatcher.submit(req.call_id, work, held):
            self.c_shed.inc("queue_full")
            self.respond(txn, make_response(req, 503, to_tag=self.stateless_tag(req),
                                            extra=[("Retry-After", str(self.cfg.retry_after))]))
        # No arm_timer otherwise: a new server transaction arms no timer until it answers
        # (§17.2.1 G/H, §17.2.2 J), and ``respond`` arms then.

    def _without_transaction(self, req: Request, peer: Peer, key: TransactionKey | None,
                             held: bool) -> bool:
        """A request the TU answers itself, through a ``StreamAnswer`` instead of a
        transaction: over a connection (kept to absorb its duplicates,
        signaling.streamanswer), and over UDP when answered at once (its answer then kept for
        its retransmissions until Timer J: protocols.sip.answered; an RFC 2543 key, matched
        with its To tag, keeps its transaction).  False when it needs a transaction."""
        reliable = self.transports.reliable(peer.transport)
        if not (reliable or (self.answer_at_once and key is not None and key[0] != "2543")) \
                or not self._tu.answers_itself(req):
            return False
        answer = StreamAnswer(peer, key)
        now = time.monotonic()
        if self.answer_at_once and self.waiting_count >= self.max_waiting:
            # What a full worker queue was: 503 + Retry-After (§21.5.4), nothing kept.
            self._shed(req, peer, "queue_full")
            return True
        if reliable:
            self.stream_answers.add(answer, now)
        elif not self.answered.has_room(self.now()):
            self._shed(req, peer, "transaction_table_full")
            return True
        work = Work(req, cast(ServerTransaction, answer), peer, now)
        if self.answer_at_once:
            self._answer_now(work, answer, reliable)
        elif not self.dispatcher.submit(req.call_id, work, held):
            self.c_shed.inc("queue_full")
            self._answer_stream(answer, make_response(
                req, 503, to_tag=self.stateless_tag(req),
                extra=[("Retry-After", str(self.cfg.retry_after))]), None)
        return True

    def _answer_now(self, work: Work, answer: StreamAnswer, reliable: bool) -> None:
        """Work the TU answers without a worker (``answer_at_once``) handled here, not queued
        (callgrind: see ``protocols.sip.answered``); if it waits (a Redis write), it goes on
        from the callback of what it waits on (``signaling.eager``), with no task and no
        transaction, and its UDP retransmissions are absorbed meanwhile (``waiting``).  Its
        sojourn is 0: the kernel's wait has its own gate (``max_receive_delay``)."""
        self.overload.started_at_once()
        try:
            done = run_at_once(self._tu.handle_own(work), partial(self._finished, work))
        except Exception as exc:  # a bug must cost one request, as in a worker
            self._handler_failed(work, exc)
            done = True
        if done:
            if not reliable and answer.data is not None:
                assert answer.key is not None
                self.answered.remember(answer.key, answer.data, self.now())
            return
        self.waiting_count += 1
        if not reliable:
            assert answer.key is not None
            self.waiting[answer.key] = answer

    def _finished(self, work: Work, error: BaseException | None) -> None:
        """Work answered at once that waited has ended: its answer (a 500 if it failed,
        §21.5.1) is kept for its retransmissions until Timer J (§17.2.2), as at once."""
        if error is not None:
            self._handler_failed(work, error)
        self.waiting_count -= 1
        answer = cast(StreamAnswer, work.txn)
        key = answer.key
        if key is not None and self.waiting.get(key) is answer:  # over UDP (see above)
            del self.waiting[key]
            if answer.data is not None:
                self.answered.remember(key, answer.data, self.now())

    def _duplicate(self, data: bytes | None, req: Request, peer: Peer,
                   verdict: Verdict) -> None:
        """A duplicate of a request answered without a transaction: absorbed as its
        transaction would (§17.2.2: nothing while it is worked on, the last answer again
        after), never worked on twice."""
        self.c_retrans.inc("received")
        if req.to.tag is None:
            self.overload.retransmitted(req.method, peer.host, verdict)
        if data is not None:
            self.c_retrans.inc("sent")
            self.send(data, peer)

    def _trying(self, txn: ServerTransaction, req: Request) -> None:
        """The 100 written as bytes the way stateless answers are, not built as a Response
        and serialized: one per INVITE, and nothing reads it but its retransmissions."""
        ts = req.header("Timestamp")  # §8.2.6.1: copied into the 100
        tail = _NO_EXTRA if ts is None else stateless_tail([("Timestamp", ts)])
        self.respond(txn, _TRYING, stateless_answer(req, 100, None, tail))

    # -- workers -----------------------------------------------------------------------------

    def _started(self, work: Work) -> None:
        self.overload.started(time.monotonic() - work.arrived)

    def _handle(self, work: Work) -> Awaitable[None]:
        return self._tu.handle(work)

    def _handler_failed(self, work: Work, exc: BaseException) -> None:
        log.error("handler failed for %s %s: %r", work.request.method, work.request.call_id, exc,
                  exc_info=exc)
        self.c_errors.inc()
        if work.txn.last_response is None or work.txn.last_response.status < 200:
            self.respond(work.txn, make_response(work.request, 500,
                                                 to_tag=self.stateless_tag(work.request)))

    # -- transactions and timers -------------------------------------------------------------

    def run(self, txn: Transaction, events: list[Event]) -> None:
        """Carry out a transaction's events: sends here, the rest to its TU."""
        unsent = False
        for ev in events:
            if isinstance(ev, SendMessage):
                data = ev.data
                msg = ev.message
                if data is None:
                    # A first send; its bytes are known when the TU wrote them (``respond``)
                    # or the proxy measured the request (``start_client_transaction``).
                    if msg is txn.last_response:
                        data = txn.last_response_bytes
                    elif txn.request_bytes is not None and msg is txn.request:
                        data = txn.request_bytes
                    if data is None:
                        # A summary always comes with its bytes (``respond``).
                        assert not isinstance(msg, ResponseSummary)
                        data = serialize(msg)
                        txn.cache_bytes(msg, data)
                else:
                    self.c_retrans.inc("sent")
                peer = txn.peer
                assert isinstance(peer, Peer)
                if isinstance(msg, Request):
                    self.c_req_out.inc(_method[msg.method], peer.transport)
                else:
                    method = msg.method if isinstance(msg, ResponseSummary) else msg.cseq.method
                    self.c_resp_out.inc(_method[method], _CLASS[msg.status // 100],
                                        peer.transport)
                if not self.send(data, peer):
                    unsent = True
                continue
            cb = self._observers.get(txn)
            if cb is not None:
                cb(txn, ev)
            if isinstance(ev, TransactionTerminated):
                self._observers.pop(txn, None)
        if unsent and isinstance(txn, ClientTransaction) and not txn.terminated:
            # §17.1.4: a request that could not be sent (its connection, or the sibling
            # worker holding it, is gone) is a transport error the TU learns of now, not
            # at Timer B or F.  UDP sends never fail here: the kernel takes them or drops.
            self._transport_failed(txn)

    def _transport_failed(self, txn: ClientTransaction) -> None:
        try:
            events = txn.transport_error(self.now())
        except TransactionError:  # a state that no longer sends (the table has no entry)
            return
        self.run(txn, events)

    def arm_timer(self) -> None:
        deadline = self.table.next_deadline()
        if deadline is None or (self._timer_at is not None and self._timer_at <= deadline):
            return
        if self._timer is not None:
            self._timer.cancel()
        loop = self._loop
        assert loop is not None
        self._timer_at = deadline
        self._timer = loop.call_at(deadline, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = None
        try:
            for txn, events in self.table.fire_due(self.now()):
                self.run(txn, events)
        except Exception:
            log.exception("unexpected error firing SIP timers")
            self.c_errors.inc()
        self.arm_timer()

    def start_client_transaction(self, request: Request, peer: Peer, on_event: TxnCallback, *,
                                 proxy: bool = False,
                                 wire: bytes | None = None) -> ClientTransaction | None:
        """Send ``request`` to ``peer`` through a new client transaction (§17.1) whose events
        go to ``on_event``, with the timers of ``peer``'s transport armed at once (Timer A/E
        retransmissions and B/F timeouts happen on a quiet server too).  ``proxy``: an INVITE
        forwarded by a proxy, which also runs Timer C (§16.8).  ``wire``: ``request``'s wire
        form when the caller has it already.  None when the transaction table is full: the
        caller counts it and answers as if the hop had failed."""
        txn = new_client_transaction(request, self.timers_for(peer), peer, proxy=proxy)
        try:
            self.table.add(txn)
        except TransactionTableFull:
            return None
        self._observers[txn] = on_event
        events = txn.start(self.now())
        if wire is not None:
            txn.cache_bytes(request, wire)  # after start: its first send is not a retransmit
        self.run(txn, events)
        self.arm_timer()
        return txn

    def observe(self, txn: ServerTransaction, on_event: TxnCallback) -> None:
        """Send the events of a server transaction the TU handles to ``on_event``."""
        self._observers[txn] = on_event

    def find_cancel_target(self, cancel: Request) -> InviteServerTransaction | None:
        """The INVITE server transaction a CANCEL refers to (§9.2)."""
        return self.table.find_cancel_target(cancel)


#: The 100 to an INVITE as its transaction keeps it (``_trying``), and its empty tail.
_TRYING = response_summary(100, reason_phrase(100), "INVITE")
_NO_EXTRA = stateless_tail(())

#: ``State.TERMINATED`` read once: in Python 3.11 an enum member lookup on its class goes
#: through ``EnumType.__getattr__``, costly on a per-response path.
_TERMINATED = State.TERMINATED
_ADMIT = Verdict.ADMIT
_DROP = Verdict.DROP
_REJECT = Verdict.REJECT
_CLASS = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx", 6: "6xx"}
_method = METHOD_LABELS
