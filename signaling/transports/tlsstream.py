"""TLS of one accepted SIP-over-TLS or WSS connection, run over memory BIOs under the
connection's own protocol (RFC 3261 §26.2; RFC 5630; RFC 7118 over RFC 6455 §4.1's TLS):
``tcp.py``'s stream listeners read and write plain TCP and pass the bytes through here, and
give the plaintext to their framing (SIP's, or WebSocket's in ``ws.py``).

Why not the event loop's TLS (``connect_accepted_socket(ssl=...)``, uvloop's ``SSLProtocol``,
what WSS used before): it reads records in a loop that ends
only when OpenSSL raises ``SSLWantReadError``, so every read of the socket costs one failed
``SSL_read`` and a Python exception besides the records it carried: 22,900 instructions to read
one REGISTER's record that way, 11,200 here (callgrind, ``ssl.MemoryBIO`` pairs in one process),
where the loop stops when the input BIO is empty.  It also copies each read into a 256 kB
buffer of its own per connection; here the bytes go from the socket's read straight into the
BIO.  The handshake runs here too, so no descriptor is duplicated and handed to a second
transport, and the listener sees the connection (its source, its counters) from its first byte.

What stays the same: the context is the listener's ``front`` (``signaling.tls``): TLS 1.2 and
1.3 only, its SNI callback picks the certificate per handshake, so a reload reaches the next
connection; ``sslobj`` is an ``ssl.SSLObject``, whose ``getpeercert()`` gives the verified client
certificate of mutual TLS.  Connections the server opens (forwarding over TLS) are fewer and keep
the event loop's TLS (``tcp.StreamTransport._connect``).
"""

from __future__ import annotations

import contextlib
import ssl

__all__ = ["READ_SIZE", "TlsStream"]

#: Octets asked of each ``SSLObject.read``: a TLS record carries at most 16,384 octets of
#: plaintext (RFC 8446 §5.1, RFC 5246 §6.2.1), so one read takes a whole record.
READ_SIZE = 16_384 + 1024


class TlsStream:
    """The TLS state of one connection: feed it what the socket read, write what it returns."""

    __slots__ = ("closed", "handshaking", "incoming", "outgoing", "sslobj")

    def __init__(self, context: ssl.SSLContext) -> None:
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.sslobj = context.wrap_bio(self.incoming, self.outgoing, server_side=True)
        self.handshaking = True
        #: The peer sent its close_notify (RFC 8446 §6.1): nothing more will come.
        self.closed = False

    def handshake(self, data: bytes) -> bool:
        """Feed handshake bytes; True once the handshake is complete (``output`` then holds
        the server's last flight, and ``decrypt(b"")`` any application data read with it).
        Raises ``ssl.SSLError`` when it fails (a bad certificate, a protocol version refused,
        bytes that are not TLS)."""
        self.incoming.write(data)
        try:
            self.sslobj.do_handshake()
        except ssl.SSLWantReadError:
            return False
        self.handshaking = False
        return True

    def decrypt(self, data: bytes) -> bytes:
        """The plaintext of the records ``data`` completes (b"" if none yet).  Raises
        ``ssl.SSLError`` for a record that does not decrypt: the connection is then over."""
        incoming = self.incoming
        incoming.write(data)
        read = self.sslobj.read
        chunks = []
        try:
            while incoming.pending:
                chunk = read(READ_SIZE)
                if not chunk:  # close_notify: a clean end of the TLS stream
                    self.closed = True
                    break
                chunks.append(chunk)
        except ssl.SSLWantReadError:
            pass  # the rest of a record is still on the way
        if len(chunks) == 1:
            return chunks[0]
        return b"".join(chunks)

    def encrypt(self, data: bytes) -> bytes:
        """The records that carry ``data`` (and anything else pending to the peer)."""
        self.sslobj.write(data)
        return self.outgoing.read()

    def output(self) -> bytes:
        """What TLS itself has to send (handshake flights, alerts, a key update's answer)."""
        return self.outgoing.read() if self.outgoing.pending else b""

    def shutdown(self) -> bytes:
        """Our close_notify (RFC 8446 §6.1), to send before closing; b"" if the state does
        not allow one (mid-handshake, after an error)."""
        if self.handshaking:
            return b""
        # SSLWantReadError: ours is written, the peer's is not awaited.
        with contextlib.suppress(ssl.SSLError):
            self.sslobj.unwrap()
        return self.output()
