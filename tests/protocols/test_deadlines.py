"""DeadlineHeap: order, reschedule and cancel, due popping, and the bound on stale entries."""

from __future__ import annotations

import random

import pytest

from protocols.deadlines import DEFAULT_SLACK, DeadlineHeap


def test_empty() -> None:
    heap: DeadlineHeap[str] = DeadlineHeap()
    assert len(heap) == 0
    assert heap.next_deadline() is None
    assert heap.pop_due(1e9) == []
    assert heap.cancel("a") is None
    assert heap.deadline("a") is None


def test_pop_due_in_deadline_order_and_only_due() -> None:
    heap: DeadlineHeap[str] = DeadlineHeap()
    for key, deadline in (("c", 3.0), ("a", 1.0), ("b", 2.0), ("d", 4.0)):
        heap.push(key, deadline)
    assert heap.next_deadline() == 1.0
    assert heap.pop_due(2.5) == ["a", "b"]
    assert "a" not in heap and "c" in heap
    assert len(heap) == 2
    assert heap.next_deadline() == 3.0
    assert heap.pop_due(10.0) == ["c", "d"]
    assert heap.next_deadline() is None


def test_equal_deadlines_pop_in_push_order_without_comparing_keys() -> None:
    class Unordered:  # like a transaction object: hashable, not orderable
        pass

    keys = [Unordered() for _ in range(5)]
    heap: DeadlineHeap[Unordered] = DeadlineHeap()
    for key in keys:
        heap.push(key, 7.0)
    assert heap.pop_due(7.0) == keys


def test_reschedule_replaces_the_deadline() -> None:
    heap: DeadlineHeap[str] = DeadlineHeap()
    heap.push("a", 1.0)
    heap.push("b", 2.0)
    heap.reschedule("a", 5.0)  # later: the old entry at 1.0 is stale
    assert heap.deadline("a") == 5.0
    assert heap.next_deadline() == 2.0
    assert heap.pop_due(4.0) == ["b"]
    heap.push("a", 0.5)  # earlier again
    assert heap.next_deadline() == 0.5
    assert heap.pop_due(10.0) == ["a"]  # once, although three entries were pushed for it
    assert len(heap) == 0


def test_same_deadline_again_adds_no_entry() -> None:
    heap: DeadlineHeap[str] = DeadlineHeap()
    heap.push("a", 1.0)
    heap.push("a", 1.0)
    assert heap.heap_size() == 1


def test_cancel_returns_the_deadline_and_the_key_never_fires() -> None:
    heap: DeadlineHeap[str] = DeadlineHeap()
    heap.push("a", 1.0)
    heap.push("b", 2.0)
    assert heap.cancel("a") == 1.0
    assert heap.cancel("a") is None
    assert heap.next_deadline() == 2.0
    assert heap.pop_due(5.0) == ["b"]


def test_pop_due_limit_leaves_the_rest_due() -> None:
    heap: DeadlineHeap[int] = DeadlineHeap()
    for i in range(10):
        heap.push(i, float(i))
    assert heap.pop_due(100.0, limit=4) == [0, 1, 2, 3]
    assert heap.pop_due(100.0, limit=4) == [4, 5, 6, 7]
    assert heap.pop_due(100.0) == [8, 9]


def test_items_lists_live_keys_only() -> None:
    heap: DeadlineHeap[str] = DeadlineHeap()
    heap.push("a", 1.0)
    heap.push("b", 2.0)
    heap.push("a", 3.0)
    heap.cancel("b")
    assert dict(heap.items()) == {"a": 3.0}


@pytest.mark.parametrize("slack", [0, 16, DEFAULT_SLACK])
def test_stale_entries_stay_bounded_under_churn(slack: int) -> None:
    """Many reschedules, cancels and pops: the heap never exceeds live + live // 2 + slack."""
    rng = random.Random(slack)
    heap: DeadlineHeap[int] = DeadlineHeap(slack=slack)
    now = 0.0
    for step in range(50_000):
        key = rng.randrange(200)
        roll = rng.random()
        if roll < 0.7:
            heap.push(key, now + rng.uniform(0, 50))
        elif roll < 0.9:
            heap.cancel(key)
        else:
            now += 1.0
            heap.pop_due(now)
        assert heap.heap_size() <= len(heap) + len(heap) // 2 + slack, step


def test_matches_a_naive_model() -> None:
    """Random operations give the same due keys as a dict scanned in full."""
    rng = random.Random(7)
    heap: DeadlineHeap[int] = DeadlineHeap(slack=8)
    model: dict[int, float] = {}
    now = 0.0
    for _ in range(20_000):
        key = rng.randrange(50)
        roll = rng.random()
        if roll < 0.6:
            deadline = now + rng.choice([0.0, 1.0, 2.5, rng.uniform(0, 10)])
            heap.push(key, deadline)
            model[key] = deadline
        elif roll < 0.8:
            assert heap.cancel(key) == model.pop(key, None)
        else:
            now += rng.uniform(0, 2)
            due = heap.pop_due(now)
            expected = {k for k, d in model.items() if d <= now}
            assert set(due) == expected
            assert [model[k] for k in due] == sorted(model[k] for k in due)
            for k in due:
                del model[k]
        assert len(heap) == len(model)
        assert heap.next_deadline() == (min(model.values()) if model else None)


def test_compact_drops_every_stale_entry() -> None:
    heap: DeadlineHeap[int] = DeadlineHeap(slack=1000)
    for i in range(100):
        heap.push(1, float(i))
    assert heap.heap_size() == 100
    heap.compact()
    assert heap.heap_size() == 1
    assert heap.pop_due(1000.0) == [1]


def test_push_limit_refuses_new_keys_only() -> None:
    heap: DeadlineHeap[str] = DeadlineHeap()
    assert heap.push("a", 1.0, limit=2) and heap.push("b", 2.0, limit=2)
    assert not heap.push("c", 3.0, limit=2)  # a third key: refused, nothing stored
    assert "c" not in heap and heap.heap_size() == 2
    assert heap.push("a", 5.0, limit=2)  # a reschedule of a known key is always taken
    assert heap.deadline("a") == 5.0


def test_negative_slack_refused() -> None:
    with pytest.raises(ValueError):
        DeadlineHeap(slack=-1)
