"""The registry contract (RFC 3261 §10.3), run against every engine: memory, Redis, Redis Cluster.

The ``registry`` fixture (tests/signaling/registry/conftest.py) is parametrized over the engines,
so each test here runs once per engine with identical expectations.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signaling.registry import (
    MAX_BINDINGS_PER_AOR,
    Binding,
    ContactChange,
    OutOfOrder,
    Registry,
    RegistryFull,
)
from signaling.registry.base import binding_key, registers_at_once, sort_bindings
from signaling.registry.memory import MemoryRegistry

AOR = "sip:alice@example.com"
NOW = 1_800_000_000.0


def change(contact: str, expires: int = 3600, **kw: object) -> ContactChange:
    return ContactChange(contact=contact, expires=expires, **kw)  # type: ignore[arg-type]


async def test_register_then_lookup(registry: Registry) -> None:
    got = await registry.register(
        AOR, "c1", 1,
        [change("<sip:alice@10.0.0.1:5060;transport=udp>", 600, q=0.5, source="10.0.0.1:5060")],
        NOW,
    )
    assert len(got) == 1
    b = got[0]
    assert (b.aor, b.q, b.expires_at, b.call_id, b.cseq) == (AOR, 0.5, NOW + 600, "c1", 1)
    assert b.source == "10.0.0.1:5060"
    assert b.remaining(NOW + 100) == 500
    assert await registry.lookup(AOR, NOW + 1) == got
    assert await registry.known_user(AOR)
    assert not await registry.known_user("sip:nobody@example.com")


async def test_contact_text_kept_exactly(registry: Registry) -> None:
    contact = "<sip:al%69ce@[2001:db8::1]:5060;ob;+sip.instance=\"<urn:uuid:1>\">"
    got = await registry.register(AOR, "c1", 1, [change(contact)], NOW)
    assert got[0].contact == contact
    assert (await registry.lookup(AOR, NOW))[0].contact == contact


async def test_all_fields_round_trip(registry: Registry) -> None:
    c = ContactChange(
        contact="sip:a@ws.invalid;transport=ws", expires=60, q=0.7, transport="ws",
        source="127.0.0.1:40000", connection_id="conn-1", node="node-a",
        instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>", reg_id=2,
        path=("<sip:edge1;lr>", "<sip:edge2;lr>"), key="k1", reach_source=True,
    )
    [b] = await registry.register(AOR, "c1", 1, [c], NOW)
    assert b == Binding(
        aor=AOR, contact=c.contact, q=0.7, expires_at=NOW + 60, call_id="c1", cseq=1,
        transport="ws", source="127.0.0.1:40000", connection_id="conn-1", node="node-a",
        instance=c.instance, reg_id=2, path=c.path, key="k1", reach_source=True,
    )
    assert await registry.lookup(AOR, NOW) == [b]


async def test_lookup_sorted_by_q_descending(registry: Registry) -> None:
    changes = [change("sip:a@h1", q=0.1), change("sip:a@h2", q=1.0), change("sip:a@h3", q=0.5)]
    got = await registry.register(AOR, "c1", 1, changes, NOW)
    assert [b.contact for b in got] == ["sip:a@h2", "sip:a@h3", "sip:a@h1"]
    assert [b.contact for b in await registry.lookup(AOR, NOW)] == [b.contact for b in got]


async def test_query_register_without_contact(registry: Registry) -> None:
    assert await registry.register(AOR, "c1", 1, [], NOW) == []
    await registry.register(AOR, "c1", 2, [change("sip:a@h1")], NOW)
    got = await registry.register(AOR, "c9", 1, [], NOW)
    assert [b.contact for b in got] == ["sip:a@h1"]


async def test_refresh_same_call_id_higher_cseq(registry: Registry) -> None:
    await registry.register(AOR, "c1", 1, [change("sip:a@h1", 60)], NOW)
    got = await registry.register(AOR, "c1", 2, [change("sip:a@h1", 120)], NOW + 30)
    assert [(b.cseq, b.expires_at) for b in got] == [(2, NOW + 150)]


@pytest.mark.parametrize("cseq", [1, 0])
async def test_same_call_id_not_higher_cseq_fails_whole_request(
    registry: Registry, cseq: int
) -> None:
    await registry.register(AOR, "c1", 1, [change("sip:a@h1", 60)], NOW)
    with pytest.raises(OutOfOrder) as err:
        await registry.register(
            AOR, "c1", cseq, [change("sip:a@h2", 60), change("sip:a@h1", 0)], NOW + 1
        )
    assert err.value.status == 500
    # Nothing applied: h2 not added, h1 not removed.
    assert [b.contact for b in await registry.lookup(AOR, NOW + 1)] == ["sip:a@h1"]


async def test_other_call_id_updates_regardless_of_cseq(registry: Registry) -> None:
    await registry.register(AOR, "c1", 50, [change("sip:a@h1", 60)], NOW)
    got = await registry.register(AOR, "c2", 1, [change("sip:a@h1", 90)], NOW)
    assert [(b.call_id, b.cseq, b.expires_at) for b in got] == [("c2", 1, NOW + 90)]


async def test_expires_zero_removes_one_binding(registry: Registry) -> None:
    await registry.register(AOR, "c1", 1, [change("sip:a@h1"), change("sip:a@h2")], NOW)
    got = await registry.register(AOR, "c2", 1, [change("sip:a@h1", 0)], NOW)
    assert [b.contact for b in got] == ["sip:a@h2"]
    assert await registry.count_bindings() == 1


async def test_expires_zero_for_unknown_contact_is_noop(registry: Registry) -> None:
    assert await registry.register(AOR, "c1", 1, [change("sip:a@h1", 0)], NOW) == []
    assert await registry.count_aors() == 0
    assert await registry.list_aors() == []


async def test_contact_listed_twice_in_one_request(registry: Registry) -> None:
    await registry.register(AOR, "c1", 1, [change("sip:a@h1", 60)], NOW)
    got = await registry.register(
        AOR, "c1", 2, [change("sip:a@h1", 60), change("sip:a@h1", 120)], NOW
    )
    assert [b.expires_at for b in got] == [NOW + 120]


async def test_explicit_key_identifies_binding(registry: Registry) -> None:
    # RFC 5626: the same instance re-registering from a new address replaces its binding.
    await registry.register(AOR, "c1", 1, [change("sip:a@10.0.0.1", key="urn:1/1")], NOW)
    got = await registry.register(AOR, "c1", 2, [change("sip:a@10.0.0.2", key="urn:1/1")], NOW)
    assert [b.contact for b in got] == ["sip:a@10.0.0.2"]
    assert await registry.remove_binding(AOR, "urn:1/1")
    assert await registry.lookup(AOR, NOW) == []


async def test_remove_all(registry: Registry) -> None:
    await registry.register(AOR, "c1", 1, [change("sip:a@h1"), change("sip:a@h2")], NOW)
    assert await registry.remove_all(AOR, "c2", 1, NOW) == 2
    assert await registry.lookup(AOR, NOW) == []
    assert await registry.count_aors() == 0
    assert await registry.count_bindings() == 0
    assert await registry.remove_all(AOR, "c2", 2, NOW) == 0
    # The user registered before: still known (480, not 404).
    assert await registry.known_user(AOR)


async def test_remove_all_out_of_order(registry: Registry) -> None:
    await registry.register(AOR, "c1", 5, [change("sip:a@h1"), change("sip:a@h2")], NOW)
    with pytest.raises(OutOfOrder):
        await registry.remove_all(AOR, "c1", 5, NOW)
    assert len(await registry.lookup(AOR, NOW)) == 2
    assert await registry.remove_all(AOR, "c1", 6, NOW) == 2


async def test_expired_bindings_invisible_and_ignored_for_ordering(registry: Registry) -> None:
    await registry.register(AOR, "c1", 5, [change("sip:a@h1", 10)], NOW)
    assert await registry.lookup(AOR, NOW + 10) == []
    # The expired binding no longer constrains CSeq ordering: it is treated as absent.
    got = await registry.register(AOR, "c1", 1, [change("sip:a@h1", 10)], NOW + 11)
    assert [b.cseq for b in got] == [1]


async def test_expire_sweeps_in_bounded_batches(registry: Registry) -> None:
    for i in range(25):
        await registry.register(f"sip:u{i}@example.com", "c", 1, [change("sip:x@h", 10 + i)], NOW)
    await registry.register(AOR, "c", 1, [change("sip:a@h1", 1000)], NOW)
    assert await registry.count_bindings() == 26
    removed = 0
    while True:
        n = await registry.expire(NOW + 100, 10)
        assert n <= 10
        if n == 0:
            break
        removed += n
    assert removed == 25
    assert await registry.count_bindings() == 1
    assert await registry.list_aors() == [AOR]
    assert await registry.expire(NOW + 100, 10) == 0


async def test_expire_skips_refreshed_binding(registry: Registry) -> None:
    await registry.register(AOR, "c1", 1, [change("sip:a@h1", 10)], NOW)
    await registry.register(AOR, "c1", 2, [change("sip:a@h1", 100)], NOW)
    assert await registry.expire(NOW + 50, 100) == 0
    assert len(await registry.lookup(AOR, NOW + 50)) == 1
    assert await registry.expire(NOW + 100, 100) == 1
    assert await registry.count_bindings() == 0


async def test_known_user_survives_every_way_of_losing_bindings(registry: Registry) -> None:
    users = [f"sip:k{i}@example.com" for i in range(4)]
    for aor in users:
        await registry.register(aor, "c", 1, [change("sip:h", 10, connection_id=aor)], NOW)
    await registry.register(users[0], "c", 2, [change("sip:h", 0)], NOW)
    await registry.remove_binding(users[1], "sip:h")
    await registry.remove_connection(users[2])
    assert await registry.expire(NOW + 20, 100) == 1
    assert await registry.count_aors() == 0
    for aor in users:
        assert await registry.known_user(aor)
    assert not await registry.known_user("sip:never@example.com")


async def test_remove_connection(registry: Registry) -> None:
    await registry.register(
        AOR, "c1", 1, [change("sip:a@ws1", connection_id="w1"), change("sip:a@ws2",
                                                                       connection_id="w2")], NOW
    )
    await registry.register(
        "sip:bob@example.com", "c3", 1, [change("sip:b@ws1", connection_id="w1")], NOW
    )
    assert await registry.remove_connection("w1") == 2
    assert [b.contact for b in await registry.lookup(AOR, NOW)] == ["sip:a@ws2"]
    assert await registry.lookup("sip:bob@example.com", NOW) == []
    assert await registry.remove_connection("w1") == 0
    assert await registry.remove_connection("unknown") == 0


async def test_remove_connection_keeps_outbound_flows(registry: Registry) -> None:
    """RFC 5626 §5.3: a flow's binding outlives its connection (430 until it expires or is
    registered again); a plain binding of the same connection goes with it."""
    flow = change("sip:a@ws1", connection_id="w1", instance='"<urn:uuid:1>"', reg_id=1,
                  key="urn:uuid:1;reg-id=1")
    await registry.register(AOR, "c1", 1, [flow, change("sip:a@ws9", connection_id="w1")], NOW)
    assert await registry.remove_connection("w1") == 1
    [kept] = await registry.lookup(AOR, NOW)
    assert (kept.contact, kept.reg_id, kept.connection_id) == ("sip:a@ws1", 1, "w1")
    assert await registry.remove_connection("w1") == 0


async def test_remove_connection_keeps_binding_moved_to_other_connection(
    registry: Registry,
) -> None:
    await registry.register(AOR, "c1", 1, [change("sip:a@ws", connection_id="w1")], NOW)
    await registry.register(AOR, "c1", 2, [change("sip:a@ws", connection_id="w2")], NOW)
    assert await registry.remove_connection("w1") == 0
    assert [b.connection_id for b in await registry.lookup(AOR, NOW)] == ["w2"]
    assert await registry.remove_connection("w2") == 1


async def test_remove_binding(registry: Registry) -> None:
    await registry.register(AOR, "c1", 1, [change("sip:a@h1"), change("sip:a@h2")], NOW)
    assert await registry.remove_binding(AOR, "sip:a@h1")
    assert not await registry.remove_binding(AOR, "sip:a@h1")
    assert not await registry.remove_binding("sip:nobody@x", "sip:a@h1")
    assert [b.contact for b in await registry.lookup(AOR, NOW)] == ["sip:a@h2"]


async def test_bindings_per_aor_bound(registry: Registry) -> None:
    full = [change(f"sip:a@h{i}") for i in range(MAX_BINDINGS_PER_AOR)]
    await registry.register(AOR, "c1", 1, full, NOW)
    with pytest.raises(RegistryFull) as err:
        await registry.register(AOR, "c2", 1, [change("sip:a@extra")], NOW)
    assert err.value.status == 503
    assert err.value.retry_after
    assert await registry.count_bindings() == MAX_BINDINGS_PER_AOR
    # Replacing one inside the same request stays within the bound.
    got = await registry.register(AOR, "c2", 1, [change("sip:a@h0", 0), change("sip:a@new")], NOW)
    assert len(got) == MAX_BINDINGS_PER_AOR


async def test_list_and_count_aors(registry: Registry) -> None:
    for user in ["carol", "alice", "bob", "alan"]:
        await registry.register(f"sip:{user}@example.com", "c", 1,
                                [change("sip:x@h1"), change("sip:x@h2")], NOW)
    assert await registry.count_aors() == 4
    assert await registry.count_bindings() == 8
    assert await registry.list_aors() == [
        "sip:alan@example.com", "sip:alice@example.com", "sip:bob@example.com",
        "sip:carol@example.com",
    ]
    assert await registry.list_aors(offset=1, limit=2) == [
        "sip:alice@example.com", "sip:bob@example.com",
    ]
    assert await registry.list_aors(prefix="sip:al") == [
        "sip:alan@example.com", "sip:alice@example.com",
    ]
    assert await registry.list_aors(prefix="sip:al", offset=1) == ["sip:alice@example.com"]


async def test_dialog_state(registry: Registry) -> None:
    assert await registry.get_dialog("d1") is None
    await registry.put_dialog("d1", b"\x00state\xff", 30)
    assert await registry.get_dialog("d1") == b"\x00state\xff"
    await registry.put_dialog("d1", b"v2", 30)
    assert await registry.get_dialog("d1") == b"v2"
    assert await registry.delete_dialog("d1")
    assert not await registry.delete_dialog("d1")
    assert await registry.get_dialog("d1") is None


async def test_claims_are_granted_once_while_they_stand(registry: Registry) -> None:
    assert await registry.claim("nc:abc:1", 30)
    assert not await registry.claim("nc:abc:1", 30)       # used: a replay, on any node
    assert await registry.claim("nc:abc:2", 30)           # another count of the same nonce
    assert await registry.get_dialog("nc:abc:1") is None  # claims are their own namespace
    assert await registry.claim("nc:short:1", 0.2)
    await asyncio.sleep(0.5)
    assert await registry.claim("nc:short:1", 30)         # expired: the key is free again


async def test_session_state_separate_from_dialogs(registry: Registry) -> None:
    await registry.put_session("s;1;2", b"cc", 30)
    assert await registry.get_dialog("s;1;2") is None
    assert await registry.get_session("s;1;2") == b"cc"
    assert await registry.delete_session("s;1;2")
    assert await registry.get_session("s;1;2") is None


async def test_state_blob_bound(registry: Registry) -> None:
    from signaling.registry import MAX_STATE_BYTES

    with pytest.raises(RegistryFull):
        await registry.put_dialog("big", b"x" * (MAX_STATE_BYTES + 1), 30)
    assert await registry.get_dialog("big") is None


async def test_ping(registry: Registry) -> None:
    await registry.ping()


def test_helpers() -> None:
    assert binding_key(change("sip:a@h")) == "sip:a@h"
    assert binding_key(change("sip:a@h", key="k")) == "k"
    b1 = Binding(aor=AOR, contact="x", q=0.5, expires_at=1, call_id="c", cseq=1)
    b2 = Binding(aor=AOR, contact="y", q=0.9, expires_at=1, call_id="c", cseq=1)
    assert sort_bindings([b1, b2]) == [b2, b1]
    assert b1.remaining(5) == 0


# A model of RFC 3261 §10.3 steps 6-8 for one AOR: key -> (call_id, cseq, expires_at).
_requests = st.lists(
    st.tuples(
        st.sampled_from(["c1", "c2"]), st.integers(1, 4),
        st.one_of(
            st.none(),  # Contact: * with Expires: 0
            st.lists(st.tuples(st.sampled_from(["h1", "h2", "h3"]),
                               st.sampled_from([0, 5, 50])), max_size=3),
        ),
        st.integers(0, 20),
    ),
    max_size=10,
)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_requests)
async def test_engine_matches_model(
    registry: Registry,
    requests: list[tuple[str, int, list[tuple[str, int]] | None, int]],
) -> None:
    """Every engine (the Lua scripts included) agrees with a direct reading of §10.3."""
    aor = f"sip:{uuid.uuid4().hex}@example.com"  # one fixture instance serves all examples
    model: dict[str, tuple[str, int, float]] = {}
    now = NOW
    for call_id, cseq, contacts, dt in requests:
        now += dt
        live = {k: v for k, v in model.items() if v[2] > now}
        keys = list(live) if contacts is None else [k for k, _ in contacts]
        fails = any(
            k in live and live[k][0] == call_id and live[k][1] >= cseq for k in keys
        )
        try:
            if contacts is None:
                removed = await registry.remove_all(aor, call_id, cseq, now)
            else:
                got = await registry.register(
                    aor, call_id, cseq, [change(k, e) for k, e in contacts], now
                )
        except OutOfOrder:
            assert fails
            continue
        assert not fails
        model = live
        if contacts is None:
            assert removed == len(live)
            model = {}
            got = []
        for k, e in contacts or []:
            if e == 0:
                model.pop(k, None)
            else:
                model[k] = (call_id, cseq, now + e)
        expected = dict(model)
        assert {b.contact: (b.call_id, b.cseq, b.expires_at) for b in got} == expected
        looked = await registry.lookup(aor, now)
        assert {b.contact: (b.call_id, b.cseq, b.expires_at) for b in looked} == expected


async def test_list_window_bound(registry: Registry) -> None:
    from signaling.registry import MAX_LIST_WINDOW

    with pytest.raises(ValueError):
        await registry.list_aors(offset=MAX_LIST_WINDOW, limit=1)
    with pytest.raises(ValueError):
        await registry.list_aors(offset=-1)
    assert await registry.list_aors(offset=0, limit=MAX_LIST_WINDOW) == []


async def test_state_expires_after_ttl(registry: Registry) -> None:
    import asyncio

    await registry.put_dialog("short", b"x", 0.2)
    await registry.put_session("short", b"y", 0.2)
    await registry.put_dialog("long", b"z", 60)
    await asyncio.sleep(0.35)
    assert await registry.get_dialog("short") is None
    assert await registry.get_session("short") is None
    assert await registry.get_dialog("long") == b"z"


@pytest.mark.parametrize(
    "contact", ["sip:a@h>\r\nX-Injected: 1", "sip:a@h\nx", "sip:a@h\r", "sip:a@h\n"])
def test_a_stored_contact_that_is_not_a_uri_text_fails_to_decode(contact: str) -> None:
    """The registrar copies a binding's contact text into its 200 as is: a corrupted value
    in a shared store must fail at decoding, never reach the wire."""
    import msgspec

    from signaling.registry.base import Binding

    good = msgspec.json.encode(Binding("sip:a@h", "sip:a@192.0.2.1:5060", 1.0, 0.0, "c", 1))
    decoder = msgspec.json.Decoder(Binding)
    assert decoder.decode(good).contact == "sip:a@192.0.2.1:5060"
    bad = good.replace(b'"sip:a@192.0.2.1:5060"', msgspec.json.encode(contact))
    with pytest.raises(msgspec.ValidationError):
        decoder.decode(bad)


# Whether each engine's REGISTER may be answered as it is read (``Registry.registers_at_once``):
# the in-memory engine, Redis (its link bounds the wait) and the workers' replica do; the
# owner-held registry (a round trip to one process for every worker) does not.
AT_ONCE = {"memory": True, "shared": False, "replica": True, "redis": True, "cluster": True}


async def test_each_engine_declares_whether_it_registers_at_once(
        registry: Registry, request: pytest.FixtureRequest) -> None:
    engine = request.node.callspec.params["registry"]
    assert "registers_at_once" in type(registry).__dict__  # its own class says it
    assert registers_at_once(registry) is AT_ONCE[engine]


def test_a_subclass_registers_at_once_only_if_it_says_so_itself() -> None:
    """A subclass inherits the value, not the promise: one that waits on more (a gate, a
    lock) would otherwise be answered at once without anyone deciding it."""
    class Gated(MemoryRegistry):
        pass

    class Declared(MemoryRegistry):
        registers_at_once = True

    class Refused(MemoryRegistry):
        registers_at_once = False

    assert MemoryRegistry.registers_at_once and Gated.registers_at_once  # inherited value
    assert registers_at_once(MemoryRegistry())
    assert not registers_at_once(Gated())
    assert registers_at_once(Declared())
    assert not registers_at_once(Refused())
