"""The wire format between ``SharedRegistry`` (a worker) and ``RegistryOwner`` (the supervisor).

One frame per message: a 4-byte big-endian length, then a msgpack array.

* request: ``[id, method, [args...]]``
* reply: ``[id, error, result]`` where ``error`` is nil or ``[kind, message, fields...]``

``METHODS`` is the table both sides read: for each ``Registry`` method, the type of its
arguments (the owner validates them with it) and the type of its result (the client decodes it
with it).  A method not in the table is refused, so the owner runs nothing but the interface.
Requests are pipelined: a client sends without waiting, and matches replies by ``id``.  The owner
answers a connection's requests in order.
"""

from __future__ import annotations

import struct
from typing import Any

import msgspec

from signaling.registry.base import (
    MAX_STATE_BYTES,
    Binding,
    ContactChange,
    OutOfOrder,
    RegistryFull,
    RegistryUnavailable,
)

__all__ = [
    "HEADER",
    "MAX_FRAME",
    "METHODS",
    "Reply",
    "Request",
    "error_fields",
    "to_exception",
]

#: Length prefix of every frame.
HEADER = struct.Struct(">I")
#: Largest frame either side accepts.  The largest legitimate message is a dialog blob
#: (``MAX_STATE_BYTES``) or a 200's worth of bindings (32 x well under 2 KiB); 4x the blob bound
#: leaves room while a corrupt length can never make a process allocate gigabytes.
MAX_FRAME = 4 * MAX_STATE_BYTES + 65_536

#: method -> (argument tuple type, result type).
METHODS: dict[str, tuple[Any, Any]] = {
    "register": (tuple[str, str, int, list[ContactChange], float], list[Binding]),
    "remove_all": (tuple[str, str, int, float], int),
    "lookup": (tuple[str, float], list[Binding]),
    "remove_binding": (tuple[str, str], bool),
    "remove_connection": (tuple[str], int),
    "expire": (tuple[float, int], int),
    "list_aors": (tuple[int, int, str], list[str]),
    "count_aors": (tuple[()], int),
    "count_bindings": (tuple[()], int),
    "known_user": (tuple[str], bool),
    "put_dialog": (tuple[str, bytes, float], None),
    "get_dialog": (tuple[str], bytes | None),
    "delete_dialog": (tuple[str], bool),
    "put_session": (tuple[str, bytes, float], None),
    "get_session": (tuple[str], bytes | None),
    "delete_session": (tuple[str], bool),
    "claim": (tuple[str, float], bool),
    "ping": (tuple[()], None),
}


class Request(msgspec.Struct, array_like=True):
    id: int
    method: str
    args: msgspec.Raw


class Reply(msgspec.Struct, array_like=True):
    id: int
    error: list[Any] | None
    result: msgspec.Raw


def error_fields(exc: Exception) -> list[Any]:
    """What the owner sends for an exception a registry raised on purpose."""
    if isinstance(exc, OutOfOrder):
        return ["out_of_order", str(exc), exc.aor, exc.key, exc.stored_cseq, exc.cseq]
    if isinstance(exc, RegistryFull):
        return ["full", str(exc)]
    if isinstance(exc, ValueError):  # list_aors beyond MAX_LIST_WINDOW: the caller's mistake
        return ["value", str(exc)]
    return ["unavailable", str(exc) or type(exc).__name__]


def to_exception(fields: list[Any]) -> Exception:
    """The client side of ``error_fields``: the exception the owner's registry raised."""
    kind = fields[0] if fields else ""
    message = str(fields[1]) if len(fields) > 1 else ""
    if kind == "out_of_order" and len(fields) == 6:
        return OutOfOrder(str(fields[2]), str(fields[3]), int(fields[4]), int(fields[5]))
    if kind == "full":
        return RegistryFull(message)
    if kind == "value":
        return ValueError(message)
    return RegistryUnavailable(f"registry owner: {message}")
