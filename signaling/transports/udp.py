"""SIP over UDP (RFC 3261 §18): one message per datagram, read straight off the socket.

Why not the event loop's datagram endpoint: overload control needs to know how long a datagram
waited in the kernel.  When the server is short of CPU the socket's receive buffer becomes the
real queue (megabytes, hundreds of milliseconds); the bounded worker queues never fill and no
503 would ever be sent while every client times out and retransmits.  The kernel stamps each
datagram on arrival (SO_TIMESTAMPNS); a new request that waited longer than
``max_receive_delay`` is answered 503 + Retry-After at once (RFC 3261 §21.5.4), which costs a
parse instead of a full transaction, so goodput holds up past capacity instead of collapsing.

The socket buffers are sized at start: a burst of retransmissions or a registration storm
arrives faster than one loop iteration drains it, and the kernel default (~200 KB) drops
datagrams before any counter can see them.  The size actually granted (capped by
net.core.rmem_max) is logged, because the operator must raise the sysctl if it is short.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import time
from typing import Any

from signaling.config import HostPort
from signaling.sipcore import SipCore
from signaling.transports.base import Peer, TransportInfo
from signaling.worker import inherited_socket

__all__ = ["PEER_CACHE", "READ_BATCH", "SLOT_TAG", "UdpTransport", "start_udp"]

log = logging.getLogger(__name__)

#: Datagrams read per readiness callback.  Bounds the time one wakeup holds the loop (64 x
#: ~70 µs = ~5 ms), so timers and workers run between batches even under a flood.
READ_BATCH = 64
#: Largest datagram: 65,535 octets minus the UDP/IP headers fit in this.
_MAX_DATAGRAM = 65_535
#: Peers remembered by source address.  Phones and keepalive clients send from the same
#: address again and again; reusing the (immutable) Peer saves building one per datagram.
#: Cleared when full, so a flood from many addresses costs a rebuild, never unbounded memory.
PEER_CACHE = 4096
#: ``Peer.conn_id`` of a request that came in on a worker's slot socket, so that its
#: responses leave from that socket (see ``UdpTransport``).
SLOT_TAG = "slot"
_SOL_SOCKET = socket.SOL_SOCKET
_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_CMSG_SPACE = socket.CMSG_SPACE(16)
_TIMESPEC = struct.Struct("@qq")


class UdpTransport:
    """Reads datagrams with their kernel arrival time and feeds ``SipCore.receive``.

    A worker of a multi-process server (``signaling.supervisor``) has a second socket beside
    the shared listening one: ``slot_sock``, its slot's own port, kept by the supervisor across
    the slot's workers.  It is the port of our Via and Record-Route and the source of every
    request the worker sends, so the responses to its requests (RFC 3581 §4: to the source port)
    and the in-dialog requests of its dialogs come to this worker, not to whichever worker the
    kernel's hash picks; a worker that takes the slot over (restart, reload) gets them, and
    loads the dialog from the shared registry (``signaling.handoff`` passes the responses of
    its predecessor's last transactions on).  A response leaves from the socket its request
    came in on (RFC 3581 §4: NATs let only that through), which a request that came in on
    ``slot_sock`` marks in its ``Peer``.
    """

    def __init__(self, core: SipCore, sock: socket.socket, advertise: str, *,
                 slot_sock: socket.socket | None = None) -> None:
        self.core = core
        self.sock = sock
        self.slot_sock = slot_sock
        self._loop = asyncio.get_running_loop()
        #: Bound of each socket's peer cache (``PEER_CACHE``; a test lowers it).
        self.peer_cache = PEER_CACHE
        sockname = sock.getsockname()
        self.address: tuple[str, int] = (str(sockname[0]), int(sockname[1]))
        own = slot_sock.getsockname()[1] if slot_sock is not None else None
        self.info = TransportInfo("udp", reliable=False, via_token="UDP", host=advertise,
                                  port=self.address[1], uri_transport=None, via_port=own,
                                  record_route_port=own)
        #: (socket, Peer.conn_id of what it receives, its peer cache)
        self._readers: list[tuple[socket.socket, str | None, dict[tuple[Any, ...], Peer]]] = [
            (sock, None, {})]
        if slot_sock is not None:
            self._readers.append((slot_sock, SLOT_TAG, {}))
        self._reading: set[int] = set()

    def resume_reading(self) -> None:
        for sock, tag, peers in self._readers:
            if sock.fileno() not in self._reading:
                self._loop.add_reader(sock.fileno(), self._readable, sock, tag, peers)
                self._reading.add(sock.fileno())

    def pause_reading(self) -> None:
        for sock, _, _ in self._readers:
            if sock.fileno() in self._reading:
                self._loop.remove_reader(sock.fileno())
                self._reading.discard(sock.fileno())

    def send(self, data: bytes, peer: Peer) -> bool:
        sock = self.sock
        # A worker: requests, and responses to what came in on the slot's port, use that port
        # (see the class docstring).
        if self.slot_sock is not None and (peer.conn_id == SLOT_TAG
                                           or data[:8] != b"SIP/2.0 "):
            sock = self.slot_sock
        try:
            sock.sendto(data, (peer.host, peer.port))
        except BlockingIOError:
            # The send buffer is full: UDP may lose it anyway, the peer retransmits (§17).
            self.core.c_drop.inc("udp_send_buffer_full")
        except OSError:
            self.core.c_drop.inc("udp_send_error")
        return True  # handed to the kernel or lost as UDP may lose it: counted above

    def _readable(self, sock: socket.socket, tag: str | None,
                  peers: dict[tuple[Any, ...], Peer]) -> None:
        recvmsg = sock.recvmsg
        receive = self.core.receive
        for _ in range(READ_BATCH):
            try:
                data, ancillary, _flags, addr = recvmsg(_MAX_DATAGRAM, _CMSG_SPACE)
            except BlockingIOError:
                return
            except OSError:
                # ICMP errors and the like: the datagram is lost, the socket lives on.
                self.core.c_drop.inc("udp_error")
                continue
            waited = 0.0
            for level, kind, value in ancillary:
                if level == _SOL_SOCKET and kind == _SO_TIMESTAMPNS:
                    sec, nsec = _TIMESPEC.unpack_from(value)
                    waited = time.time() - (sec + nsec * 1e-9)
            peer = peers.get(addr)
            if peer is None:
                peer = self._new_peer(peers, addr, tag)
            receive(data, peer, waited)

    def _new_peer(self, peers: dict[tuple[Any, ...], Peer], addr: tuple[Any, ...],
                  tag: str | None) -> Peer:
        # addr: (host, port), or (host, port, flowinfo, scope_id) for IPv6.
        if len(peers) >= self.peer_cache:
            peers.clear()
        peer = peers[addr] = Peer("udp", addr[0], addr[1], tag)
        return peer

    def close(self) -> None:
        self.pause_reading()
        self.core.transports.remove(self.info.name)
        for sock, _, _ in self._readers:
            sock.close()


def _size_buffers(sock: socket.socket, size: int) -> tuple[int, int]:
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        with contextlib.suppress(OSError):  # the kernel caps it at rmem_max/wmem_max anyway
            sock.setsockopt(socket.SOL_SOCKET, opt, size)
    return (sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF))


async def start_udp(core: SipCore, listen: HostPort, buffer_size: int,
                    advertise: str) -> UdpTransport:
    host, port = listen
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # A supervised worker reads its supervisor's socket (signaling/supervisor.py).
    inherited = inherited_socket("sip_udp", family, socket.SOCK_DGRAM)
    sock = inherited or socket.socket(family, socket.SOCK_DGRAM)
    try:
        # No SO_REUSEADDR: on a UDP socket it lets a second server bind a port another one
        # holds and silently take part of its traffic.  A taken port is an error (exit 1).
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        rcv, snd = _size_buffers(sock, buffer_size)
        if inherited is None:
            sock.bind((host, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    slot_sock = inherited_socket("sip_udp_slot", family, socket.SOCK_DGRAM)
    if slot_sock is not None:
        slot_sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        _size_buffers(slot_sock, buffer_size)
    transport = UdpTransport(core, sock, advertise, slot_sock=slot_sock)
    core.transports.add(transport)
    transport.resume_reading()
    log.info("SIP UDP listening on %s:%s (receive buffer %d bytes, send buffer %d bytes, "
             "requested %d)", transport.address[0], transport.address[1], rcv, snd, buffer_size)
    return transport
