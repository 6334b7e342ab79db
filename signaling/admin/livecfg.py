"""Changing limits while the server runs (``PATCH /api/v1/config``).

Only options that every reader picks up at its next use can change live; the others (listeners,
worker count, timers baked into transactions) need a restart and are refused as read-only.  A
patch is all or nothing: it is decoded and bounds-checked by ``ConfigPatch`` (the same bounds the
OpenAPI document shows), checked against the rest of the configuration, and only then applied.

``APPLY`` maps each live option to what besides ``cfg`` must learn the new value; components
that read ``cfg`` on every use (retry_after in the SIP core, ws_max_connections in the WebSocket
transport) need nothing more.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import msgspec

from signaling.admin.schemas import ConfigPatch
from signaling.admin.view import ServerView
from signaling.config import OPTIONS

__all__ = ["APPLY", "LIVE_OPTIONS", "PatchError", "apply_patch", "decode_patch"]

log = logging.getLogger(__name__)


class PatchError(Exception):
    """The patch was refused; nothing was changed.  The message is for the operator.

    ``status`` is the HTTP answer: 400 when the body itself is wrong (not JSON, an unknown or
    read-only option, a value out of its bounds), 409 when each value is acceptable but the
    result would contradict the rest of the configuration (RFC 9110 §15.5.10: a conflict with
    the current state of the resource).
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


#: A live option's value, as ``ConfigPatch`` checked it.
Value = int | float | str


def _queue_size(server: ServerView, value: Value) -> None:
    server.live.resize_queues(int(value))


def _registrar(attr: str) -> Callable[[ServerView, Value], None]:
    def apply(server: ServerView, value: Value) -> None:
        server.live.set_registrar_limit(attr, int(value))
    return apply


def _max_dialogs(server: ServerView, value: Value) -> None:
    server.live.set_max_dialogs(int(value))


def _log_level(server: ServerView, value: Value) -> None:
    logging.getLogger().setLevel(str(value).upper())


def _nothing(server: ServerView, value: Value) -> None:
    """The option is read from ``cfg`` at each use."""


APPLY: dict[str, Callable[[ServerView, Value], None]] = {
    "queue_size": _queue_size,
    "retry_after": _nothing,
    "min_expires": _registrar("min_expires"),
    "max_expires": _registrar("max_expires"),
    "default_expires": _registrar("default_expires"),
    "max_dialogs": _max_dialogs,
    "max_dialog_duration": _nothing,
    "ws_max_connections": _nothing,
    "log_level": _log_level,
}
#: The options PATCH accepts, in the order the API lists them.
LIVE_OPTIONS = tuple(APPLY)


def decode_patch(body: bytes) -> dict[str, Value]:
    """The changes a PATCH body asks for, validated; ``PatchError`` says why not."""
    try:
        raw = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise PatchError(f"body is not JSON: {exc}") from None
    except RecursionError:
        # Deeply nested arrays ("[[[[..." within the body bound): msgspec stops at its
        # recursion limit.  No option is nested at all: the client's error, not ours.
        raise PatchError("body is not JSON of options: nested too deeply") from None
    if not isinstance(raw, dict):
        raise PatchError("body must be a JSON object of option: value")
    for key in raw:
        if key not in APPLY:
            kind = "read-only (needs a restart)" if key in OPTIONS else "unknown"
            raise PatchError(f"{key!r}: {kind} option")
    try:
        patch = msgspec.convert({k: _integral(v) for k, v in raw.items()}, ConfigPatch)
    except msgspec.ValidationError as exc:
        raise PatchError(str(exc)) from None
    return {k: v for k, v in msgspec.structs.asdict(patch).items()
            if v is not msgspec.UNSET}


def _integral(value: object) -> object:
    """JSON Schema counts 118.0 as an integer (2020-12 §6.1.1); msgspec's int does not."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def apply_patch(server: ServerView, changes: dict[str, Value]) -> None:
    """Check ``changes`` against the rest of the configuration, then apply them all."""
    cfg = server.cfg
    merged = {name: int(changes.get(name, getattr(cfg, name)))
              for name in ("min_expires", "default_expires", "max_expires")}
    if not merged["min_expires"] <= merged["default_expires"] <= merged["max_expires"]:
        # RFC 3261 §10.3 step 7 needs min <= default <= max to pick an expiry at all.
        raise PatchError("expires: need min_expires <= default_expires <= max_expires", 409)
    for name, value in changes.items():
        setattr(cfg, name, value)
        APPLY[name](server, value)
        log.info("admin: %s set to %r", name, value)
