"""Other workers' changes kept as records until used (``signaling.registry.pending``)."""

from __future__ import annotations

import struct
import time

import pytest

from signaling.registry.base import Binding
from signaling.registry.memory import MemoryRegistry
from signaling.registry.pending import RECORD, Change, Pending, record


def binding(aor: str, contact: str, call_id: str = "c", cseq: int = 1,
            expires_at: float | None = None) -> Binding:
    return Binding(aor=aor, contact=contact, q=1.0,
                   expires_at=time.time() + 600 if expires_at is None else expires_at,
                   call_id=call_id, cseq=cseq, key=contact)


def added(b: Binding) -> bytes:
    """The record of a first registration of ``b``."""
    return record(Change(b.aor, [(b, None)], []), 1, 1)


def frame(*records: bytes) -> bytes:
    return b"C" + b"".join(records)


def make() -> tuple[MemoryRegistry, Pending]:
    local = MemoryRegistry()
    return local, Pending(local, 1 << 20)


async def test_a_change_waits_as_a_record_until_its_aor_is_used() -> None:
    local, pending = make()
    b = binding("sip:a@x", "sip:a@10.0.0.1")
    pending.absorb(frame(added(b)))
    assert "sip:a@x" in pending
    assert local.stored("sip:a@x") is None  # not decoded, not merged
    assert (pending.aors, pending.bindings) == (1, 1)
    assert list(pending.names()) == ["sip:a@x"]
    pending.settle("sip:a@x")
    assert "sip:a@x" not in pending
    assert [x.contact for x in await local.lookup("sip:a@x", time.time())] == [b.contact]
    assert (pending.aors, pending.bindings, pending.size) == (0, 0, 0)


async def test_changes_of_an_aor_used_here_are_merged_as_they_come() -> None:
    local, pending = make()
    b = binding("sip:a@x", "sip:a@10.0.0.1")
    await local.register("sip:a@x", "c0", 1, [], time.time())  # nothing stored: still absent
    pending.absorb(frame(added(b)))
    pending.settle("sip:a@x")
    refreshed = binding("sip:a@x", "sip:a@10.0.0.1", cseq=2)
    pending.absorb(frame(record(Change("sip:a@x", [(refreshed, ("c", 1))], []), 0, 0)))
    assert "sip:a@x" not in pending  # held here: merged at once
    assert [x.cseq for x in await local.lookup("sip:a@x", time.time())] == [2]


async def test_a_refresh_replaces_the_pending_record_of_its_binding() -> None:
    local, pending = make()
    first = binding("sip:a@x", "sip:a@10.0.0.1")
    pending.absorb(frame(added(first)))
    size = pending.size
    for cseq in range(2, 50):
        b = binding("sip:a@x", "sip:a@10.0.0.1", cseq=cseq)
        pending.absorb(frame(record(Change("sip:a@x", [(b, ("c", cseq - 1))], []), 0, 0)))
    assert pending.size < 2 * size  # one record, not 49
    assert (pending.aors, pending.bindings) == (1, 1)
    pending.settle("sip:a@x")
    assert [x.cseq for x in await local.lookup("sip:a@x", time.time())] == [49]
    # Another binding of the AOR is not a refresh of the first: both are kept.
    pending.absorb(frame(record(Change("sip:a@x", [(binding("sip:a@x", "sip:a@h2"), None)], []),
                                1, 0)))
    other = binding("sip:b@x", "sip:b@h", call_id="d")
    pending.absorb(frame(added(other)))
    old = binding("sip:b@x", "sip:b@h", call_id="d", cseq=0)  # an older CSeq: not a refresh
    pending.absorb(frame(record(Change("sip:b@x", [(old, None)], []), 0, 0)))
    pending.settle("sip:b@x")
    assert [x.cseq for x in await local.lookup("sip:b@x", time.time())] == [1]


async def test_a_removal_pending_counts_and_settles_at_the_next_sweep() -> None:
    local, pending = make()
    b = binding("sip:a@x", "sip:a@10.0.0.1")
    pending.absorb(frame(added(b)))
    pending.absorb(frame(record(Change("sip:a@x", [], [(b.key, ("c", 1))]), -1, -1)))
    assert (pending.aors, pending.bindings) == (0, 0)
    assert list(pending.names()) == []
    assert pending.expire(time.time(), 100) == 1  # settled now, not in 600 s
    assert "sip:a@x" not in pending and local.stored("sip:a@x") is None


async def test_lapsed_records_are_settled_by_the_sweep_and_then_expire() -> None:
    local, pending = make()
    now = time.time()
    pending.absorb(frame(added(binding("sip:old@x", "sip:o@h", expires_at=now - 1)),
                         added(binding("sip:new@x", "sip:n@h", expires_at=now + 600))))
    assert pending.expire(now, 100) == 1
    assert "sip:old@x" not in pending and "sip:new@x" in pending
    assert await local.expire(now, 100) == 1
    assert await local.count_bindings() == 0


async def test_the_sweep_settles_at_most_its_limit_and_skips_what_a_refresh_moved_on() -> None:
    """AORs whose expiries fall in one second are settled ``limit`` at a time, the rest at the
    next sweep; an AOR refreshed to a later expiry is not settled at its earlier second."""
    _, pending = make()
    now = time.time()
    lapsed = [f"sip:l{n}@x" for n in range(3)]
    pending.absorb(frame(*(added(binding(aor, f"sip:{n}@h", expires_at=now - 1))
                           for n, aor in enumerate(lapsed)),
                         added(binding("sip:r@x", "sip:r@h", expires_at=now - 1)),
                         added(binding("sip:r@x", "sip:r@h", cseq=2, expires_at=now + 600))))
    assert pending.expire(now, 2) == 2
    assert sum(aor in pending for aor in lapsed) == 1
    assert pending.expire(now, 2) == 1
    assert not any(aor in pending for aor in lapsed) and "sip:r@x" in pending
    assert pending.expire(now + 601, 2) == 1 and "sip:r@x" not in pending


async def test_past_its_budget_the_oldest_aors_are_settled() -> None:
    local = MemoryRegistry()
    one = len(added(binding("sip:u0@x", "sip:u0@h")))
    pending = Pending(local, 4 * one)
    for n in range(10):
        pending.absorb(frame(added(binding(f"sip:u{n}@x", f"sip:u{n}@h"))))
        assert pending.size <= 4 * one
    assert "sip:u0@x" not in pending and "sip:u9@x" in pending
    assert local.stored("sip:u0@x") is not None  # settled, not lost
    assert await local.count_aors() + pending.aors == 10


async def test_records_copy_the_pending_state_for_a_new_worker() -> None:
    _, pending = make()
    b = binding("sip:a@x", "sip:a@10.0.0.1")
    pending.absorb(frame(added(b), added(binding("sip:c@x", "sip:c@h"))))
    pending.absorb(frame(record(Change("sip:a@x", [(binding("sip:a@x", "sip:a@h2"), None)], []),
                                1, 0)))
    local2, copy = make()
    copy.absorb(frame(*pending.records()))
    assert (copy.aors, copy.bindings) == (2, 3)
    copy.settle("sip:a@x")
    assert len(await local2.lookup("sip:a@x", time.time())) == 2


async def test_records_of_the_aors_listed_earlier_leave_out_those_filed_since() -> None:
    """A worker sending its copy lists the pending AORs at once and encodes them later
    (``replica._snapshot``): an AOR filed in between is not in that copy (the newcomer reads
    it from the journal past the copy's positions), one listed and settled since still is."""
    _, pending = make()
    pending.absorb(frame(added(binding("sip:a@x", "sip:a@h")),
                         added(binding("sip:b@x", "sip:b@h"))))
    listed = pending.listed()
    pending.absorb(frame(added(binding("sip:n@x", "sip:n@h"))))
    pending.settle("sip:b@x")
    _, copy = make()
    copy.absorb(frame(*pending.records(listed)))
    assert sorted(copy.names()) == ["sip:a@x", "sip:b@x"] and (copy.aors, copy.bindings) == (2, 2)
    assert "sip:n@x" in pending and sorted(pending.names()) == ["sip:a@x", "sip:n@x"]


@pytest.mark.parametrize("bad", [
    RECORD.pack(5, 0, 0, 1, 1, 0.0, 100) + b"sip:a",  # body shorter than said
    RECORD.pack(2, 0, 0, 1, 1, 0.0, 0) + b"\xff\xfe",  # AOR not UTF-8
    b"\x00\x01",  # a truncated header
])
def test_a_malformed_record_raises(bad: bytes) -> None:
    _, pending = make()
    with pytest.raises((ValueError, struct.error)):
        pending.absorb(frame(bad))


async def test_a_body_that_does_not_decode_is_dropped_and_counted() -> None:
    local, pending = make()
    pending.absorb(frame(RECORD.pack(7, 0, 0, 1, 1, time.time() + 60, 3) + b"sip:a@x" + b"\xc1xx"))
    pending.settle("sip:a@x")
    assert pending.corrupt == 1 and local.stored("sip:a@x") is None
