"""The listening socket's queue control law (signaling/transports/udpqueue.py), clock in."""

from __future__ import annotations

from signaling.transports.udpqueue import FLOOR, SKB_OVERHEAD, QueueStats, ReadPace, ReceiveQueue

MB = 1024 * 1024


def _stats(read: int, wait: float, dropped_total: int = 0, payload: int = 500) -> QueueStats:
    return QueueStats(read=read, payload=read * payload, max_wait=wait,
                      dropped_total=dropped_total)


def test_the_full_buffer_is_kept_while_nothing_waits() -> None:
    q = ReceiveQueue(0.05, 8 * MB)
    for i in range(1, 30):
        assert q.revise(i * 0.1, _stats(100, 0.001)) is None
    assert q.size == 8 * MB


def test_a_standing_queue_shrinks_the_buffer_to_what_is_read_within_target() -> None:
    q = ReceiveQueue(0.05, 8 * MB)
    # 300 datagrams of 500 bytes read in 0.1 s (3,000/s) that had waited 0.4 s
    size = q.revise(0.1, _stats(300, 0.4))
    assert size == int(3000 * 0.05 * (500 + SKB_OVERHEAD)) == q.size


def test_drops_while_the_reader_keeps_up_grow_the_buffer_and_the_counter_may_wrap() -> None:
    q = ReceiveQueue(0.05, 8 * MB, now=0.0)
    q.revise(0.1, _stats(300, 0.4))  # a standing queue: shrunk
    small = q.size
    # bursts overflow it while what is read waited little: it doubles per interval (the u32
    # drop count wrapped in between)
    assert q.revise(0.2, _stats(300, 0.001, dropped_total=2**32 - 5)) == 2 * small
    assert q.revise(0.3, _stats(300, 0.001, dropped_total=5)) == 4 * small
    assert q.revise(0.4, _stats(300, 0.001, dropped_total=5)) is None  # no new drops, not calm


def test_the_buffer_never_leaves_its_bounds_and_returns_to_full_when_calm() -> None:
    q = ReceiveQueue(0.05, 8 * MB, floor=128 * 1024, calm_time=1.0)
    q.revise(0.1, _stats(1, 5.0))  # one datagram, very late: the rate says a few bytes
    assert q.size == 128 * 1024
    t, sizes = 0.1, []
    for _ in range(40):
        t += 0.1
        q.revise(t, _stats(50, 0.001))
        sizes.append(q.size)
    assert all(128 * 1024 <= s <= 8 * MB for s in sizes)
    assert sizes[:8] == [128 * 1024] * 8  # calm for a second first: no flapping
    assert sizes[-1] == 8 * MB


def test_a_wait_near_target_is_not_calm() -> None:
    q = ReceiveQueue(0.05, 8 * MB, calm_time=0.5)
    q.revise(0.1, _stats(300, 0.4))
    small = q.size
    for i in range(2, 30):
        q.revise(i * 0.1, _stats(300, 0.03))  # above target/2: the queue is still working
    assert q.size == small


def test_the_interval_statistics_are_reset_but_not_the_drop_total() -> None:
    q = ReceiveQueue(0.05, 8 * MB)
    stats = _stats(300, 0.4, dropped_total=7)
    q.revise(0.1, stats)
    assert (stats.read, stats.payload, stats.max_wait, stats.dropped_total) == (0, 0, 0.0, 7)


def test_the_read_pace_follows_the_limit_and_holds_a_short_burst() -> None:
    pace = ReadPace(2.0, burst_time=0.02, min_burst=8.0, now=0.0)
    assert pace.allowance(0.0, 1000.0) == 8  # the first burst
    pace.took(8)
    assert pace.allowance(0.0, 1000.0) == 0
    assert pace.allowance(0.01, 1000.0) == 20  # 10 ms at 2 x 1,000/s
    pace.took(20)
    assert pace.allowance(10.0, 1000.0) == 40  # idle long: no more than 20 ms of the pace
    pace.took(40)
    assert pace.allowance(10.01, 10.0) == 0  # a low limit: 0.2 of a token in 10 ms


def test_a_slow_reader_gets_a_queue_of_target_not_of_the_floor() -> None:
    """Read at 200 datagrams/s (a low admission limit's pace), the queue is cut to what is
    read within the target (bounded by the floor): what is read has not waited past T1/2.
    With a 128 KB floor it held ~100 INVITEs, half a second at that pace, and every request
    read was refused as late."""
    q = ReceiveQueue(0.05, 8 * MB)
    q.revise(0.1, _stats(20, 0.4, payload=900))  # 200/s of 900-byte INVITEs, waited 0.4 s
    held = q.size / (900 + SKB_OVERHEAD)  # datagrams the buffer holds
    assert q.size == max(FLOOR, int(200 * 0.05 * (900 + SKB_OVERHEAD)))
    assert held / 200 < 0.25  # seconds of queue at that pace: under max_receive_delay
