"""FastEnum members hash by identity and still behave as Enum members."""

from __future__ import annotations

from protocols.diameter.fastenum import FastEnum


class Colour(FastEnum):
    RED = "red"
    BLUE = "blue"


def test_identity_hash_and_enum_behaviour() -> None:
    assert hash(Colour.RED) == object.__hash__(Colour.RED)
    table = {(Colour.RED, Colour.BLUE): 1}
    assert table[(Colour.RED, Colour.BLUE)] == 1
    assert Colour("red") is Colour.RED and Colour["BLUE"] is Colour.BLUE
    assert list(Colour) == [Colour.RED, Colour.BLUE] and len(set(Colour)) == 2
