"""Build a registry from the ``--registry`` URL."""

from __future__ import annotations

from signaling.registry.base import MAX_BINDINGS_PER_AOR, Registry
from signaling.registry.memory import MAX_BINDING_BYTES, MemoryRegistry

__all__ = ["make_registry"]


def make_registry(url: str, *, max_bindings_per_aor: int = MAX_BINDINGS_PER_AOR,
                  max_bytes: int = MAX_BINDING_BYTES, max_dialogs: int = 200_000) -> Registry:
    """``memory`` -> in-process; ``redis://`` / ``rediss://`` -> Redis; ``redis+cluster://`` or
    ``?cluster=1`` -> Redis Cluster; ``?prefix=NAME`` sets the key prefix (default ``sig``) so
    several deployments can share one Redis; ``replica+unix:///DIR`` -> a replica kept in step
    through a supervisor's hub (``signaling.registry.replica``) and ``shared+unix:///PATH`` ->
    the registry a supervisor owns (``signaling.registry.shared``); the supervisor sets these
    for its workers.
    ``ValueError`` (a configuration error) otherwise.

    Nothing connects here: the Redis engines connect lazily, so a server can start while Redis
    is still coming up (its readiness probe uses ``Registry.ping``).

    ``max_dialogs`` sizes the replica's dialog table (``--max-dialogs``: each worker's bound).

    ``max_bytes`` bounds the memory engine only: Redis bounds itself with its ``maxmemory``
    (an OOM answer is ``RegistryFull``, 503, as the memory engine's budget is).
    """
    if url == "memory":
        return MemoryRegistry(max_bindings_per_aor=max_bindings_per_aor, max_bytes=max_bytes)
    if url.startswith(("redis://", "rediss://", "redis+cluster://", "rediss+cluster://")):
        from signaling.registry.redis import RedisRegistry

        return RedisRegistry.from_url(url, max_bindings_per_aor=max_bindings_per_aor)
    if url.startswith("replica+unix://"):
        from signaling.registry.replica import ReplicaRegistry

        return ReplicaRegistry(url.removeprefix("replica+unix://"),
                               max_bindings_per_aor=max_bindings_per_aor, max_bytes=max_bytes,
                               max_dialogs=max_dialogs)
    if url.startswith("shared+unix://"):
        from signaling.registry.shared import SharedRegistry

        return SharedRegistry(url.removeprefix("shared+unix://"))
    raise ValueError(f"unsupported registry URL {url!r}: use 'memory' or 'redis://host:port'")
