"""Bounds and internals specific to the in-memory engine (the contract is in test_base.py)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signaling.registry import ContactChange, MemoryRegistry, OutOfOrder, RegistryFull
from signaling.registry.base import Binding

NOW = 1000.0


def change(contact: str, expires: int = 60, **kw: object) -> ContactChange:
    return ContactChange(contact=contact, expires=expires, **kw)  # type: ignore[arg-type]


async def test_max_aors_bound() -> None:
    reg = MemoryRegistry(max_aors=2)
    await reg.register("sip:a@x", "c", 1, [change("sip:a@h")], NOW)
    await reg.register("sip:b@x", "c", 1, [change("sip:b@h")], NOW)
    with pytest.raises(RegistryFull):
        await reg.register("sip:c@x", "c", 1, [change("sip:c@h")], NOW)
    assert await reg.count_aors() == 2
    # An existing AOR can still refresh, and a freed slot can be reused.
    await reg.register("sip:a@x", "c", 2, [change("sip:a@h2")], NOW)
    await reg.register("sip:b@x", "c", 2, [change("sip:b@h", 0)], NOW)
    await reg.register("sip:c@x", "c", 1, [change("sip:c@h")], NOW)
    assert await reg.list_aors() == ["sip:a@x", "sip:c@x"]


async def test_known_users_bounded_oldest_forgotten() -> None:
    reg = MemoryRegistry(max_known_users=2)
    for user in ["a", "b", "c"]:
        await reg.register(f"sip:{user}@x", "c", 1, [change("sip:h", 10)], NOW)
        await reg.remove_all(f"sip:{user}@x", "c", 2, NOW)
    assert not await reg.known_user("sip:a@x")
    assert await reg.known_user("sip:b@x")
    assert await reg.known_user("sip:c@x")


async def test_state_ttl_and_bound_with_fake_clock() -> None:
    clock = [0.0]
    reg = MemoryRegistry(max_state_entries=2, clock=lambda: clock[0])
    await reg.put_dialog("d1", b"1", 10)
    await reg.put_dialog("d2", b"2", 20)
    with pytest.raises(RegistryFull):
        await reg.put_dialog("d3", b"3", 10)
    await reg.put_dialog("d2", b"2b", 20)  # replacing an entry is not growth
    clock[0] = 10.0
    assert await reg.get_dialog("d1") is None  # expired exactly at its deadline
    await reg.put_dialog("d3", b"3", 10)  # d1's slot was purged
    assert await reg.get_dialog("d2") == b"2b"
    clock[0] = 25.0
    assert not await reg.delete_dialog("d2")
    await reg.put_session("s", b"x", 1)
    assert await reg.get_session("s") == b"x"


async def test_heap_stays_bounded_under_refreshes() -> None:
    reg = MemoryRegistry()
    for cseq in range(1, 5000):
        await reg.register("sip:a@x", "c", cseq, [change("sip:h", 60)], NOW + cseq)
    assert len(reg._heap) <= 2 * 1 + 1024 + 1
    assert await reg.expire(NOW + 10_000, 10) == 1


# A model of §10.3 step 7 for one AOR: dict key -> (call_id, cseq, expires_at).
ops = st.lists(
    st.tuples(
        st.sampled_from(["c1", "c2"]), st.integers(1, 4),
        st.lists(st.tuples(st.sampled_from(["h1", "h2", "h3"]), st.sampled_from([0, 5, 50])),
                 max_size=3),
        st.integers(0, 20),
    ),
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(ops)
async def test_register_matches_model(sequence: list[tuple[str, int, list[tuple[str, int]], int]]
                                      ) -> None:
    reg = MemoryRegistry()
    model: dict[str, tuple[str, int, float]] = {}
    now = NOW
    for call_id, cseq, contacts, dt in sequence:
        now += dt
        live = {k: v for k, v in model.items() if v[2] > now}
        failed = any(
            k in live and live[k][0] == call_id and live[k][1] >= cseq for k, _ in contacts
        )
        try:
            got = await reg.register("sip:a@x", call_id, cseq,
                                     [change(k, e) for k, e in contacts], now)
        except OutOfOrder:
            assert failed
            continue
        assert not failed
        model = live
        for k, e in contacts:
            if e == 0:
                model.pop(k, None)
            else:
                model[k] = (call_id, cseq, now + e)
        assert {b.contact: (b.call_id, b.cseq, b.expires_at) for b in got} == model
        if contacts:  # a query leaves expired entries for the sweeper
            assert await reg.count_bindings() == len(model)


async def test_memory_budget_refuses_growth_and_leaves_nothing() -> None:
    # Room for two small AORs of one binding each, not three.
    one = MemoryRegistry()
    await one.register("sip:a@x", "c", 1, [change("sip:a@h", 600)], NOW)
    per_aor = one.charged_bytes()
    reg = MemoryRegistry(max_bytes=2 * per_aor + per_aor // 2)
    await reg.register("sip:a@x", "c", 1, [change("sip:a@h", 600)], NOW)
    await reg.register("sip:b@x", "c", 1, [change("sip:b@h", 600)], NOW)
    with pytest.raises(RegistryFull) as err:
        await reg.register("sip:c@x", "c", 1, [change("sip:c@h", 600)], NOW)
    assert err.value.bound == "memory"
    assert await reg.count_aors() == 2 and await reg.count_bindings() == 2
    assert await reg.lookup("sip:c@x", NOW) == []
    # A second, longer contact on a stored AOR grows the total too: refused as a whole.
    with pytest.raises(RegistryFull):
        await reg.register("sip:a@x", "c", 2, [change("sip:a@h", 600),
                                              change("sip:a@" + "h" * 400, 600)], NOW)
    assert len(await reg.lookup("sip:a@x", NOW)) == 1
    # A refresh that does not grow passes at the bound; removal frees room for a new AOR.
    await reg.register("sip:a@x", "c", 3, [change("sip:a@h", 900)], NOW)
    await reg.register("sip:b@x", "c", 2, [change("sip:b@h", 0)], NOW)
    await reg.register("sip:c@x", "c", 1, [change("sip:c@h", 600)], NOW)
    assert await reg.count_aors() == 2


async def test_charge_returns_to_zero_by_every_removal_path() -> None:
    reg = MemoryRegistry()
    await reg.register("sip:a@x", "c", 1, [change("sip:a@h1", 10), change("sip:a@h2", 600)], NOW)
    await reg.register("sip:b@x", "c", 1, [change("sip:b@h", 600, connection_id="w1")], NOW)
    await reg.register("sip:d@x", "c", 1, [change("sip:d@h", 600)], NOW)
    assert reg.charged_bytes() > 0
    assert await reg.expire(NOW + 11, 100) == 1            # the sweeper
    assert await reg.remove_connection("w1") == 1          # a WebSocket closed
    assert await reg.remove_binding("sip:d@x", "sip:d@h")  # the admin API
    await reg.remove_all("sip:a@x", "c", 2, NOW)          # Contact: *
    assert await reg.count_bindings() == 0
    assert reg.charged_bytes() == 0


@pytest.mark.parametrize(("per_aor", "contact_len"), [(1, 40), (10, 60), (10, 512)])
async def test_charge_is_never_below_the_measured_memory(per_aor: int, contact_len: int) -> None:
    """The budget holds only if each binding is charged at least what it really costs:
    tracemalloc counts the registry's allocations for 300 AORs, with refreshes (stale heap
    entries), and the charge must cover them; it must not overstate them twice over either."""
    import gc
    import tracemalloc

    reg = MemoryRegistry(max_bindings_per_aor=per_aor)

    def changes(a: int) -> list[ContactChange]:
        out = []
        for i in range(per_aor):
            uri = f"sip:u{a}-{i}@198.51.100.{i}:5060;transport=udp;x="
            uri += "a" * (contact_len - len(uri))
            out.append(change(uri, 600, source=f"198.51.100.{i}:5060", key=uri.upper()))
        return out

    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for cseq in (1, 2):  # the refresh leaves a stale heap entry per binding
            for a in range(300):
                # Built inside the traced region and dropped after: what the bindings keep
                # of them is counted, as it is of a parsed REGISTER.
                await reg.register(f"sip:user{a}@example.com", f"{a:08x}-0123456789@192.0.2.1",
                                   cseq, changes(a), NOW)
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    charged = reg.charged_bytes()
    assert used <= charged, (used, charged)
    assert charged < 2 * used, (used, charged)


async def test_the_charge_of_an_aor_is_its_bindings_and_aor_cost() -> None:
    # MemoryRegistry._cost spells aor_cost and binding_cost out: they must agree, for every
    # field a binding charges.
    from signaling.registry.memory import aor_cost, binding_cost

    reg = MemoryRegistry()
    got = await reg.register("sip:cost@x", "c", 1, [change("sip:a@h", 60, instance="<urn:x>",
                                                          connection_id="w9", node="n1",
                                                          path=("<sip:p1>", "<sip:p22>"))], NOW)
    assert reg.charged_bytes() == aor_cost("sip:cost@x") + binding_cost(got[0])
    assert binding_cost(got[0]) > binding_cost(
        (await MemoryRegistry().register("sip:cost@x", "c", 1, [change("sip:a@h")], NOW))[0])


# -- replication (MemoryRegistry.merge, signaling/registry/replica.py) -------------------------

def _binding(key: str, call_id: str, cseq: int, expires_at: float) -> Binding:
    return Binding(aor="sip:z@x", contact=key, q=1.0, expires_at=expires_at, call_id=call_id,
                   cseq=cseq, key=key)


async def test_merge_applies_changes_in_order_and_resolves_concurrent_ones_alike() -> None:
    a, b = MemoryRegistry(), MemoryRegistry()
    first = _binding("sip:z@1", "c", 1, 1e12)
    for r in (a, b):
        r.merge("sip:z@x", [(first, None)], [])
    # One after the other: a refresh with a new Call-ID replaces what it saw, whatever its
    # expiry (a phone that restarted and registers for less time).
    shorter = _binding("sip:z@1", "d", 1, 1e11)
    b.merge("sip:z@x", [(shorter, ("c", 1))], [])
    assert (b.stored("sip:z@x") or {})["sip:z@1"] is shorter
    # At the same time, through two replicas, neither seeing the other's change: both end
    # with the same binding, whichever order the changes arrive in.
    x, y = _binding("sip:z@1", "e", 5, 2e12), _binding("sip:z@1", "f", 1, 3e12)
    a.merge("sip:z@x", [(x, ("c", 1))], [])
    a.merge("sip:z@x", [(y, ("c", 1))], [])
    b2 = MemoryRegistry()
    b2.merge("sip:z@x", [(first, None)], [])
    b2.merge("sip:z@x", [(y, ("c", 1))], [])
    b2.merge("sip:z@x", [(x, ("c", 1))], [])
    assert (a.stored("sip:z@x") or {})["sip:z@1"] == (b2.stored("sip:z@x") or {})["sip:z@1"] == y


async def test_merge_removes_only_the_version_removed_and_a_binding_beats_a_removal() -> None:
    r = MemoryRegistry()
    old = _binding("sip:z@1", "c", 3, 1e12)
    r.merge("sip:z@x", [(old, None)], [])
    r.merge("sip:z@x", [], [("sip:z@1", ("c", 2))])  # an older version: ours stays
    assert await r.count_bindings() == 1
    newer = _binding("sip:z@1", "g", 1, 1e12)
    r.merge("sip:z@x", [(newer, ("c", 3))], [])
    r.merge("sip:z@x", [], [("sip:z@1", ("c", 3))])  # removes what another replica had seen
    assert (r.stored("sip:z@x") or {})["sip:z@1"] is newer
    r.merge("sip:z@x", [], [("sip:z@1", ("g", 1))])
    assert await r.count_bindings() == 0 and await r.count_aors() == 0
    assert r.charged_bytes() == 0
