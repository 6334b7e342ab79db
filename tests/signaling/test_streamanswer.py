"""``StreamAnswers``: what it keeps to absorb duplicates, and for how long (the whole path,
duplicates over a connection absorbed, is in test_sipcore)."""

from __future__ import annotations

from signaling.streamanswer import StreamAnswer, StreamAnswers
from signaling.transports.base import Peer

CONN = Peer("tcp", "192.0.2.10", 40000, "node-1/tcp/1")


def _answer(n: int) -> StreamAnswer:
    return StreamAnswer(CONN, ("z9hG4bK" + str(n), "192.0.2.10", 40000, "REGISTER"))


def _found(kept: StreamAnswers, answers: list[StreamAnswer]) -> list[bool]:
    return [kept.find(a.key or ()) is a for a in answers]


def test_an_answer_is_kept_linger_to_twice_linger_seconds() -> None:
    kept = StreamAnswers(linger=4.0, max_kept=100)
    first, second, third = _answer(1), _answer(2), _answer(3)
    kept.add(first, now=0.0)  # a generation begins: it turns over at 4.0
    kept.add(second, now=3.9)
    assert _found(kept, [first, second]) == [True, True]
    kept.add(third, now=4.0)  # the first generation is the older one now
    assert _found(kept, [first, second, third]) == [True, True, True]
    kept.add(_answer(4), now=8.0)  # and now forgotten: first 8 s old, second 4.1 s
    assert _found(kept, [first, second, third]) == [False, False, True]
    assert len(kept) == 2


def test_a_generation_turns_over_at_half_the_bound() -> None:
    kept = StreamAnswers(linger=4.0, max_kept=4)
    answers = [_answer(n) for n in range(5)]
    for a in answers:
        kept.add(a, now=0.0)
    # Generations of two: {0, 1} forgotten, {2, 3} older, {4} recent.
    assert len(kept) == 3
    assert _found(kept, answers) == [False, False, True, True, True]


def test_an_answer_without_a_key_is_not_kept() -> None:
    kept = StreamAnswers()
    kept.add(StreamAnswer(CONN), now=0.0)
    assert len(kept) == 0
