"""Hand-off between the two workers of one slot while a reload replaces one by the other.

A slot's own UDP port (Via, Record-Route, source of requests: ``signaling.transports.udp``)
moves to the new worker as soon as it serves; the old one stops reading it and finishes what it
holds.  What arrives there for the old worker's transactions in those seconds is handed over to
it through a Unix datagram socket named after the slot and generation:

* a response matching no client transaction of the new worker (the answer to a request the old
  one sent: a 180, a 200, the 200 to a BYE it relayed);
* a CANCEL matching none of its INVITEs (the caller cancels a call the old worker is ringing;
  the CANCEL comes on the shared port, which the new worker now reads).

The old worker feeds it to its ``SipCore`` as if read from the slot port, and answers from its
own sockets (it still holds them, it only stopped reading).  A message handed over is never
handed on (no loops); when there is no predecessor, or it has exited, the new worker's own
answer applies (a stray response is counted, a CANCEL gets 481).  Dialogs need no hand-off:
in-dialog requests reach the new worker, which loads the dialog from the shared registry.

The two never read the slot's sockets at once.  A new worker with a live predecessor starts
with its UDP reading paused; the predecessor, told to go (SIGTERM, once the new one is ready),
stops reading, passes on what it holds ("held", below) and says "released", and only then does
the new worker read (or after ``RELEASE_WAIT``, should the predecessor never say it).  While both
read, a callee's 180 read by the new worker (handed over) could reach the caller after the 200
the old worker read itself, and SIPp aborts a call on a 180 after its 200; the datagrams that
arrive in between wait in the kernel's queue for a few milliseconds instead.  Both ways,
frames go through ``signaling.outbox`` (in order, held while the reader's queue is full: a
Unix datagram socket queues only ``net.unix.max_dgram_qlen``, 10 by default): sent back to
back, the "held" frames of a worker under load (~160) filled the successor's queue and the
"released" behind them was refused, so the successor read nothing for ``RELEASE_WAIT`` while
the slot's queue overflowed (bench_reload near capacity: REGISTERs answered 3-7 s late, 6,000
ran out of retransmissions).

A request retransmitted to the shared port (an INVITE before its 100, a MESSAGE or any other
non-INVITE proxied and not yet answered, §17.1.2.2 Timer E) and the ACK of a non-2xx final
response (§17.1.1.3: hop by hop, same branch as its INVITE) belong to a transaction of the old
worker too.  Taken as new by the new worker, a retransmitted request would be forwarded a second
time under another branch (the callee would see two MESSAGEs; §17.2.3 matching exists to
prevent exactly that).  So the old worker, as it stops, passes on the keys of its live server
transactions ("held" frames, ``HELD_PER_FRAME`` keys each); the new worker hands over what
matches one of them, and forgets them when the old worker says it has ended ("ended") or can no
longer be reached.  Only RFC 3261 keys (branch with the magic cookie, sent-by, method) are
passed on: the RFC 2543 fallback keys of §17.2.3 are left to the new worker, as before.  The
keys come before "released" (above), so the new worker knows them by its first read; only when
it stops waiting for a predecessor that never releases (``RELEASE_WAIT``) can a retransmission
still be taken as new.

Within a dialog the same holds for what the old worker set up just before the reload: the old
worker still holds its calls' state (a re-INVITE's target, the CSeqs, the timers), and with
Redis a call it confirmed a millisecond ago reaches the registry a moment later (its write does
not hold the 200 up: ``signaling.dialogshare``), so a BYE sent at once may come first to the new
worker, which would answer 481.  So while the predecessor lives, a request or ACK with a To tag
for a dialog the new worker does not hold is handed over; the old worker serves requests within
a dialog to the end (``SipCore``: only new requests get "shutting down"), and answers 481
itself when it holds the dialog no more than the new worker does.

The same socket carries the messages of ``signaling.siblings`` (a call using another worker's
connection): every frame is a ``siblings.Frame``, "in" (receive as if read from its peer),
"out" (send on our connection for the sibling) or "gone" (the connection an "out" frame was
for closed: what we sent over it fails now); and the reload's own "held" and "ended" (above).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
from collections.abc import Awaitable, Callable

import msgspec

from protocols.sip.message import Request, Response
from protocols.sip.serializer import serialize
from protocols.sip.transaction import ServerTransaction
from protocols.sip.txkeys import MAGIC_COOKIE, TransactionKey, server_key
from signaling.metrics import Metrics
from signaling.outbox import DECODER, ENCODER, Frame, Outbox
from signaling.siblings import Siblings, handoff_path
from signaling.sipcore import Peer, SipCore, TransactionUser, Work
from signaling.worker import WorkerInfo

__all__ = ["CLOSE_WAIT", "HELD_PER_FRAME", "MAX_HANDOFF", "RELEASE_WAIT", "Handoff"]

log = logging.getLogger(__name__)

#: Largest message handed over: a SIP message (64 KiB) and its peer and origin.
MAX_HANDOFF = 65_535 + 1024
#: Receive buffer of the hand-off socket: a burst of relayed messages must not be dropped
#: (a message for a connection is not retransmitted).  The kernel caps it at rmem_max.
_BUFFER = 4 << 20
#: Transaction keys per "held" frame: a key is a branch (tens of bytes), a host, a port and a
#: method, so 400 of them stay far below ``MAX_HANDOFF``.
HELD_PER_FRAME = 400
_HELD = msgspec.msgpack.Decoder(list[tuple[str, str, int | None, str]])
#: Seconds a new worker waits for its predecessor's "released" before it reads the slot's
#: sockets anyway: the supervisor signals the predecessor within milliseconds of our readiness;
#: this only bounds one that never answers (stuck, or killed between our check and its exit).
RELEASE_WAIT = 5.0
#: Seconds an exiting worker waits for its successor to take what still waits for it
#: (``outbox.Outbox.close``): normally nothing by then, sent long before in its drain.
CLOSE_WAIT = 1.0


def _path(info: WorkerInfo, generation: int) -> str:
    assert info.run_dir is not None
    return handoff_path(info.run_dir, info.slot, generation)


class Handoff:
    """A ``TransactionUser`` wrapping the node's own, with the hand-off added (see above)."""

    def __init__(self, tu: TransactionUser, core: SipCore, metrics: Metrics,
                 info: WorkerInfo, siblings: Siblings | None = None) -> None:
        self.tu = tu
        #: The work of a request is the node's own TU's: its method itself, not a method of
        #: ours calling it (one Python call less on every request a worker queues).
        self.handle: Callable[[Work], Awaitable[None]] = tu.handle
        self.handle_own: Callable[[Work], Awaitable[None]] = tu.handle_own
        #: Asked by the core of every new request: nothing of the hand-off's to add, so the
        #: TU's own method (a Python call less on each, ~400 instructions, callgrind).
        self.answers_itself: Callable[[Request], bool] = tu.answers_itself
        self.core = core
        self.siblings = siblings
        self.path = _path(info, info.generation)
        self.predecessor: str | None = _path(info, info.generation - 1) \
            if info.generation > 1 else None
        self._relayed = False
        self.successor = _path(info, info.generation + 1)
        #: The predecessor's live server transactions, by key (see the module docstring).
        self.inherited: set[TransactionKey] = set()
        #: What resumes our reading when the predecessor releases the slot (``take_over``).
        self._resume: Callable[[], None] | None = None
        self._release_timer: asyncio.TimerHandle | None = None
        self.c_handoff = metrics.fast_counter(
            "handoff", "Messages handed between the old and the new worker of a slot",
            ["direction", "kind"])
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # a crashed worker of this generation cannot exist, but...
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _BUFFER)
        with contextlib.suppress(OSError):  # frames wait on the reader's queue in our buffer
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _BUFFER)
        self.sock.bind(self.path)
        self.sock.setblocking(False)
        #: What goes to the successor ("held", "released", "ended") and to the predecessor
        #: (messages handed over), each in order through the reader's short queue
        #: (``signaling.outbox``: sent back to back, "released" was refused behind the
        #: "held" frames, and the successor read nothing for ``RELEASE_WAIT``).
        self._to_next = Outbox(self.sock, self.successor, self.c_handoff)
        self._to_previous = Outbox(self.sock, self.predecessor, self.c_handoff,
                                   self._predecessor_gone) if self.predecessor else None
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._readable)

    @classmethod
    def for_worker(cls, tu: TransactionUser, core: SipCore, metrics: Metrics,
                   info: WorkerInfo | None,
                   siblings: Siblings | None = None) -> TransactionUser:
        """``tu`` wrapped when this process is a supervised worker, else ``tu`` itself."""
        if info is None or info.run_dir is None:
            return tu
        return cls(tu, core, metrics, info, siblings)

    def close(self) -> None:
        if self._release_timer is not None:
            self._release_timer.cancel()
        self._to_successor(Frame("ended", "", "", 0, None, "", b""))
        # The successor reads while this worker exits: what waits for it is sent (it is
        # "held" keys or "released" only if the successor was stuck for ``outbox.STUCK``).
        self._to_next.close(CLOSE_WAIT)
        if self._to_previous is not None:
            self._to_previous.close()
        asyncio.get_running_loop().remove_reader(self.sock.fileno())
        self.sock.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)

    # -- the old worker's side -----------------------------------------------------------------

    def release(self) -> None:
        """This worker has stopped reading the slot's sockets: what it holds, then "released",
        to its successor (which starts reading on it)."""
        self.pass_on()
        self._to_successor(Frame("released", "", "", 0, None, "", b""))

    def pass_on(self) -> None:
        """The keys of this worker's live server transactions to its successor, so the
        retransmissions that now reach the successor come back here.  With them the keys of
        the requests answered without a transaction (``SipCore.answer_at_once``: REGISTERs),
        answered or waiting: their answers are kept here until Timer J (§17.2.2), and a
        retransmitted REGISTER taken as new by the successor would be applied twice and
        refused as out of order (§10.3 step 7: same Call-ID, CSeq not higher)."""
        core = self.core
        keys = [txn.key for txn in core.table if isinstance(txn, ServerTransaction)
                and isinstance(txn.key[0], str) and txn.key[0].startswith(MAGIC_COOKIE)]
        keys.extend(key for key in itertools.chain(core.answered.answers, core.waiting)
                    if isinstance(key[0], str) and key[0].startswith(MAGIC_COOKIE))
        for i in range(0, len(keys), HELD_PER_FRAME):
            data = ENCODER.encode(keys[i:i + HELD_PER_FRAME])
            if not self._to_successor(Frame("held", "", "", 0, None, "", data)):
                return

    def _to_successor(self, frame: Frame) -> bool:
        """Sent, or waiting behind what was sent before it; False when there is no successor
        (a shutdown, not a reload)."""
        if self._to_next.send(frame):
            return True
        self.c_handoff.inc("sent", "lost_" + frame.kind)
        return False

    def _readable(self) -> None:
        for _ in range(64):  # bounded like a UDP read batch
            try:
                raw = self.sock.recv(MAX_HANDOFF)
            except BlockingIOError:
                return
            try:
                frame = DECODER.decode(raw)
            except msgspec.DecodeError:
                self.c_handoff.inc("received", "malformed")
                continue
            if frame.kind == "out" and self.siblings is not None:
                self.siblings.took_out(frame)
                if not self.core.send(frame.data, frame.peer):
                    self.siblings.tell_gone(frame)  # the connection closed under it
                continue
            if frame.kind == "gone":
                self.core.connection_gone(frame.peer)
                continue
            if frame.kind in ("held", "ended"):
                self._inherit(frame)
                continue
            if frame.kind in ("hello", "released"):
                self.c_handoff.inc("received", frame.kind)
                if frame.kind == "released":
                    log.info("predecessor released the slot (%d transactions inherited)",
                             len(self.inherited))
                    self._released()
                continue
            self.c_handoff.inc("received", "message")
            self._relayed = True
            try:
                self.core.receive(frame.data, frame.peer)
            finally:
                self._relayed = False

    # -- the new worker's side -----------------------------------------------------------------

    def take_over(self, pause: Callable[[], None], resume: Callable[[], None]) -> None:
        """A new worker's UDP reading: paused until a live predecessor releases the slot
        (see the module docstring); left alone when there is none."""
        if self.predecessor is None:
            return
        try:  # alive? (a crashed predecessor's path is there, bound by nobody)
            self.sock.sendto(ENCODER.encode(Frame("hello", "", "", 0, None, "", b"")),
                             self.predecessor)
        except BlockingIOError:
            pass  # alive: its queue is full of what we hand it
        except OSError:
            self.predecessor = None
            return
        pause()
        self._resume = resume
        self._release_timer = asyncio.get_running_loop().call_later(RELEASE_WAIT,
                                                                    self._release_late)

    def _release_late(self) -> None:
        self._release_timer = None
        log.warning("predecessor did not release the slot within %.1f s: reading it now",
                    RELEASE_WAIT)
        self._released()

    def _released(self) -> None:
        if self._release_timer is not None:
            self._release_timer.cancel()
            self._release_timer = None
        resume, self._resume = self._resume, None
        if resume is not None:
            resume()

    def _inherit(self, frame: Frame) -> None:
        self.c_handoff.inc("received", frame.kind)
        if frame.kind == "ended":
            self.inherited.clear()
            self.predecessor = None
            return
        try:
            self.inherited.update(_HELD.decode(frame.data))
        except msgspec.DecodeError:
            self.c_handoff.inc("received", "malformed")

    def _predecessors(self, request: Request) -> bool:
        """``request`` is within a dialog the predecessor may still hold and we do not."""
        return (self.predecessor is not None and request.to.tag is not None
                and not self.tu.holds(request))

    def _inherited(self, request: Request, peer: Peer) -> bool:
        """``request`` belongs to a transaction the predecessor still holds.  Over UDP only:
        a connection's requests reach the worker that holds the connection (§17.1.2.2: no
        retransmissions over reliable transports)."""
        return (bool(self.inherited) and peer.transport == "udp"
                and server_key(request) in self.inherited)

    def _hand_over(self, msg: Request | Response, peer: Peer, kind: str) -> bool:
        if self._relayed or self.predecessor is None:
            return False
        # The socket it came on (the slot's own port, or the shared one for a request) is the
        # one the old worker answers from (§18.2.2: a client may match responses by source);
        # a connection's peer is this worker's, reached through ``signaling.siblings``.
        frame = Frame("in", peer.transport, peer.host, peer.port, peer.conn_id, "",
                      serialize(msg))
        # In order behind what waits for it: a full queue is a busy predecessor, not one
        # that has gone (taken as gone, the retransmissions that followed were served as new).
        if self._to_previous is not None and self._to_previous.send(frame, kind):
            return True
        self._forget_predecessor()  # it has exited: nobody to hand over to from now on
        return False

    def _forget_predecessor(self) -> None:
        self.predecessor = None
        self.inherited.clear()

    def _predecessor_gone(self, left: list[Frame]) -> None:
        """The predecessor exited with ``left`` handed to it and not read: they are ours, as
        what arrives from now on is."""
        self._forget_predecessor()
        for frame in left:
            self.c_handoff.inc("received", "returned")
            self.core.receive(frame.data, frame.peer)

    def _to_sibling(self, msg: Request | Response, peer: Peer) -> bool:
        """What came over our connection for a sibling's call (``signaling.siblings``)."""
        return not self._relayed and self.siblings is not None \
            and self.siblings.relay_in(msg, peer)

    def on_ack(self, ack: Request, peer: Peer) -> None:
        if self.predecessor is None and peer.conn_id is None:  # as in answer_statelessly
            self.tu.on_ack(ack, peer)
            return
        if self._to_sibling(ack, peer):
            return
        if (self._inherited(ack, peer) or self._predecessors(ack)) \
                and self._hand_over(ack, peer, "ack"):
            return
        self.tu.on_ack(ack, peer)

    def on_cancel(self, cancel: Request, peer: Peer, now: float) -> bool:
        if self.tu.on_cancel(cancel, peer, now):
            return True
        return self._hand_over(cancel, peer, "cancel")

    def on_stray_response(self, response: Response, peer: Peer) -> None:
        if self._to_sibling(response, peer):
            return
        if not self._hand_over(response, peer, "response"):
            self.tu.on_stray_response(response, peer)

    def answer_statelessly(self, request: Request, peer: Peer) -> bool:
        if self.predecessor is None and peer.conn_id is None:
            # Nobody to hand over to, and not over a connection (a sibling's call comes over
            # one): the checks below all say no.  Every new UDP request of a worker that is
            # not a reload's new one comes this way (~1,500 instructions saved, callgrind).
            return self.tu.answer_statelessly(request, peer)
        if self._to_sibling(request, peer):
            return True
        if self._inherited(request, peer) and self._hand_over(request, peer, "retransmission"):
            return True
        if self._predecessors(request) and self._hand_over(request, peer, "in_dialog"):
            return True
        return self.tu.answer_statelessly(request, peer)

    def holds(self, request: Request) -> bool:
        return self.tu.holds(request)

