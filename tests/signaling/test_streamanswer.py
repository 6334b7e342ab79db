"""``StreamAnswers``: what it keeps to absorb duplicates, and for how long (the whole path,
duplicates over a connection absorbed, is in test_sipcore)."""

from __future__ import annotations

from signaling.streamanswer import StreamAnswer, StreamAnswers
from signaling.transports.base import Peer

CONN = Peer("tcp", "192.0.2.10", 40000, "node-1/tcp/1")


def _answer(n: int, answered_at: float | None = None) -> StreamAnswer:
    answer = StreamAnswer(CONN, ("z9hG4bK" + str(n), "192.0.2.10", 40000, "REGISTER"))
    answer.answered_at = answered_at
    return answer


def test_an_answer_is_kept_for_linger_seconds_after_its_final_response() -> None:
    kept = StreamAnswers(linger=32.0, max_kept=100)
    first, second = _answer(1), _answer(2)
    kept.add(first, now=0.0)
    kept.add(second, now=0.0)
    assert kept.find(first.key or ()) is first
    first.answered_at = 1.0
    kept.add(_answer(3), now=32.5)  # first answered 31.5 s ago: still kept
    assert kept.find(first.key or ()) is first
    kept.add(_answer(4), now=33.5)
    assert kept.find(first.key or ()) is None
    # The second is still worked on: kept however old, until the bound says otherwise.
    kept.add(_answer(5), now=1000.0)
    assert kept.find(second.key or ()) is second and len(kept) == 4


def test_the_oldest_go_first_beyond_the_bound() -> None:
    kept = StreamAnswers(linger=32.0, max_kept=3)
    answers = [_answer(n) for n in range(5)]
    for a in answers:
        kept.add(a, now=0.0)
    assert len(kept) == 3
    assert [kept.find(a.key or ()) for a in answers] == [None, None, *answers[2:]]


def test_an_answer_without_a_key_is_not_kept() -> None:
    kept = StreamAnswers()
    kept.add(StreamAnswer(CONN), now=0.0)
    assert len(kept) == 0
