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
Requests that are retransmitted to the shared port (an INVITE before its 100) are not handed
over: the new worker takes them as new.

The same socket carries the messages of ``signaling.siblings`` (a call using another worker's
connection): every frame is a ``siblings.Frame``, "in" (receive as if read from its peer),
"out" (send on our connection for the sibling) or "gone" (the connection an "out" frame was
for closed: what we sent over it fails now).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable

import msgspec

from protocols.sip.message import Request, Response
from protocols.sip.serializer import serialize
from signaling.metrics import Metrics
from signaling.siblings import DECODER, ENCODER, Frame, Siblings, handoff_path
from signaling.sipcore import Peer, SipCore, TransactionUser, Work
from signaling.transports.udp import SLOT_TAG
from signaling.worker import WorkerInfo

__all__ = ["MAX_HANDOFF", "Handoff"]

log = logging.getLogger(__name__)

#: Largest message handed over: a SIP message (64 KiB) and its peer and origin.
MAX_HANDOFF = 65_535 + 1024
#: Receive buffer of the hand-off socket: a burst of relayed messages must not be dropped
#: (a message for a connection is not retransmitted).  The kernel caps it at rmem_max.
_BUFFER = 4 << 20


def _path(info: WorkerInfo, generation: int) -> str:
    assert info.run_dir is not None
    return handoff_path(info.run_dir, info.slot, generation)


class Handoff:
    """A ``TransactionUser`` wrapping the node's own, with the hand-off added (see above)."""

    def __init__(self, tu: TransactionUser, core: SipCore, metrics: Metrics,
                 info: WorkerInfo, siblings: Siblings | None = None) -> None:
        self.tu = tu
        self.core = core
        self.siblings = siblings
        self.path = _path(info, info.generation)
        self.predecessor: str | None = _path(info, info.generation - 1) \
            if info.generation > 1 else None
        self._relayed = False
        self.c_handoff = metrics.fast_counter(
            "handoff", "Messages handed between the old and the new worker of a slot",
            ["direction", "kind"])
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # a crashed worker of this generation cannot exist, but...
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _BUFFER)
        self.sock.bind(self.path)
        self.sock.setblocking(False)
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
        asyncio.get_running_loop().remove_reader(self.sock.fileno())
        self.sock.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)

    # -- the old worker's side -----------------------------------------------------------------

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
            self.c_handoff.inc("received", "message")
            self._relayed = True
            try:
                self.core.receive(frame.data, frame.peer)
            finally:
                self._relayed = False

    # -- the new worker's side -----------------------------------------------------------------

    def _hand_over(self, msg: Request | Response, peer: Peer, kind: str) -> bool:
        if self._relayed or self.predecessor is None:
            return False
        frame = Frame("in", "udp", peer.host, peer.port, SLOT_TAG, "", serialize(msg))
        try:
            self.sock.sendto(ENCODER.encode(frame), self.predecessor)
        except OSError:  # it has exited: nobody to hand over to from now on
            self.predecessor = None
            return False
        self.c_handoff.inc("sent", kind)
        return True

    def handle(self, work: Work) -> Awaitable[None]:
        return self.tu.handle(work)

    def _to_sibling(self, msg: Request | Response, peer: Peer) -> bool:
        """What came over our connection for a sibling's call (``signaling.siblings``)."""
        return not self._relayed and self.siblings is not None \
            and self.siblings.relay_in(msg, peer)

    def on_ack(self, ack: Request, peer: Peer) -> None:
        if not self._to_sibling(ack, peer):
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
        return self._to_sibling(request, peer) or self.tu.answer_statelessly(request, peer)

    def holds(self, request: Request) -> bool:
        return self.tu.holds(request)
