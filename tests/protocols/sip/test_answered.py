"""protocols.sip.answered: final answers kept for their request's retransmissions."""

from __future__ import annotations

from protocols.sip.answered import AnsweredRequests


def test_an_answer_is_found_until_its_lifetime_ends() -> None:
    answers = AnsweredRequests(32.0, 10)
    key = ("z9hG4bK1", "10.0.0.1", 5060, "REGISTER")
    answers.remember(key, b"SIP/2.0 200 OK\r\n", 100.0)
    assert answers.find(key, 100.0) == b"SIP/2.0 200 OK\r\n"
    assert answers.find(key, 131.9) == b"SIP/2.0 200 OK\r\n"
    assert answers.find(("z9hG4bK2", "10.0.0.1", 5060, "REGISTER"), 110.0) is None
    assert answers.find(key, 132.0) is None  # Timer J over (§17.2.2)
    assert len(answers) == 0


def test_they_end_in_the_order_they_came() -> None:
    answers = AnsweredRequests(10.0, 100)
    for i in range(5):
        answers.remember((f"b{i}",), b"%d" % i, float(i))
    answers.remember(("late",), b"x", 12.5)  # b0, b1 and b2 have ended by then
    assert len(answers) == 3
    assert answers.find(("b2",), 12.5) is None
    assert answers.find(("b3",), 12.5) == b"3"
    assert answers.find(("b4",), 14.0) is None and len(answers) == 1


def test_a_second_final_answer_is_discarded() -> None:
    answers = AnsweredRequests(32.0, 10)
    answers.remember(("b",), b"first", 0.0)
    answers.remember(("b",), b"second", 1.0)
    assert answers.find(("b",), 2.0) == b"first"
    assert answers.find(("b",), 32.0) is None  # it ends when the first would


def test_bounded_with_room_again_as_answers_end() -> None:
    answers = AnsweredRequests(10.0, 2)
    answers.remember(("a",), b"a", 0.0)
    assert answers.has_room(0.0)
    answers.remember(("b",), b"b", 5.0)
    assert not answers.has_room(9.0)
    assert answers.has_room(10.0)  # a has ended
    assert len(answers) == 1
