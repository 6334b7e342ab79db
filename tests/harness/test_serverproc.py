"""The harness's port picking: blocks of consecutive free ports, never handed out twice."""

from __future__ import annotations

import os
import random
import socket

import pytest

from harness import serverproc
from harness.serverproc import SERVER_PORTS, free_udp_port, free_udp_ports


def test_a_block_is_free_and_inside_the_range() -> None:
    first = free_udp_ports(4)
    assert SERVER_PORTS[0] <= first and first + 3 <= SERVER_PORTS[1]
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(4)]
    try:
        for i, s in enumerate(socks):
            s.bind(("127.0.0.1", first + i))  # every port of the block binds at once
    finally:
        for s in socks:
            s.close()


def test_ports_of_a_block_are_not_handed_out_again() -> None:
    first = free_udp_ports(4)
    block = set(range(first, first + 4))
    later = {free_udp_port() for _ in range(200)}
    assert not block & later


def test_a_block_skips_a_port_held_by_someone_else(monkeypatch: pytest.MonkeyPatch) -> None:
    held = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for port in range(SERVER_PORTS[0] + 5000, SERVER_PORTS[1]):
        try:
            held.bind(("127.0.0.1", port))
            break
        except OSError:
            continue
    taken = held.getsockname()[1]
    # The first block tried would hold the taken port as its third: it must be passed over.
    tries = iter([taken - 2, taken + 1])
    # Blocks handed out by earlier tests of this process must not decide for the held port.
    monkeypatch.setattr(serverproc, "_taken", set())
    monkeypatch.setattr(random, "randint", lambda a, b: next(tries))
    try:
        assert free_udp_ports(4) == taken + 1
    finally:
        held.close()


def test_servers_get_the_test_switches_but_no_exported_configuration(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGNALING_DOMAIN", "exported.example")
    monkeypatch.setenv("SIGNALING_TEST_CHECK_EDITS", "1")
    env = serverproc.server_env()
    assert [k for k in env if k.startswith("SIGNALING_")] == ["SIGNALING_TEST_CHECK_EDITS"]
    assert env["PATH"] == os.environ["PATH"]
