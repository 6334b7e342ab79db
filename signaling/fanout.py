"""Forking fan-out per destination (issue 20, item 4: one INVITE forked into 32 branches).

A proxy forks an INVITE to every binding of the target user (RFC 3261 §16.6).  Bindings are
whatever a registering client said, so without a bound one 1 kB INVITE becomes as many
INVITEs to one address as the AOR has bindings: a reflection aimed at that host.  The proxy
keeps at most ``limit`` branches per destination (a host for UDP, a connection for WebSocket),
the first ones in target order, so the highest-q bindings (§16.6 order) are the ones kept.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

__all__ = ["cap_per_destination"]

T = TypeVar("T")


def cap_per_destination(targets: Sequence[T], limit: int,
                        destination: Callable[[T], Hashable]) -> tuple[list[T], int]:
    """The first ``limit`` targets of each destination, in order, and how many were dropped."""
    seen: dict[Hashable, int] = {}
    kept: list[T] = []
    for target in targets:
        key = destination(target)
        n = seen.get(key, 0)
        if n < limit:
            seen[key] = n + 1
            kept.append(target)
    return kept, len(targets) - len(kept)
