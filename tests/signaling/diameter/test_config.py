"""DiameterConfig derives the CER/CEA capabilities, the policy and the dictionary."""

from __future__ import annotations

import ipaddress

import pytest

from protocols.diameter.creditcontrol import (
    CCSession,
    CreditDecision,
    CreditRequest,
    QuotaPolicy,
)
from protocols.diameter.dictionary import base_dictionary
from signaling.diameter.config import DEFAULT_PORT, DiameterConfig


def test_defaults() -> None:
    cfg = DiameterConfig()
    assert cfg.port == DEFAULT_PORT == 3868
    caps = cfg.capabilities()
    assert caps.auth_application_ids == {4}
    assert caps.host_ip_addresses == (ipaddress.IPv4Address("127.0.0.1"),)
    assert isinstance(cfg.credit_policy(), QuotaPolicy)
    assert cfg.make_dictionary().command(272) is not None


def test_overrides() -> None:
    def policy(request: CreditRequest, session: CCSession) -> CreditDecision:
        return CreditDecision(2001)

    d = base_dictionary()
    cfg = DiameterConfig(host="10.1.2.3", policy=policy, dictionary=d,
                         host_ip_addresses=("::1",), vendor_id=10415)
    assert cfg.capabilities().host_ip_addresses == (ipaddress.IPv6Address("::1"),)
    assert cfg.capabilities().vendor_id == 10415
    assert cfg.credit_policy() is policy and cfg.make_dictionary() is d
    assert DiameterConfig(host="10.1.2.3").capabilities().host_ip_addresses == (
        ipaddress.IPv4Address("10.1.2.3"),)


@pytest.mark.parametrize("bad", [
    {"watchdog_interval": 5.0}, {"workers": 0}, {"queue_size": 1, "workers": 2},
    {"max_connections": 0}, {"tcc": 0.0}, {"max_peer_sessions": 0}, {"doic_interval": 0.0},
    {"reserved_connections": 1024}, {"reserved_connections": -1},
])
def test_bad_values_fail_at_construction(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        DiameterConfig(**bad)  # type: ignore[arg-type]
