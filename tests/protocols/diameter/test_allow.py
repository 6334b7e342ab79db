"""Allowed peers: the entry syntax and who the policy admits (RFC 6733 §5.3, issue 20)."""

from __future__ import annotations

import ipaddress

import pytest

from protocols.diameter.allow import AllowedPeer, PeerPolicy, parse_allowed_peer


@pytest.mark.parametrize(("text", "entry"), [
    ("pcef1.example.net", AllowedPeer(origin_host="pcef1.example.net")),
    ("PCEF1.example.net@10.0.0.5", AllowedPeer(
        origin_host="pcef1.example.net", network=ipaddress.ip_network("10.0.0.5/32"))),
    ("*@10.1.0.0/16", AllowedPeer(network=ipaddress.ip_network("10.1.0.0/16"))),
    ("realm:Example.NET@2001:db8::/32", AllowedPeer(
        origin_realm="example.net", network=ipaddress.ip_network("2001:db8::/32"))),
    ("any", AllowedPeer()),
])
def test_parse(text: str, entry: AllowedPeer) -> None:
    assert parse_allowed_peer(text) == entry


@pytest.mark.parametrize("text", ["", "@10.0.0.1", "host@not-an-ip", "host@10.0.0.0/33",
                                  "bad host", "realm:", "any@"])
def test_parse_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_allowed_peer(text)


def test_pinned_name_is_refused_from_elsewhere_even_under_a_wildcard() -> None:
    policy = PeerPolicy([parse_allowed_peer("pcef1@10.0.0.5"),
                         parse_allowed_peer("*@10.0.0.0/24")])
    assert policy.admits("pcef1", "r", "10.0.0.5")
    assert not policy.admits("pcef1", "r", "10.0.0.9")  # the name belongs to its entry
    assert policy.admits("pcef2", "r", "10.0.0.9")  # any other name from the subnet
    assert not policy.admits("pcef2", "r", "10.0.1.9")
    assert not policy.admits("pcef1", "r", "not an address")


def test_realm_entry() -> None:
    policy = PeerPolicy([parse_allowed_peer("realm:ops.example")])
    assert policy.admits("a.ops.example", "OPS.example", "192.0.2.1")
    assert not policy.admits("a.ops.example", "other.example", "192.0.2.1")


def test_default_is_loopback_and_configured_peers() -> None:
    policy = PeerPolicy(None, [("ocs.example", "192.0.2.7", 3868), ("dns.example", "ocs", 3868)])
    assert policy.admits("anyone", "r", "127.0.0.1")
    assert policy.admits("anyone", "r", "::1")
    assert policy.admits("anyone", "r", "::ffff:127.0.0.1")  # IPv4-mapped on a dual stack
    assert not policy.admits("anyone", "r", "192.0.2.99")
    assert policy.admits("ocs.example", "r", "192.0.2.7")
    assert not policy.admits("ocs.example", "r", "192.0.2.8")  # pinned to its address
    assert policy.admits("dns.example", "r", "198.51.100.1")  # a DNS name cannot pin
    assert policy.known_address("192.0.2.7") and policy.known_address("127.0.0.1")
    assert not policy.known_address("192.0.2.8")


def test_any_admits_everyone_but_reserves_nothing() -> None:
    policy = PeerPolicy([parse_allowed_peer("any")])
    assert policy.admits("x", "y", "203.0.113.5")
    assert not policy.known_address("203.0.113.5")
