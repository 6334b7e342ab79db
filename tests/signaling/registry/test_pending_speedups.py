"""``signaling.registry._pending_speedups``: the C ``absorb`` and ``write_record`` against
their Python references.

Both ``absorb`` file the same records into two ``Pending`` objects; everything they leave
behind (the entries' fields, the counts, the expiry buckets, the records to merge, the exception
on malformed input) must be the same.  Both ``write_record`` must leave the same bytes in a
journal's ring, wrapped at its end, as ``pending.record`` frames them.  The test command
builds the extension (SIGNALING_REQUIRE_SPEEDUPS=1): an ImportError fails these tests rather
than skipping them.
"""

from __future__ import annotations

import importlib
import mmap
import struct
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signaling.registry.base import Binding
from signaling.registry.journal import JournalReader, JournalWriter, write_record_py
from signaling.registry.memory import MemoryRegistry
from signaling.registry.pending import RECORD, Change, Pending, absorb_py, fields, record
from tests.sanitizers import build_sanitized, run_sanitized

Absorb = Callable[[Pending, bytes, int, list[tuple[str, bytes]]], None]
NOW = time.time()


def speedups() -> ModuleType:
    return importlib.import_module("signaling.registry._pending_speedups")


def binding(aor: str, key: str, call_id: str = "c", cseq: int = 1,
            expires_at: float = NOW + 600) -> Binding:
    return Binding(aor=aor, contact=key, q=1.0, expires_at=expires_at, call_id=call_id,
                   cseq=cseq, key=key)


def state(p: Pending, merges: list[tuple[str, bytes]]) -> object:
    entries = {aor: (list(e.bodies), e.token, e.cseq, e.bindings, e.aors, e.latest, e.size)
               for aor, e in p._entries.items()}
    return entries, p.bindings, p.aors, p.size, p._expiry, sorted(p._seconds), merges


def run(absorb: Absorb, chunks: list[bytes], held: tuple[str, ...] = ()) -> object:
    """File ``chunks`` one after another into a fresh Pending; its state and each outcome."""
    local = MemoryRegistry()
    for aor in held:
        local.merge(aor, [(binding(aor, "sip:held"), None)], [])
    p = Pending(local, 1 << 30)
    merges: list[tuple[str, bytes]] = []
    outcomes: list[str] = []
    for chunk in chunks:
        try:
            absorb(p, chunk, 0, merges)
            outcomes.append("ok")
        except (ValueError, struct.error):
            outcomes.append("malformed")
    return state(p, merges), outcomes


def both(chunks: list[bytes], held: tuple[str, ...] = ()) -> None:
    assert run(speedups().absorb, chunks, held) == run(absorb_py, chunks, held)


def test_new_aors_refreshes_removals_and_held_aors_are_filed_alike() -> None:
    a1 = binding("sip:a@x", "sip:a@1")
    a1_refresh = binding("sip:a@x", "sip:a@1", cseq=2, expires_at=NOW + 900)
    a1_older = binding("sip:a@x", "sip:a@1", cseq=1, expires_at=NOW + 300)
    a2 = binding("sip:a@x", "sip:a@2", call_id="d")
    b1 = binding("sip:b@x", "sip:b@1")
    h1 = binding("sip:h@x", "sip:h@1")
    records = [
        record(Change("sip:a@x", [(a1, None)], []), 1, 1),
        record(Change("sip:a@x", [(a1_refresh, ("c", 1))], []), 0, 0),   # replaces
        record(Change("sip:a@x", [(a1_older, ("c", 2))], []), 0, 0),     # lower CSeq: kept
        record(Change("sip:a@x", [(a1, None), (a2, None)], []), 1, 0),   # two: no token
        record(Change("sip:a@x", [], [("sip:a@2", ("d", 1))]), -1, 0),   # removal
        record(Change("sip:b@x", [(b1, None)], [("sip:b@0", ("e", 3))]), 0, 1),
        record(Change("sip:h@x", [(h1, None)], []), 1, 0),               # held: to merge
        record(Change("sip:é@x", [(binding("sip:é@x", "sip:é"), None)], []), 1, 1),
    ]
    both(records, held=("sip:h@x",))
    both([b"".join(records)], held=("sip:h@x",))
    both([b"".join(records)])


def test_malformed_input_fails_alike_after_filing_what_came_before() -> None:
    good = record(Change("sip:a@x", [(binding("sip:a@x", "sip:a@1"), None)], []), 1, 1)
    for cut in range(1, len(good)):
        both([good + good[:cut], good])  # truncated after a whole record, then a good one
    bad_aor = RECORD.pack(2, 0, 0, 1, 1, 0.0, 0) + b"\xff\xfe"
    both([good + bad_aor])
    short_body = RECORD.pack(1, 0, 0, 1, 1, 0.0, 0) + b"a"  # a record with an empty body
    both([short_body, good])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=120), max_size=4))
def test_random_bytes_are_filed_or_refused_alike(chunks: list[bytes]) -> None:
    both(chunks)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["sip:a@x", "sip:b@x", "sip:c@x"]),
                          st.sampled_from(["k1", "k2"]), st.integers(1, 5),
                          st.sampled_from([0.0, NOW + 10, NOW + 20]),
                          st.integers(-2, 2), st.integers(-1, 1)), max_size=12))
def test_record_sequences_are_filed_alike(
        changes: list[tuple[str, str, int, float, int, int]]) -> None:
    records = [record(Change(aor, [(binding(aor, key, cseq=cseq, expires_at=at), None)]
                             if at else [], [] if at else [(key, ("c", cseq))]), db, da)
               for aor, key, cseq, at, db, da in changes]
    both(records, held=("sip:c@x",))
    both([b"".join(records)])


def test_entries_are_read_only_and_take_no_arguments() -> None:
    entry_type = speedups().Entry
    entry = entry_type()
    assert (entry.bodies, entry.token, entry.cseq, entry.latest) == ([], b"", 0, 0.0)
    with pytest.raises(AttributeError):  # written by absorb only
        entry.cseq = 3
    with pytest.raises(TypeError):
        entry_type(1)


def _written(write: Callable[..., int], ring: int, head: int,
             records: list[tuple[str, Change, int, int]]) -> tuple[bytes, int]:
    buf = mmap.mmap(-1, 64 + ring)
    for aor, change, bindings, aors in records:
        head = write(buf, head, ring, aor, *fields(change)[:2], bindings, aors,
                     *fields(change)[2:])
    return bytes(buf), head


@settings(max_examples=200, deadline=None)
@given(st.integers(60, 600), st.integers(0, 10_000),
       st.lists(st.tuples(st.sampled_from(["sip:a@x", "sip:é@x", ""]),
                          st.integers(0, 2), st.integers(-3, 3), st.integers(-1, 1)),
                max_size=5))
def test_write_record_copies_the_same_bytes_across_the_end_of_the_ring(
        ring: int, head: int, shapes: list[tuple[str, int, int, int]]) -> None:
    records = [(aor, Change(aor, [(binding(aor, f"k{i}", cseq=i + 1), None)
                                  for i in range(n)], []), db, da)
               for aor, n, db, da in shapes]
    records = [r for r in records if len(record(r[1], r[2], r[3])) <= ring]
    c_bytes, c_head = _written(speedups().write_record, ring, head, records)
    py_bytes, py_head = _written(write_record_py, ring, head, records)
    assert (c_head, c_bytes) == (py_head, py_bytes)
    assert c_head == head + sum(len(record(c, db, da)) for _, c, db, da in records)


def test_a_written_record_reads_back_as_the_record_of_its_change(tmp_path: Path) -> None:
    writer = JournalWriter(str(tmp_path), ring=4096)
    reader = JournalReader.open(writer.path)
    assert reader is not None
    b = binding("sip:a@x", "sip:a@1")
    change = Change("sip:a@x", [(b, None)], [])
    for _ in range(30):  # past the end of the ring
        writer.append_record("sip:a@x", *fields(change), 1, 1, b.expires_at)
        assert reader.read() == record(change, 1, 1)
    with pytest.raises(ValueError):
        speedups().write_record(mmap.mmap(-1, 64 + 16), 0, 16, "sip:a@x", b"", 0, 1, 1, 0.0,
                                b"")  # larger than the ring
    writer.close()
    reader.close()


def test_a_body_in_a_bytearray_is_written_as_the_same_body_in_bytes() -> None:
    """``JournalWriter.append_new`` hands ``write_record`` the bytearray it encoded into."""
    change = Change("sip:a@x", [(binding("sip:a@x", "sip:a@1"), None)], [])
    token, cseq, latest, body = fields(change)
    written = []
    for write in (speedups().write_record, write_record_py):
        for kind in (bytes, bytearray):
            buf = mmap.mmap(-1, 64 + 1024)
            head = write(buf, 1000, 1024, "sip:a@x", token, cseq, 1, 1, latest, kind(body))
            written.append((head, bytes(buf)))
    assert written == [written[0]] * 4
    assert written[0][0] == 1000 + len(record(change, 1, 1))


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2_000), st.sampled_from(["sip:a@1", "sip:é@1;x=ü", ""]),
       st.sampled_from(["c", "ç@h", ""]))
def test_a_token_given_as_key_and_call_id_is_written_as_its_bytes(
        head: int, key: str, call_id: str) -> None:
    """``JournalWriter.append_new`` hands ``write_record`` the binding's key and Call-ID
    rather than the token ``pending.fields`` builds from them: the same record, C and Python,
    across the end of the ring too."""
    b = binding("sip:a@x", key, call_id=call_id)
    token, cseq, latest, body = fields(Change("sip:a@x", [(b, None)], []))
    assert token == f"{key}\n{call_id}".encode()
    written = []
    for write in (speedups().write_record, write_record_py):
        for given_token in (token, (key, call_id)):
            buf = mmap.mmap(-1, 64 + 700)
            new_head = write(buf, head, 700, "sip:a@x", given_token, cseq, 1, 1, latest, body)
            written.append((new_head, bytes(buf)))
    assert written == [written[0]] * 4


def test_a_token_pair_of_anything_but_two_strings_is_refused() -> None:
    for token in (("k",), ("k", b"c"), ("k", "c", "x"), ["k", "c"]):
        with pytest.raises(TypeError):
            speedups().write_record(mmap.mmap(-1, 64 + 700), 0, 700, "sip:a@x", token, 1, 1,
                                    1, 0.0, b"")


_ASAN_RUN = r"""
import mmap, pickle, random, struct, sys
build, repo, seeds_file, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
sys.path[:0] = [build, repo]
import _pending_speedups as c
from signaling.registry.memory import MemoryRegistry
from signaling.registry.pending import Pending
from tests.sanitizers import mutated
assert c.__file__.startswith(build), c.__file__
with open(seeds_file, "rb") as f:
    seeds = pickle.load(f)
rnd = random.Random(5626)
filed = refused = 0
ring = mmap.mmap(-1, 4096)
for i in range(count):
    if i % 200 == 0:
        pending, merges = Pending(MemoryRegistry(), 1 << 30), []
    data = b"".join(mutated(rnd, seeds) for _ in range(rnd.randint(1, 3)))
    try:
        c.absorb(pending, data, 0, merges)
        filed += 1
    except (ValueError, struct.error):
        refused += 1
    body = mutated(rnd, seeds)[:rnd.randint(0, 600)]
    c.write_record(ring, rnd.randrange(1 << 20), 2048, "sip:a@x", b"t", 1, 1, 1, 0.0, body)
    key = "sip:é@h;" * rnd.randint(0, 40)
    c.write_record(ring, rnd.randrange(1 << 20), 2048, "sip:a@x", (key, "c@é"), 1, 1, 1, 0.0,
                   body)
print("filed", filed, "refused", refused)
"""


def test_no_memory_error_under_address_sanitizer(tmp_path: Path) -> None:
    """The extension rebuilt with ASan and UBSan files mutated journal records (a worker
    killed mid-write leaves a torn one) and writes records across the ring's end: any
    out-of-bounds access or undefined behaviour aborts the run."""
    repo = Path(__file__).resolve().parents[3]
    build_sanitized([repo / "signaling/registry/_pending_speedups.c"],
                    tmp_path / "_pending_speedups")
    seeds = [record(Change(aor, [(binding(aor, f"sip:{n}@h", cseq=n), None)], []), 1, 1)
             for n, aor in enumerate(("sip:a@x", "sip:b@x", "sip:é@x"), 1)]
    seeds.append(record(Change("sip:a@x", [], [("sip:1@h", ("c", 2))]), -1, 0))
    filed, refused = run_sanitized(_ASAN_RUN, tmp_path, repo, seeds, 20000)
    assert filed > 2000 and refused > 2000  # both outcomes reached, not only early refusals
