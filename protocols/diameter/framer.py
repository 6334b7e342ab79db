"""Splits a TCP byte stream into Diameter messages (RFC 6733 §3).

The first four bytes of a message carry its version and length, so a length that cannot be
right is detected before any of its body is buffered: shorter than the header, not a multiple of
four (§3: "the message length is always a multiple of 4"), longer than ``MAX_MESSAGE_SIZE``, or
a version other than 1.  Each is a ``FramingError``: after it the stream has no known message
boundary, so the connection must be closed (after an answer if the header could be read).  The
buffer therefore never holds more than one maximum-size message plus one read.
"""

from __future__ import annotations

from protocols.diameter.constants import HEADER_LENGTH, VERSION, ResultCode
from protocols.diameter.errors import FramingError

__all__ = ["MAX_MESSAGE_SIZE", "Framer"]

# Largest message accepted.  A CCR/CCA with several Multiple-Services-Credit-Control groups is a
# few KiB and a CER with many applications well under 4 KiB; 64 KiB leaves room for unusual but
# legal extensions while bounding what one connection can make us buffer (the 24-bit length
# field alone would allow 16 MiB per peer).
MAX_MESSAGE_SIZE = 65_536


class Framer:
    """Feed bytes in, get whole messages out; a broken length raises ``FramingError``."""

    __slots__ = ("_buf", "_failed", "max_size")

    def __init__(self, max_size: int = MAX_MESSAGE_SIZE) -> None:
        self._buf = bytearray()
        self._failed = False
        self.max_size = max_size

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        """The complete messages now available, in order."""
        if self._failed:
            # The stream lost its framing earlier; nothing that follows can be trusted.
            raise FramingError("stream already failed", ResultCode.DIAMETER_INVALID_MESSAGE_LENGTH,
                               None)
        buf = self._buf
        if not buf:
            # Fast path: nothing pending, frame straight from the received bytes.
            out, used = self._split(data)
            if used < len(data):
                buf += data[used:]
            return out
        buf += data
        out, used = self._split(buf)
        del buf[:used]
        return out

    def _split(self, data: bytes | bytearray) -> tuple[list[bytes], int]:
        out: list[bytes] = []
        pos = 0
        end = len(data)
        while end - pos >= 4:
            length = int.from_bytes(data[pos + 1 : pos + 4], "big")
            if data[pos] != VERSION or length < HEADER_LENGTH or length & 3 or (
                length > self.max_size
            ):
                raise self._fail(data, pos, out)
            if end - pos < length:
                break
            out.append(bytes(data[pos : pos + length]))
            pos += length
        return out, pos

    def _fail(self, data: bytes | bytearray, pos: int, before: list[bytes]) -> FramingError:
        self._failed = True
        raw = bytes(data[pos : pos + HEADER_LENGTH])
        header = raw if len(raw) == HEADER_LENGTH else None
        self._buf = bytearray()
        if data[pos] != VERSION:
            # §7.1.5 DIAMETER_UNSUPPORTED_VERSION.
            err = FramingError(f"unsupported version {data[pos]}",
                               ResultCode.DIAMETER_UNSUPPORTED_VERSION, header)
        else:
            # §7.1.5 DIAMETER_INVALID_MESSAGE_LENGTH.
            err = FramingError("invalid message length",
                               ResultCode.DIAMETER_INVALID_MESSAGE_LENGTH, header)
        # Whole messages framed before the fault are still good; hand them over with it.
        err.before = before
        return err
