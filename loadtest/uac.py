"""The injector's UAC side: its UAs send the trace's requests and handle the answers.

* UAs send from a pool of UDP sockets (a UA always from the same one, as a real UA keeps its
  port) so per-source limits and SO_REUSEPORT hashing on the server see many sources; over
  WebSocket UAs are spread over the connections by a hash of their user.
* Responses are matched by slicing the fixed-length branch (``sipmsg.scan_response``); only INVITE
  dialogs and failures are parsed with ``protocols.sip``.  Requests go to the UAS side.
* REGISTER: RFC 3261 §10.2, one at a time per UA (a later one waits, an older waiting one is
  superseded).  INVITE: ACK of a non-2xx on its branch (§17.1.1.3); a 2xx creates the call's
  dialog in the project's one model (``protocols.sip.dialog.Dialog.as_uac_of``: route set from
  Record-Route reversed, remote target from Contact, §12.1.2), whose ``request_target()`` gives
  the ACK (§13.2.2.4) and the BYE after the holding time (§15.1.1) their Request-URI and Route.
  Sending the ACK moves the dialog to CONFIRMED, sending the BYE to TERMINATED, through the
  model's table: only a CONFIRMED dialog is hung up, so never twice.
* 503 with Retry-After: the UA waits that long and sends again (§21.5.4); a REGISTER that failed
  without one backs off as RFC 5626 §4.5 says.  Retries are bounded by MAX_ATTEMPTS.
* 401/407 with passwords given (``loadtest.auth``): REGISTER and INVITE go again with
  credentials as a new transaction that keeps the first one's start, so the latency is the
  whole exchange's; an answered challenge is counted apart, not as a final answer.
* Every final answer is counted per kind, by class and by exact code; 4xx/5xx/6xx and timeouts
  count as errors unless their code is in ``expected``.
"""

from __future__ import annotations

import random
import re
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from loadtest.agents import DEFAULT_EXPIRES, UA, Caller, Txn
from loadtest.auth import CHALLENGES, Passwords, answer, with_header
from loadtest.clienttxn import TxnInput, TxnState, step
from loadtest.links import Link, UdpLink, WsLink
from loadtest.metrics import KindStats
from loadtest.sipmsg import (
    BranchFactory,
    Identity,
    render_ack,
    render_in_dialog,
    render_invite,
    retry_after,
    scan_response,
)
from loadtest.synth import backoff_wait
from loadtest.timeline import SECOND_SAMPLE, Timeline
from loadtest.timers import TxnTimers
from loadtest.trace import Call, Event, Options, Register
from protocols.sip.dialog import DialogId, DialogState
from protocols.sip.errors import RemoteProtocolError
from protocols.sip.message import Response
from protocols.sip.parser import parse_message

__all__ = ["MAX_ATTEMPTS", "CallStats", "Uac", "UacConfig"]

#: First attempt + retries after 503/Retry-After or back-off: a UA that keeps failing four times
#: has shown what there is to show, and the bound keeps a dead server from growing our state.
MAX_ATTEMPTS = 4
#: Resolution of --ws-share: UAs are split by a hash of their user in 1/10000 steps.
WS_SHARE_STEPS = 10_000
#: Values collected by the hot path before they go into the HDR histograms; flushed every
#: FLUSH_S by the engine anyway.  Bounds both memory and the length of one flush.
MAX_SECOND_SAMPLES = 100_000
#: Branches of transactions that timed out, remembered (two generations of this many) so a
#: final answer coming after Timer B/F is counted as late rather than as a stray.
TIMED_OUT_MEMORY = 100_000

_FINAL = TxnInput.FINAL
_CSEQ = re.compile(rb"\r\nCSeq: \d+ ")
_CONFIRMED = DialogState.CONFIRMED
_CLASSES = [f"{i}xx" for i in range(10)]


@dataclass(slots=True)
class CallStats:
    attempted: int = 0
    established: int = 0
    failed: int = 0
    completed: int = 0  # BYE answered
    abandoned: int = 0  # still up or setting up when the run ended


@dataclass(slots=True)
class UacConfig:
    deadline: float  # an answer within this many seconds counts as goodput
    ws_share: float
    backoff: bool
    backoff_base: float
    backoff_max: float
    expected: frozenset[int]  # final codes the scenario expects: not errors
    passwords: Passwords | None = None  # answer 401/407 with these (loadtest.auth)


class Uac:
    """The UAs, their client transactions and their calls."""

    def __init__(self, cfg: UacConfig, stats: Callable[[str], KindStats], timeline: Timeline,
                 on_request: Callable[[bytes, Any, Link], None], t1: float, t2: float,
                 guard_s: float, seed: int) -> None:
        self.cfg = cfg
        self.stats = stats
        self.tl = timeline
        self.on_request = on_request
        self.rng = random.Random(seed)
        self.branch = BranchFactory()
        self.txns: dict[bytes, Txn] = {}
        self.dialogs: dict[str, Caller] = {}  # calls set up or up, by Call-ID
        self.timers = TxnTimers(t1, t2, guard_s, self.txns, timeline, self._on_timeout)
        self.calls = CallStats()
        self.up = 0  # calls established and not over
        self.uas: dict[tuple[str, str], UA] = {}
        self.users_by_name: dict[str, UA] = {}
        self.udp: list[UdpLink] = []
        self.ws: list[WsLink] = []
        self.local_ip = "127.0.0.1"
        self.start = 0.0
        self.no_retries = False  # the run is over (--duration): retries are abandoned
        self.stray = 0
        #: Branch -> stats of transactions whose Timer B/F fired (``late_finals``).
        self._timed_out: dict[bytes, KindStats] = {}
        self._timed_out_old: dict[bytes, KindStats] = {}
        self.skipped: dict[str, int] = {}
        #: The longest Retry-After of a 503 to a set-up REGISTER (``Engine._preregister``).
        self.setup_wait = 0.0

    # ---------------------------------------------------------------- UAs

    def ua(self, user: str, domain: str, transport: str | None) -> UA | None:
        key = (user, domain)
        ua = self.uas.get(key)
        if ua is not None:
            return ua
        h = zlib.crc32(user.encode())
        use_ws = transport == "ws" or (
            transport is None
            and self.ws
            and (not self.udp or (h % WS_SHARE_STEPS) < self.cfg.ws_share * WS_SHARE_STEPS)
        )
        ub, db = user.encode(), domain.encode()
        if use_ws:
            if not self.ws:
                return None
            ws = self.ws[h % len(self.ws)]
            contact = b"sip:" + ub + b"@" + ws.host + b";transport=ws"
            ua = UA(Identity(ub, db, b"WS", ws.host, contact), ws, True)
        else:
            if not self.udp:
                return None
            link = self.udp[h % len(self.udp)]
            hp = b"%s:%d" % (self.local_ip.encode(), link.local[1])
            ua = UA(Identity(ub, db, b"UDP", hp, b"sip:" + ub + b"@" + hp), link, False)
        self.uas[key] = ua
        self.users_by_name.setdefault(user, ua)
        return ua

    # ---------------------------------------------------------------- sending

    def start_event(self, ev: Register | Options | Call, attempt: int, second: int,
                    now: float) -> None:
        ua = self.ua(ev.user, ev.domain, ev.transport)
        if ua is None:
            self.skipped["no-transport"] = self.skipped.get("no-transport", 0) + 1
            return
        lose = ev.lose_first and attempt == 1
        if isinstance(ev, Register):
            self.send_register(ua, self.stats("register"), ev.expires, ev, attempt, lose,
                               second, now)
        elif isinstance(ev, Options):
            self._send_options(ua, ev, attempt, lose, second, now)
        else:
            self._send_invite(ua, ev, attempt, lose, second, now)

    def _start_txn(self, ua: UA, stats: KindStats, branch: bytes, data: bytes, now: float,
                   second: int, event: Event | None, attempt: int, invite: bool,
                   lose: bool, offered: bool = True) -> Txn:
        txn = Txn(ua, stats, branch, data, now, second, event, attempt, invite)
        self.txns[branch] = txn
        stats.sent += 1
        if offered:
            stats.offered.add(second)
        self.tl.cur.sent += 1
        if lose:
            stats.lost_simulated += 1
        else:
            ua.link.send(data)
        self.timers.start(txn, now)
        return txn

    def send_register(self, ua: UA, stats: KindStats, expires: int, ev: Register | None,
                      attempt: int, lose: bool, second: int, now: float) -> None:
        if ua.reg_txn is not None:
            if ua.reg_next is not None:
                ua.reg_next[0].superseded += 1
            ua.reg_next = (stats, expires, ev, attempt, lose, second)
            stats.queued += 1
            return
        ua.reg_cseq += 1
        br = self.branch()
        a, b, c = ua.tpl.register_parts
        if expires != DEFAULT_EXPIRES:
            c = c.replace(b"Expires: %d\r\n" % DEFAULT_EXPIRES, b"Expires: %d\r\n" % expires)
        ua.reg_txn = self._start_txn(ua, stats, br, a + br + b + b"%d" % ua.reg_cseq + c, now,
                                     second, ev, attempt, False, lose)

    def _register_done(self, ua: UA, now: float) -> None:
        """The UA's REGISTER is answered or timed out: send the one that waited, if any."""
        ua.reg_txn = None
        nxt, ua.reg_next = ua.reg_next, None
        if nxt is not None:
            stats, expires, ev, attempt, lose, second = nxt
            self.send_register(ua, stats, expires, ev, attempt, lose, second, now)

    def _send_options(self, ua: UA, ev: Options, attempt: int, lose: bool, second: int,
                      now: float) -> None:
        br = self.branch()
        data = ua.tpl.options_request(br, br[-12:] + b"@storm")
        if ev.target is not None:
            data = data.replace(b"OPTIONS sip:" + ua.ident.domain,
                                b"OPTIONS sip:" + ev.target.encode() + b"@" + ua.ident.domain, 1)
        self._start_txn(ua, self.stats("options"), br, data, now, second, ev, attempt, False,
                        lose)

    def _send_invite(self, ua: UA, ev: Call, attempt: int, lose: bool, second: int,
                     now: float) -> None:
        uri = b"sip:%s@%s" % (ev.callee.encode(), (ev.callee_domain or ev.domain).encode())
        c = Caller(ua, ev, uri, b"<" + uri + b">")
        br = self.branch()
        data = render_invite(ua.ident, br, uri, c.to, c.call_id, c.from_tag)
        self.dialogs[c.call_id.decode()] = c
        if attempt == 1:
            self.calls.attempted += 1
            self.tl.cur.calls_started += 1
        txn = self._start_txn(ua, self.stats("invite"), br, data, now, second, ev, attempt,
                              True, lose)
        txn.caller = c

    def send_bye(self, c: Caller, now: float) -> None:
        """Hang up (§15.1.1) a CONFIRMED dialog; the BYE moves it to TERMINATED (§15), so a
        second call (the holding time and the end of the run) finds nothing to do."""
        d = c.dialog
        if d is None or d.state is not _CONFIRMED or c.call_id.decode() not in self.dialogs:
            return
        br = self.branch()
        data = render_in_dialog(b"BYE", c.parts, br, d.next_local_cseq())
        d.on_bye()
        sec = int(now - self.start)
        txn = self._start_txn(c.ua, self.stats("bye"), br, data, now, sec, None, 1, False, False)
        txn.caller = c

    def hang_up_all(self, now: float) -> None:
        """The run is over: every caller hangs up now (§15.1.1)."""
        for c in list(self.dialogs.values()):
            self.send_bye(c, now)

    # ---------------------------------------------------------------- receiving

    def on_message(self, data: bytes, addr: Any, link: Link) -> None:
        """Every datagram or WebSocket message; the hot path for responses is inlined."""
        r = scan_response(data)
        if r is None:
            if data[:8] == b"SIP/2.0 ":
                self.stray += 1
            else:
                self.on_request(data, addr, link)
            return
        status, br = r
        txn = self.txns.get(br)
        if txn is None:
            if status >= 200 and self._late_final(br):
                return
            self._on_stray(status, data)
            return
        now = time.monotonic()
        stats = txn.stats
        tl = self.tl
        cur = tl.cur
        if status < 200:
            was = txn.state
            _, txn.state = step(txn.invite, was, TxnInput.PROVISIONAL)
            stats.provisional += 1
            cur.by_class["1xx"] = cur.by_class.get("1xx", 0) + 1
            if txn.invite and was is TxnState.CALLING:
                self.timers.proceeding(br, now)
            return
        _, txn.state = step(txn.invite, txn.state, _FINAL)
        del self.txns[br]
        if status in CHALLENGES and self.cfg.passwords is not None \
                and self._challenged(txn, data, now):
            stats.challenges_answered += 1
            txn.data = b""
            return
        if txn.ua.reg_txn is txn:
            self._register_done(txn.ua, now)
            if status < 300:
                txn.ua.bound = True
        lat = now - txn.t0
        lat_us = int(lat * 1e6)
        key = _CLASSES[status // 100]
        answered = stats.answered
        answered[key] = answered.get(key, 0) + 1
        cur.answered += 1
        cur.by_class[key] = cur.by_class.get(key, 0) + 1
        stats.pending.append(lat_us)
        if status < 300:
            stats.pending_ok.append(lat_us)
        sample = tl.sample
        if len(sample) < SECOND_SAMPLE:
            sample.append(lat_us)
        else:  # reservoir sampling (Algorithm R): every answer equally likely to be kept
            j = int(tl.rng.random() * cur.answered)
            if j < SECOND_SAMPLE:
                sample[j] = lat_us
        if len(stats.pending) >= MAX_SECOND_SAMPLES:
            stats.flush()
        if status < 300 and txn.ua.failures:
            txn.ua.failures = 0  # RFC 5626 §4.5: the back-off restarts after a success
        if status < 300 and lat <= self.cfg.deadline:
            cur.good += 1
            stats.goodput.add(txn.second)
        elif status >= 400 and status not in self.cfg.expected:
            cur.errors += 1
        if status == 503:
            stats.status_503 += 1
        codes = stats.codes
        codes[status] = codes.get(status, 0) + 1
        if status >= 300:
            stats.failures[status] = stats.failures.get(status, 0) + 1
        c = txn.caller
        if c is not None and not txn.invite:
            # BYE answered: the call is over whatever the status (§15.1.1); nothing to parse.
            if self.dialogs.pop(c.call_id.decode(), None) is not None:
                self.calls.completed += 1
                self._down(c)
        elif txn.invite or status >= 300:
            self._on_final_slow(txn, status, data, now)
        txn.data = b""

    def _on_final_slow(self, txn: Txn, status: int, data: bytes, now: float) -> None:
        try:
            msg = parse_message(data)
        except RemoteProtocolError:
            self.stray += 1
            return
        if not isinstance(msg, Response):
            return
        c = txn.caller
        if txn.invite and c is not None:
            if status < 300:
                self._established(c, msg)
                return
            # §17.1.1.3: ACK a non-2xx on the INVITE's branch, with the response's To.
            ack = render_ack(c.ua.ident, txn.branch, c.ruri, str(msg.to).encode(), c.call_id,
                             c.from_tag, c.cseq)
            c.ua.link.send(ack)
        if status >= 300 and not self._retry(txn, msg) and c is not None:
            self._call_failed(c)

    def _established(self, c: Caller, msg: Response) -> None:
        """The 2xx creates the dialog (§12.1.2) in WAIT_ACK; our ACK confirms it (§13.2.2.4)."""
        d = c.establish(msg)
        c.ack = render_in_dialog(b"ACK", c.parts, self.branch(), c.cseq)
        c.ua.link.send(c.ack)
        d.on_ack()
        self.calls.established += 1
        c.up = True
        self.up += 1
        self.timers.later(c.hold, lambda cc: self.send_bye(cc, time.monotonic()), c,
                          self.stats("bye"))

    def _challenged(self, txn: Txn, data: bytes, now: float) -> bool:
        """A 401/407 to a REGISTER or INVITE answered (``loadtest.auth``): the request goes
        again, CSeq one higher and a new branch (§8.1.3.5), with credentials; True if so."""
        ua = txn.ua
        passwords = self.cfg.passwords
        register = ua.reg_txn is txn
        if passwords is None or not (register or (txn.invite and txn.caller is not None)):
            return False
        password = passwords.of(ua.ident.user.decode())
        try:
            msg = parse_message(data)
        except RemoteProtocolError:
            return False
        if password is None or not isinstance(msg, Response):
            return False
        method, uri = txn.plain.split(b" ", 2)[:2]
        line = answer(msg, method.decode(), uri.decode(), ua.ident.user.decode(), password,
                      txn.rounds > 0, txn.rounds)
        if line is None:
            return False
        c = txn.caller
        if c is not None:
            # §17.1.1.3: the challenge is a non-2xx final answer: ACKed on its branch.
            ua.link.send(render_ack(ua.ident, txn.branch, c.ruri, str(msg.to).encode(),
                                    c.call_id, c.from_tag, c.cseq))
            c.cseq += 1
            cseq = c.cseq
        else:
            ua.reg_cseq += 1  # §10.2: every REGISTER of the UA one higher
            cseq = ua.reg_cseq
        br = self.branch()
        plain = _CSEQ.sub(b"\r\nCSeq: %d " % cseq, txn.plain.replace(txn.branch, br, 1), 1)
        new = self._start_txn(ua, txn.stats, br, with_header(plain, line), now, txn.second,
                              txn.event, txn.attempt, txn.invite, False, offered=False)
        new.t0, new.plain, new.rounds, new.caller = txn.t0, plain, txn.rounds + 1, c
        if register:
            ua.reg_txn = new
        return True

    def _down(self, c: Caller) -> None:
        if c.up:
            c.up = False
            self.up -= 1

    def _call_failed(self, c: Caller) -> None:
        self.dialogs.pop(c.call_id.decode(), None)
        self._down(c)
        self.calls.failed += 1

    def _retry(self, txn: Txn, msg: Response) -> bool:
        """503 + Retry-After (§21.5.4) or REGISTER back-off (RFC 5626 §4.5); True if retried."""
        if txn.event is None:
            # Set-up (the callees' pre-registration): the engine sends again whoever is not
            # bound, once the longest Retry-After it was given is over.
            ra = retry_after(msg.headers("Retry-After")) if msg.status == 503 else None
            self.setup_wait = max(self.setup_wait, ra or 0.0)
            return False
        if txn.attempt >= MAX_ATTEMPTS:
            return False
        if msg.status == 503:
            ra = retry_after(msg.headers("Retry-After"))
            if ra is not None:
                if txn.caller is not None:
                    self.dialogs.pop(txn.caller.call_id.decode(), None)
                self.timers.later(ra, self._resend, (txn, True), txn.stats)
                return True
        if isinstance(txn.event, Register) and msg.status >= 500:
            return self._backoff(txn)
        return False

    def _backoff(self, txn: Txn) -> bool:
        if not self.cfg.backoff or txn.attempt >= MAX_ATTEMPTS:
            return False
        txn.ua.failures += 1
        wait = backoff_wait(self.rng, txn.ua.failures, self.cfg.backoff_base,
                            self.cfg.backoff_max)
        self.timers.later(wait, self._resend, (txn, False), txn.stats)
        return True

    def _resend(self, arg: tuple[Txn, bool]) -> None:
        txn, honoured = arg
        if self.no_retries:
            txn.stats.abandoned += 1
            return
        if honoured:
            txn.stats.retry_after_honoured += 1
        else:
            txn.stats.backoff_retries += 1
        now = time.monotonic()
        ev = txn.event
        assert isinstance(ev, Register | Options | Call)
        self.start_event(ev, txn.attempt + 1, int(now - self.start), now)

    def _on_stray(self, status: int, data: bytes) -> None:
        """A response with no live transaction: a retransmitted 2xx to our INVITE gets its ACK
        again while the dialog is CONFIRMED (§13.2.2.4; the model's table absorbs the 2xx);
        everything else is counted and dropped."""
        self.stray += 1
        if status < 200 or status >= 300 or b"INVITE" not in data:
            return
        try:
            msg = parse_message(data)
        except RemoteProtocolError:
            return
        c = self.dialogs.get(msg.call_id)
        d = None if c is None else c.dialog
        if (c is None or d is None or d.state is not _CONFIRMED or msg.cseq.method != "INVITE"
                or not isinstance(msg, Response) or DialogId.of_incoming_response(msg) != d.id):
            return  # another fork's 2xx (a different To tag) is not this dialog's
        d.on_response(msg)
        c.ua.link.send(c.ack)

    def _late_final(self, branch: bytes) -> bool:
        """A final answer to a transaction that timed out: counted once per transaction."""
        stats = self._timed_out.pop(branch, None) or self._timed_out_old.pop(branch, None)
        if stats is None:
            return False
        stats.late_finals += 1
        return True

    def _on_timeout(self, txn: Txn, now: float) -> None:
        self.txns.pop(txn.branch, None)
        if len(self._timed_out) >= TIMED_OUT_MEMORY:
            self._timed_out_old, self._timed_out = self._timed_out, {}
        self._timed_out[txn.branch] = txn.stats
        if txn.ua.reg_txn is txn:
            self._register_done(txn.ua, now)
        txn.stats.timeouts += 1
        self.tl.cur.errors += 1
        self.tl.cur.timeouts += 1
        txn.data = b""
        if txn.caller is not None:
            self._call_failed(txn.caller)
        elif isinstance(txn.event, Register):
            self._backoff(txn)

    # ---------------------------------------------------------------- end of run

    def abandon_rest(self) -> None:
        for txn in self.txns.values():
            txn.stats.abandoned += 1
        for _, _, _, _, stats in self.timers.actions:
            if stats is not None:
                stats.abandoned += 1
        self.calls.abandoned += len(self.dialogs)
        for ua in self.uas.values():
            if ua.reg_next is not None:
                ua.reg_next[0].abandoned += 1

    def send_errors(self) -> int:
        return sum(link.errors for link in self.udp) + sum(link.errors for link in self.ws)
