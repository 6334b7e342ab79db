"""Stream framing with a bounded buffer (RFC 6733 §3)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.diameter.codec import Avp, Message
from protocols.diameter.constants import FLAG_R, ResultCode
from protocols.diameter.errors import FramingError
from protocols.diameter.framer import MAX_MESSAGE_SIZE, Framer


def _msg(i: int, size: int = 0) -> bytes:
    return Message(280, FLAG_R, 0, i, i, [Avp(264, 0x40, b"x" * size)]).encode()


@given(st.lists(st.integers(0, 50), min_size=1, max_size=6), st.data())
def test_any_split_yields_the_same_messages(sizes: list[int], data: st.DataObject) -> None:
    wire = [_msg(i, n) for i, n in enumerate(sizes)]
    stream = b"".join(wire)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    framer = Framer()
    out: list[bytes] = []
    prev = 0
    for cut in [*cuts, len(stream)]:
        out.extend(framer.feed(stream[prev:cut]))
        prev = cut
    assert out == wire
    assert framer.buffered == 0


@given(st.lists(st.binary(max_size=300), max_size=5))
def test_arbitrary_bytes_raise_only_framing_error_and_stay_bounded(chunks: list[bytes]) -> None:
    framer = Framer()
    for chunk in chunks:
        try:
            framer.feed(chunk)
        except FramingError as exc:
            assert exc.fatal
            assert exc.result_code in (ResultCode.DIAMETER_INVALID_MESSAGE_LENGTH,
                                       ResultCode.DIAMETER_UNSUPPORTED_VERSION)
            return
        assert framer.buffered <= MAX_MESSAGE_SIZE


@pytest.mark.parametrize("length", [0, 19, 21, 22, 23, MAX_MESSAGE_SIZE + 4, 0xFFFFFC])
def test_impossible_length_is_fatal_at_four_bytes(length: int) -> None:
    framer = Framer()
    with pytest.raises(FramingError) as info:
        framer.feed(struct.pack("!I", (1 << 24) | length))
    assert info.value.result_code == ResultCode.DIAMETER_INVALID_MESSAGE_LENGTH
    assert info.value.header is None
    assert framer.buffered == 0
    with pytest.raises(FramingError):
        framer.feed(_msg(1))  # the stream has no boundary any more


def test_bad_version_is_5011_with_header() -> None:
    wire = bytearray(_msg(7))
    wire[0] = 2
    with pytest.raises(FramingError) as info:
        Framer().feed(bytes(wire))
    assert info.value.result_code == ResultCode.DIAMETER_UNSUPPORTED_VERSION
    assert info.value.header == bytes(wire[:20])


def test_messages_before_the_fault_are_kept() -> None:
    good = _msg(1)
    with pytest.raises(FramingError) as info:
        Framer().feed(good + b"\x01\x00\x00\x05" + bytes(16))
    assert info.value.before == [good]


def test_max_size_message_is_accepted() -> None:
    body = MAX_MESSAGE_SIZE - 20 - 8
    wire = _msg(1, body)
    assert len(wire) == MAX_MESSAGE_SIZE
    assert Framer().feed(wire) == [wire]
