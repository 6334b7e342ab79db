"""Dictionary content and user extension."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.diameter.codec import Message, decode_message
from protocols.diameter.constants import AVP_FLAG_M, AVP_FLAG_V, FLAG_R, AvpCode, CommandCode
from protocols.diameter.datatypes import AvpType
from protocols.diameter.dictionary import (
    ApplicationDef,
    AvpDef,
    CommandDef,
    Dictionary,
    MRule,
    base_dictionary,
)
from protocols.diameter.errors import LocalProtocolError
from tests.protocols.diameter.test_datatypes import VALUES


def test_base_and_credit_control_are_present() -> None:
    d = base_dictionary()
    assert d.avp(AvpCode.ORIGIN_HOST) is not None
    gsu = d.avp(AvpCode.GRANTED_SERVICE_UNIT)
    assert gsu is not None and gsu.type is AvpType.GROUPED
    assert d.avp_named("CC-Request-Type").enum_values == frozenset({1, 2, 3, 4})
    ccr = d.command(CommandCode.CREDIT_CONTROL)
    assert ccr is not None and ccr.proxiable and 4 in ccr.applications
    cer = d.command(CommandCode.CAPABILITIES_EXCHANGE)
    assert cer is not None and not cer.proxiable
    app = d.application(4)
    assert app is not None and app.name == "Diameter Credit Control"
    assert len(d.avps()) > 90 and len(d.commands()) == 8


def test_make_and_value() -> None:
    d = base_dictionary()
    host = d.make("Host-IP-Address", ipaddress.IPv4Address("127.0.0.1"))
    assert host.flags == AVP_FLAG_M and d.value(host) == ipaddress.IPv4Address("127.0.0.1")
    product = d.make("Product-Name", "x")
    assert product.flags == 0  # §4.5: Product-Name MUST NOT have M
    group = d.make("Granted-Service-Unit", [d.make("CC-Time", 60)])
    assert [d.value(c) for c in d.value(group)] == [60]


def test_user_extension() -> None:
    d = base_dictionary()
    d.register_application(ApplicationDef(16777238, "Gx", 10415))
    d.register_avp(AvpDef(1027, "IP-CAN-Type", AvpType.ENUMERATED, 10415, MRule.MUST,
                          frozenset(range(8))))
    d.register_command(CommandDef(400, "Custom", frozenset({16777238}), True, (263,)))
    avp = d.make("IP-CAN-Type", 5)
    assert avp.flags == AVP_FLAG_M | AVP_FLAG_V and avp.vendor_id == 10415
    assert d.value(avp) == 5
    c = d.command(400)
    assert c is not None and c.name == "Custom"
    # Re-registering the same definition is fine, a different one is refused.
    d.register_avp(AvpDef(1027, "IP-CAN-Type", AvpType.ENUMERATED, 10415, MRule.MUST,
                          frozenset(range(8))))
    with pytest.raises(LocalProtocolError):
        d.register_avp(AvpDef(1027, "IP-CAN-Type", AvpType.UNSIGNED32, 10415))
    with pytest.raises(LocalProtocolError):
        d.register_command(CommandDef(272, "Other", frozenset({4}), True))
    with pytest.raises(LocalProtocolError):
        d.register_application(ApplicationDef(4, "Other"))
    # The base dictionary is untouched by a copy's extension.
    assert base_dictionary().command(400) is None
    assert d.copy().command(400) is not None


def test_unknown_names_are_local_errors() -> None:
    d = base_dictionary()
    with pytest.raises(LocalProtocolError):
        d.avp_named("No-Such-AVP")
    from protocols.diameter.codec import Avp

    with pytest.raises(LocalProtocolError):
        d.value(Avp(99999, 0, b""))


def _typed_dictionary() -> tuple[Dictionary, dict[AvpType, str]]:
    """The base dictionary plus vendor AVPs for the types it lacks (Float32/Float64)."""
    d = base_dictionary()
    d.register_avp(AvpDef(1, "Test-Float32", AvpType.FLOAT32, 99, MRule.MAY))
    d.register_avp(AvpDef(2, "Test-Float64", AvpType.FLOAT64, 99, MRule.MAY))
    names: dict[AvpType, str] = {}
    for defn in d.avps():
        names.setdefault(defn.type, defn.name)
    return d, names


TYPED, TYPE_NAMES = _typed_dictionary()


@given(st.lists(st.sampled_from(sorted(TYPE_NAMES.values())).flatmap(
    lambda name: st.tuples(st.just(name), VALUES[TYPED.avp_named(name).type])), max_size=12))
def test_typed_message_round_trip(items: list[tuple[str, object]]) -> None:
    """Every data type, through a whole message on the wire and back to typed values."""
    d = TYPED
    avps = []
    for name, value in items:
        if d.avp_named(name).type is AvpType.GROUPED:
            value = [d.make("CC-Time", 7)]
        avps.append(d.make(name, value))
    msg = Message(272, FLAG_R, 4, 1, 2, avps)
    back = decode_message(msg.encode())
    assert back == msg
    for (name, value), avp in zip(items, back.avps, strict=True):
        decoded = d.value(avp)
        if d.avp_named(name).type is AvpType.GROUPED:
            assert [d.value(c) for c in decoded] == [7]
        else:
            assert decoded == value


def test_every_type_is_covered() -> None:
    assert set(TYPE_NAMES) == set(AvpType)
