"""Location service, dialog and Diameter session state behind one interface.

``make_registry(url)`` picks the engine from the ``--registry`` option: ``memory`` (the embedded
default), ``redis://host:port/db`` (one Redis) or ``redis+cluster://host:port`` (Redis Cluster;
``redis://...?cluster=1`` works too).
"""

from __future__ import annotations

from signaling.registry.base import (
    MAX_BINDINGS_PER_AOR,
    MAX_LIST_WINDOW,
    MAX_STATE_BYTES,
    Binding,
    ContactChange,
    OutOfOrder,
    Registry,
    RegistryError,
    RegistryFull,
    RegistryUnavailable,
    binding_key,
)
from signaling.registry.factory import make_registry
from signaling.registry.memory import MemoryRegistry

__all__ = [
    "MAX_BINDINGS_PER_AOR",
    "MAX_LIST_WINDOW",
    "MAX_STATE_BYTES",
    "Binding",
    "ContactChange",
    "MemoryRegistry",
    "OutOfOrder",
    "Registry",
    "RegistryError",
    "RegistryFull",
    "RegistryUnavailable",
    "binding_key",
    "make_registry",
]
