"""The Diameter dictionary: AVP, command and application definitions.

``base_dictionary()`` holds the base protocol (RFC 6733 §4.5 AVPs, §3.1 commands),
Credit-Control (RFC 4006 §8 AVPs, §3 commands; RFC 8506 keeps the same codes) and the DOIC
AVPs (RFC 7683 §7).  A dictionary is
an ordinary object, so the user extends it with ``register_avp``, ``register_command`` and
``register_application``; registering a different definition under a taken key is a
``LocalProtocolError`` rather than a silent overwrite.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from protocols.diameter.codec import Avp, encode_avps
from protocols.diameter.constants import AVP_FLAG_M, AVP_FLAG_V
from protocols.diameter.datatypes import AvpType, decode_value, decoder, encode_value
from protocols.diameter.errors import LocalProtocolError
from protocols.diameter.fastenum import FastEnum

__all__ = [
    "ANY_APPLICATION",
    "ApplicationDef",
    "AvpDef",
    "CommandDef",
    "Dictionary",
    "MRule",
    "base_dictionary",
]

# Marks a command usable in every application (e.g. RAR/STR/ASR, RFC 6733 §8).
ANY_APPLICATION: frozenset[int] = frozenset()


class MRule(FastEnum):
    """What the definition says of the M bit (the flag rules tables of §4.5 and RFC 4006 §8)."""

    MUST = "must"
    MAY = "may"
    MUST_NOT = "must-not"


@dataclass(frozen=True, slots=True)
class AvpDef:
    code: int
    name: str
    type: AvpType
    vendor_id: int = 0
    m_rule: MRule = MRule.MUST
    # Legal values of an Enumerated AVP; ``None`` accepts any 32-bit value.
    enum_values: frozenset[int] | None = None
    # The type's value decoder, resolved once (see ``datatypes.decoder``).
    decode: Callable[[bytes], Any] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "decode", decoder(self.type))

    @property
    def default_flags(self) -> int:
        flags = AVP_FLAG_M if self.m_rule is MRule.MUST else 0
        return flags | (AVP_FLAG_V if self.vendor_id else 0)


@dataclass(frozen=True, slots=True)
class CommandDef:
    code: int
    name: str
    # Applications the command belongs to; ``ANY_APPLICATION`` for the session commands.
    applications: frozenset[int]
    # The PXY marker of the command's ABNF: whether the P bit is allowed (§3.2).
    proxiable: bool
    # AVP codes (vendor 0) that the ABNF marks as required with { } or < > (§3.2).
    request_required: tuple[int, ...] = ()
    answer_required: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class ApplicationDef:
    id: int
    name: str
    vendor_id: int = 0


class Dictionary:
    """AVPs by (code, vendor) and by name, commands by code, applications by id."""

    def __init__(self) -> None:
        self._avps: dict[tuple[int, int], AvpDef] = {}
        self._by_name: dict[str, AvpDef] = {}
        self._commands: dict[int, CommandDef] = {}
        self._applications: dict[int, ApplicationDef] = {}

    # -- registration -------------------------------------------------------------------

    def register_avp(self, defn: AvpDef) -> None:
        key = (defn.code, defn.vendor_id)
        old = self._avps.get(key) or self._by_name.get(defn.name)
        if old is not None and old != defn:
            raise LocalProtocolError(f"AVP {defn.name} conflicts with {old.name}")
        self._avps[key] = defn
        self._by_name[defn.name] = defn

    def register_command(self, defn: CommandDef) -> None:
        old = self._commands.get(defn.code)
        if old is not None and old != defn:
            raise LocalProtocolError(f"command {defn.code} is already {old.name}")
        self._commands[defn.code] = defn

    def register_application(self, defn: ApplicationDef) -> None:
        old = self._applications.get(defn.id)
        if old is not None and old != defn:
            raise LocalProtocolError(f"application {defn.id} is already {old.name}")
        self._applications[defn.id] = defn

    def copy(self) -> Dictionary:
        new = Dictionary()
        new._avps = dict(self._avps)
        new._by_name = dict(self._by_name)
        new._commands = dict(self._commands)
        new._applications = dict(self._applications)
        return new

    # -- lookup -------------------------------------------------------------------------

    def avp(self, code: int, vendor_id: int = 0) -> AvpDef | None:
        return self._avps.get((code, vendor_id))

    def avp_named(self, name: str) -> AvpDef:
        try:
            return self._by_name[name]
        except KeyError:
            raise LocalProtocolError(f"no AVP named {name}") from None

    def command(self, code: int) -> CommandDef | None:
        return self._commands.get(code)

    def application(self, app_id: int) -> ApplicationDef | None:
        return self._applications.get(app_id)

    def avps(self) -> list[AvpDef]:
        return list(self._avps.values())

    def commands(self) -> list[CommandDef]:
        return list(self._commands.values())

    # -- building and reading AVPs ------------------------------------------------------

    def make(self, name: str, value: Any) -> Avp:
        """An AVP with the definition's flags; Grouped takes a list of child AVPs."""
        defn = self.avp_named(name)
        if defn.type is AvpType.GROUPED:
            data = encode_avps(list(value))
        else:
            data = encode_value(defn.type, value)
        return Avp(defn.code, defn.default_flags, data, defn.vendor_id)

    def value(self, avp: Avp) -> Any:
        """The typed value of a known AVP (children for Grouped); raises ``AvpValueError``."""
        defn = self._avps.get((avp.code, avp.vendor_id))
        if defn is None:
            raise LocalProtocolError(f"AVP {avp.code}/{avp.vendor_id} is not in the dictionary")
        if defn.type is AvpType.GROUPED:
            return avp.children()
        return decode_value(defn.type, avp.data)


# -- the base protocol and Credit-Control ---------------------------------------------------

_T = AvpType
_MUST, _MAY, _NOT = MRule.MUST, MRule.MAY, MRule.MUST_NOT

# (code, name, type, M rule, enumerated values) — RFC 6733 §4.5 table.
_BASE_AVPS: tuple[tuple[int, str, AvpType, MRule, Iterable[int] | None], ...] = (
    (85, "Acct-Interim-Interval", _T.UNSIGNED32, _MUST, None),
    (483, "Accounting-Realtime-Required", _T.ENUMERATED, _MUST, (1, 2, 3)),
    (50, "Acct-Multi-Session-Id", _T.UTF8STRING, _MUST, None),
    (485, "Accounting-Record-Number", _T.UNSIGNED32, _MUST, None),
    (480, "Accounting-Record-Type", _T.ENUMERATED, _MUST, (1, 2, 3, 4)),
    (44, "Acct-Session-Id", _T.OCTET_STRING, _MUST, None),
    (287, "Accounting-Sub-Session-Id", _T.UNSIGNED64, _MUST, None),
    (259, "Acct-Application-Id", _T.UNSIGNED32, _MUST, None),
    (258, "Auth-Application-Id", _T.UNSIGNED32, _MUST, None),
    (274, "Auth-Request-Type", _T.ENUMERATED, _MUST, (1, 2, 3)),
    (291, "Authorization-Lifetime", _T.UNSIGNED32, _MUST, None),
    (276, "Auth-Grace-Period", _T.UNSIGNED32, _MUST, None),
    (277, "Auth-Session-State", _T.ENUMERATED, _MUST, (0, 1)),
    (285, "Re-Auth-Request-Type", _T.ENUMERATED, _MUST, (0, 1)),
    (25, "Class", _T.OCTET_STRING, _MUST, None),
    (293, "Destination-Host", _T.DIAMETER_IDENTITY, _MUST, None),
    (283, "Destination-Realm", _T.DIAMETER_IDENTITY, _MUST, None),
    (273, "Disconnect-Cause", _T.ENUMERATED, _MUST, (0, 1, 2)),
    (281, "Error-Message", _T.UTF8STRING, _NOT, None),
    (294, "Error-Reporting-Host", _T.DIAMETER_IDENTITY, _NOT, None),
    (55, "Event-Timestamp", _T.TIME, _MUST, None),
    (297, "Experimental-Result", _T.GROUPED, _MUST, None),
    (298, "Experimental-Result-Code", _T.UNSIGNED32, _MUST, None),
    (279, "Failed-AVP", _T.GROUPED, _MUST, None),
    (267, "Firmware-Revision", _T.UNSIGNED32, _NOT, None),
    (257, "Host-IP-Address", _T.ADDRESS, _MUST, None),
    (299, "Inband-Security-Id", _T.UNSIGNED32, _MUST, None),
    (272, "Multi-Round-Time-Out", _T.UNSIGNED32, _MUST, None),
    (264, "Origin-Host", _T.DIAMETER_IDENTITY, _MUST, None),
    (296, "Origin-Realm", _T.DIAMETER_IDENTITY, _MUST, None),
    (278, "Origin-State-Id", _T.UNSIGNED32, _MUST, None),
    (269, "Product-Name", _T.UTF8STRING, _NOT, None),
    (280, "Proxy-Host", _T.DIAMETER_IDENTITY, _MUST, None),
    (284, "Proxy-Info", _T.GROUPED, _MUST, None),
    (33, "Proxy-State", _T.OCTET_STRING, _MUST, None),
    (292, "Redirect-Host", _T.DIAMETER_URI, _MUST, None),
    (261, "Redirect-Host-Usage", _T.ENUMERATED, _MUST, range(7)),
    (262, "Redirect-Max-Cache-Time", _T.UNSIGNED32, _MUST, None),
    (268, "Result-Code", _T.UNSIGNED32, _MUST, None),
    (282, "Route-Record", _T.DIAMETER_IDENTITY, _MUST, None),
    (263, "Session-Id", _T.UTF8STRING, _MUST, None),
    (27, "Session-Timeout", _T.UNSIGNED32, _MUST, None),
    (270, "Session-Binding", _T.UNSIGNED32, _MUST, None),
    (271, "Session-Server-Failover", _T.ENUMERATED, _MUST, (0, 1, 2, 3)),
    (265, "Supported-Vendor-Id", _T.UNSIGNED32, _MUST, None),
    (295, "Termination-Cause", _T.ENUMERATED, _MUST, None),
    (1, "User-Name", _T.UTF8STRING, _MUST, None),
    (266, "Vendor-Id", _T.UNSIGNED32, _MUST, None),
    (260, "Vendor-Specific-Application-Id", _T.GROUPED, _MUST, None),
    (300, "E2E-Sequence", _T.GROUPED, _MUST, None),
)

# RFC 4006 §8 table (RFC 8506 §8 keeps codes, types and flag rules).
_CC_AVPS: tuple[tuple[int, str, AvpType, MRule, Iterable[int] | None], ...] = (
    (411, "CC-Correlation-Id", _T.OCTET_STRING, _MAY, None),
    (412, "CC-Input-Octets", _T.UNSIGNED64, _MUST, None),
    (413, "CC-Money", _T.GROUPED, _MUST, None),
    (414, "CC-Output-Octets", _T.UNSIGNED64, _MUST, None),
    (415, "CC-Request-Number", _T.UNSIGNED32, _MUST, None),
    (416, "CC-Request-Type", _T.ENUMERATED, _MUST, (1, 2, 3, 4)),
    (417, "CC-Service-Specific-Units", _T.UNSIGNED64, _MUST, None),
    (418, "CC-Session-Failover", _T.ENUMERATED, _MUST, (0, 1)),
    (419, "CC-Sub-Session-Id", _T.UNSIGNED64, _MUST, None),
    (420, "CC-Time", _T.UNSIGNED32, _MUST, None),
    (421, "CC-Total-Octets", _T.UNSIGNED64, _MUST, None),
    (454, "CC-Unit-Type", _T.ENUMERATED, _MUST, range(6)),
    (422, "Check-Balance-Result", _T.ENUMERATED, _MUST, (0, 1)),
    (423, "Cost-Information", _T.GROUPED, _MUST, None),
    (424, "Cost-Unit", _T.UTF8STRING, _MUST, None),
    (426, "Credit-Control", _T.ENUMERATED, _MUST, (0, 1)),
    (427, "Credit-Control-Failure-Handling", _T.ENUMERATED, _MUST, (0, 1, 2)),
    (425, "Currency-Code", _T.UNSIGNED32, _MUST, None),
    (428, "Direct-Debiting-Failure-Handling", _T.ENUMERATED, _MUST, (0, 1)),
    (429, "Exponent", _T.INTEGER32, _MUST, None),
    (449, "Final-Unit-Action", _T.ENUMERATED, _MUST, (0, 1, 2)),
    (430, "Final-Unit-Indication", _T.GROUPED, _MUST, None),
    (431, "Granted-Service-Unit", _T.GROUPED, _MUST, None),
    (453, "G-S-U-Pool-Identifier", _T.UNSIGNED32, _MUST, None),
    (457, "G-S-U-Pool-Reference", _T.GROUPED, _MUST, None),
    (456, "Multiple-Services-Credit-Control", _T.GROUPED, _MUST, None),
    (455, "Multiple-Services-Indicator", _T.ENUMERATED, _MUST, (0, 1)),
    (432, "Rating-Group", _T.UNSIGNED32, _MUST, None),
    (433, "Redirect-Address-Type", _T.ENUMERATED, _MUST, (0, 1, 2, 3)),
    (434, "Redirect-Server", _T.GROUPED, _MUST, None),
    (435, "Redirect-Server-Address", _T.UTF8STRING, _MUST, None),
    (436, "Requested-Action", _T.ENUMERATED, _MUST, (0, 1, 2, 3)),
    (437, "Requested-Service-Unit", _T.GROUPED, _MUST, None),
    (438, "Restriction-Filter-Rule", _T.IP_FILTER_RULE, _MUST, None),
    (461, "Service-Context-Id", _T.UTF8STRING, _MUST, None),
    (439, "Service-Identifier", _T.UNSIGNED32, _MUST, None),
    (440, "Service-Parameter-Info", _T.GROUPED, _MAY, None),
    (441, "Service-Parameter-Type", _T.UNSIGNED32, _MAY, None),
    (442, "Service-Parameter-Value", _T.OCTET_STRING, _MAY, None),
    (443, "Subscription-Id", _T.GROUPED, _MUST, None),
    (444, "Subscription-Id-Data", _T.UTF8STRING, _MUST, None),
    (450, "Subscription-Id-Type", _T.ENUMERATED, _MUST, range(5)),
    (452, "Tariff-Change-Usage", _T.ENUMERATED, _MUST, (0, 1, 2)),
    (451, "Tariff-Time-Change", _T.TIME, _MUST, None),
    (445, "Unit-Value", _T.GROUPED, _MUST, None),
    (446, "Used-Service-Unit", _T.GROUPED, _MUST, None),
    (458, "User-Equipment-Info", _T.GROUPED, _MAY, None),
    (459, "User-Equipment-Info-Type", _T.ENUMERATED, _MAY, range(4)),
    (460, "User-Equipment-Info-Value", _T.OCTET_STRING, _MAY, None),
    (447, "Value-Digits", _T.INTEGER64, _MUST, None),
    (448, "Validity-Time", _T.UNSIGNED32, _MUST, None),
)

_SESSION_ANSWER = (263, 268, 264, 296)

# Required AVPs from each command's ABNF (RFC 6733 §5.3.1, §5.4.1, §5.5.1, §8.3.1, §8.4.1,
# §8.5.1, §9.7.1; RFC 4006 §3.1, §3.2).
_COMMANDS: tuple[CommandDef, ...] = (
    CommandDef(257, "Capabilities-Exchange", frozenset({0}), False,
               (264, 296, 257, 266, 269), (268, 264, 296, 257, 266, 269)),
    CommandDef(280, "Device-Watchdog", frozenset({0}), False, (264, 296), (268, 264, 296)),
    CommandDef(282, "Disconnect-Peer", frozenset({0}), False, (264, 296, 273), (268, 264, 296)),
    CommandDef(258, "Re-Auth", ANY_APPLICATION, True,
               (263, 264, 296, 283, 293, 258, 285), _SESSION_ANSWER),
    CommandDef(275, "Session-Termination", ANY_APPLICATION, True,
               (263, 264, 296, 283, 258, 295), _SESSION_ANSWER),
    CommandDef(274, "Abort-Session", ANY_APPLICATION, True,
               (263, 264, 296, 283, 293, 258), _SESSION_ANSWER),
    CommandDef(271, "Accounting", frozenset({3}), True,
               (263, 264, 296, 283, 480, 485), (*_SESSION_ANSWER, 480, 485)),
    CommandDef(272, "Credit-Control", frozenset({4}), True,
               (263, 264, 296, 283, 258, 461, 416, 415), (*_SESSION_ANSWER, 258, 416, 415)),
)

# DOIC (RFC 7683 §7.8: M bit not required, so nodes without DOIC ignore them).
_DOIC_AVPS: tuple[tuple[int, str, AvpType, MRule, Iterable[int] | None], ...] = (
    (621, "OC-Supported-Features", _T.GROUPED, _MAY, None),
    (622, "OC-Feature-Vector", _T.UNSIGNED64, _MAY, None),
    (623, "OC-OLR", _T.GROUPED, _MAY, None),
    (624, "OC-Sequence-Number", _T.UNSIGNED64, _MAY, None),
    (625, "OC-Validity-Duration", _T.UNSIGNED32, _MAY, None),
    (626, "OC-Report-Type", _T.ENUMERATED, _MAY, (0, 1)),
    (627, "OC-Reduction-Percentage", _T.UNSIGNED32, _MAY, None),
)

_APPLICATIONS = (
    ApplicationDef(0, "Diameter Common Messages"),
    ApplicationDef(3, "Diameter Base Accounting"),
    ApplicationDef(4, "Diameter Credit Control"),
)


def base_dictionary() -> Dictionary:
    """A fresh dictionary of the base protocol, Credit-Control and DOIC; safe to extend."""
    d = Dictionary()
    for code, name, avp_type, m_rule, values in _BASE_AVPS + _CC_AVPS + _DOIC_AVPS:
        enum = frozenset(values) if values is not None else None
        d.register_avp(AvpDef(code, name, avp_type, 0, m_rule, enum))
    for command in _COMMANDS:
        d.register_command(command)
    for app in _APPLICATIONS:
        d.register_application(app)
    return d
