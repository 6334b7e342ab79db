"""Connections reachable from every worker of a multi-process server (issue 16).

A WebSocket, TCP or TLS client registers over the connection it holds to one worker; its
binding names that worker (``Binding.node``, ``<server>/w<slot>.<generation>``) and the
connection (``connection_id``, prefixed with the same name).  A call to that client may arrive
at any worker: the kernel spreads UDP sources and connections over them.  Rather than moving
the call to the connection's worker (impossible when the caller holds a connection of its own
to the first worker: a WebSocket-to-WebSocket call), the worker that took the call keeps it
(transaction, dialog, Record-Route, call record: the call exists once) and uses its sibling's
connection as a pipe:

* **out**: what it sends to a peer whose ``conn_id`` belongs to a sibling is handed to that
  sibling (a Unix datagram to its ``signaling.handoff`` socket), which writes it on the
  connection and remembers the message's Call-ID as that worker's;
* **in**: what then arrives on the sibling's connection with a remembered Call-ID (the callee's
  responses, its ACKs, BYE and re-INVITEs) matches no transaction there: it is handed back
  before any transaction is made for it, and the call's worker receives it as if read from the
  connection itself (same ``Peer``, so its answers go out through the sibling again).

The remembered Call-IDs are bounded (``MAX_CALLS``, oldest forgotten first).  A forgotten one
still works in most cases: its in-dialog requests are routed by their Route set (the call's
worker record-routes with its own UDP slot port, ``signaling.transports.udp``) or reach the
dialog through the shared registry (``signaling.dialogshare``).

Cost: one datagram per message relayed, only for calls whose two sides are on different
workers; nothing for anything else (one ``startswith`` per message sent to a connection).
Frames to a sibling go through ``signaling.outbox`` (in order, held while its queue is full:
a Unix datagram socket queues only ``net.unix.max_dgram_qlen`` datagrams, 10 by default, and
over a connection nothing retransmits what a burst beyond that would lose); what cannot be
sent within its bounds is dropped and counted (``signaling_sibling_frames_total``, kind
``lost_*``).  A sibling that is gone (its connection went with it) makes the send fail as a
closed connection does; a sibling whose connection closed answers the frame with a "gone" one, so
the call's worker fails the transaction at once (§17.1.4) instead of at Timer B.
"""

from __future__ import annotations

import contextlib
import re
import socket
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from protocols.sip.message import Request, Response
from protocols.sip.serializer import serialize
from signaling.metrics import Metrics
from signaling.outbox import DECODER, ENCODER, Frame, Outbox
from signaling.transports.base import Peer
from signaling.worker import WorkerInfo

__all__ = ["CLOSE_WAIT", "DECODER", "ENCODER", "MAX_CALLS", "Frame", "Siblings", "handoff_path"]

#: Call-IDs remembered as a sibling's (see the module docstring): far more than the calls in
#: progress between two workers at once; ~200 bytes each.
MAX_CALLS = 100_000
#: The Call-ID header (or its compact form ``i``, RFC 3261 §7.3.3) of a message in bytes:
#: read without a full parse, for the messages a sibling asks this worker to send.
_CALL_ID = re.compile(rb"\r\n(?:call-id|i)[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE)
#: Send buffer of the socket to the siblings: what a sibling's queue holds
#: (``net.unix.max_dgram_qlen`` datagrams) is charged to it until read, up to 64 KiB each.
#: The kernel caps it at wmem_max.
_BUFFER = 4 << 20
#: Seconds an exiting worker waits, for all its siblings together, for them to take what
#: still waits for them (``outbox.Outbox.close``): normally nothing.
CLOSE_WAIT = 1.0


def handoff_path(run_dir: str, slot: int, generation: int) -> str:
    """The hand-off socket of one worker (bound by ``signaling.handoff.Handoff``)."""
    return str(Path(run_dir) / f"{slot}.{generation}.handoff")


class Siblings:
    """This worker's view of the others (see the module docstring)."""

    def __init__(self, info: WorkerInfo, node_id: str, metrics: Metrics) -> None:
        assert info.run_dir is not None
        self.own = info.name
        self.run_dir = info.run_dir
        #: What every worker's node id and connection ids start with: ``<server>/``.
        self.prefix = node_id[:-len(info.name)] if node_id.endswith("/" + info.name) \
            else node_id + "/"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _BUFFER)
        self.sock.setblocking(False)
        #: What goes to each sibling, by name, in order through its short queue (see the
        #: module docstring); forgotten when the sibling is found gone.
        self.outboxes: dict[str, Outbox] = {}
        #: ``SipCore.connection_gone``: an "out" frame still waiting for a sibling that exited
        #: went nowhere, as over a closed connection (§17.1.4).  Set by the server.
        self.connection_gone: Callable[[Peer], None] | None = None
        #: Call-ID -> the sibling whose call it is (what arrives for it is handed back).
        self.calls: OrderedDict[str, str] = OrderedDict()
        self.c_relay = metrics.fast_counter(
            "sibling_relay", "Messages passed between workers for a connection one of them "
            "holds, by direction and outcome", ["direction", "outcome"])
        self.c_frames = metrics.fast_counter(
            "sibling_frames", "Frames to sibling workers, by kind: sent once the sibling's "
            "queue took them, lost_<kind> when dropped (more than outbox.MOST octets waiting, "
            "a sibling that took nothing for outbox.STUCK s, or one that exited)",
            ["direction", "kind"])

    @classmethod
    def for_worker(cls, info: WorkerInfo | None, node_id: str,
                   metrics: Metrics) -> Siblings | None:
        """None for a single-process server (nothing to reach)."""
        if info is None or info.run_dir is None:
            return None
        return cls(info, node_id, metrics)

    def close(self) -> None:
        """What still waits for a sibling is sent within ``CLOSE_WAIT`` s in all (blocking,
        as the worker exits), or dropped and counted."""
        deadline = time.monotonic() + CLOSE_WAIT
        for box in list(self.outboxes.values()):
            box.close(max(0.0, deadline - time.monotonic()))
        self.outboxes.clear()
        self.sock.close()

    # -- who holds what ------------------------------------------------------------------------

    def holder(self, ident: str | None) -> str | None:
        """The sibling (``w<slot>.<generation>``) a node or connection id names; None when it
        is this worker's, or not a worker of this server."""
        if ident is None or not ident.startswith(self.prefix):
            return None
        name = ident[len(self.prefix):].split("/", 1)[0]
        return None if name == self.own or not _is_worker_name(name) else name

    def reaches(self, node: str) -> bool:
        """A binding held by ``node`` can be reached from here (``signaling.hops``)."""
        return self.holder(node) is not None

    def send(self, name: str, frame: Frame) -> bool:
        """Sent, or waiting behind what was sent before it while the sibling's queue is full
        (``net.unix.max_dgram_qlen``, 10 datagrams by default: taken for a gone sibling, a
        burst of relayed messages beyond it was lost, and over a connection nothing
        retransmits them, §17.1.1.2); False when the sibling is gone (its connections with
        it)."""
        box = self.outboxes.get(name)
        if box is None:
            slot, _, generation = name[1:].partition(".")
            path = handoff_path(self.run_dir, int(slot), int(generation))
            box = self.outboxes[name] = Outbox(
                self.sock, path, self.c_frames, lambda left: self._gone(name, left))
        if box.send(frame):
            return True
        del self.outboxes[name]
        return False

    def _gone(self, name: str, left: list[Frame]) -> None:
        """``name`` exited with ``left`` waiting for it: lost, counted; the transactions whose
        "out" frames these were fail now, as over a closed connection (§17.1.4)."""
        box = self.outboxes.get(name)
        if box is not None and box.gone:
            del self.outboxes[name]
        for frame in left:
            self.c_frames.inc("sent", "lost_" + frame.kind)
            if frame.kind == "out" and self.connection_gone is not None:
                self.connection_gone(frame.peer)

    # -- out: this worker's messages over a sibling's connection -------------------------------

    def relay_out(self, data: bytes, peer: Peer) -> bool | None:
        """``SipCore``'s hook for every send: None when ``peer`` is not a sibling's connection
        (the caller sends it itself), else whether the sibling took it."""
        name = self.holder(peer.conn_id)
        if name is None:
            return None
        ok = self.send(name, Frame("out", peer.transport, peer.host, peer.port, peer.conn_id,
                                   self.own, data))
        self.c_relay.inc("out", "sent" if ok else "sibling_gone")
        return ok

    def tell_gone(self, frame: Frame) -> None:
        """The connection a sibling's "out" frame was for is gone: tell it, so what it sent
        fails now (``SipCore.connection_gone``, §17.1.4) rather than at Timer B or F."""
        ok = self.send(frame.origin, Frame("gone", frame.transport, frame.host, frame.port,
                                           frame.conn_id, self.own, b""))
        self.c_relay.inc("gone", "sent" if ok else "sibling_gone")

    def took_out(self, frame: Frame) -> None:
        """A sibling's message is about to go out on our connection: what comes back on it
        for this Call-ID is the sibling's."""
        found = _CALL_ID.search(frame.data)
        if found is None:
            return
        call_id = found.group(1).strip().decode("utf-8", "surrogateescape")
        calls = self.calls
        if call_id in calls:
            calls.move_to_end(call_id)
        calls[call_id] = frame.origin
        if len(calls) > MAX_CALLS:
            calls.popitem(last=False)

    # -- in: what arrives on our connection for a sibling's call -------------------------------

    def relay_in(self, msg: Request | Response, peer: Peer) -> bool:
        """Hand ``msg`` to the sibling whose call it belongs to; False when it is not one (it
        did not come over a connection, or its Call-ID is nobody else's)."""
        if peer.conn_id is None or not self.calls:
            return False
        name = self.calls.get(msg.call_id)
        if name is None:
            return False
        ok = self.send(name, Frame("in", peer.transport, peer.host, peer.port, peer.conn_id,
                                   self.own, serialize(msg)))
        if not ok:  # the call's worker is gone: its calls are recovered from the registry
            with contextlib.suppress(KeyError):
                del self.calls[msg.call_id]
        self.c_relay.inc("in", "sent" if ok else "sibling_gone")
        return ok


def _is_worker_name(name: str) -> bool:
    slot, dot, generation = name[1:].partition(".")
    return name[:1] == "w" and dot == "." and slot.isdigit() and generation.isdigit()
