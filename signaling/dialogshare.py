"""Confirmed dialogs in the shared registry, so another node or worker can route them.

A dialog confirmed here is written to the registry (Redis, or with ``--processes N`` the
worker's table in shared memory, ``signaling.registry.dialogmap``) with a TTL of its maximum
duration plus the linger time, and deleted when it ends; an in-dialog request for a dialog this
node does not hold loads it from there (fail-over, a worker taking over a slot).  With the
in-process registry nobody else can read it, so nothing is written.

Writes never hold a call up.  Into the worker's table they are made at once, a copy into
shared memory (``registry.base.DialogsInPlace``: no task, no round trip); to Redis each is a
task, bounded (``MAX_PENDING_WRITES``); beyond the bound, and when the registry fails, the write
is dropped and counted: the dialog still works on this node, only fail-over loses it.  A load
that fails or finds garbage is a deliberate 481 upstream (the caller decides), never a crash.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from protocols.sip.message import Request
from signaling.dialogs import DialogTable, DialogTableFull, ProxyDialog, dialog_key
from signaling.metrics import FastCounter
from signaling.registry.base import DialogsInPlace, Registry, RegistryError

__all__ = ["MAX_PENDING_WRITES", "SharedDialogs"]

#: Dialog writes to the shared registry in flight at once.  Far above what a healthy Redis
#: leaves pending (a round trip is ~0.1 ms), small enough that a dead one cannot pile up tasks.
MAX_PENDING_WRITES = 10_000


class SharedDialogs:
    """The proxy's dialogs as the shared registry holds them (see the module docstring)."""

    def __init__(self, registry: Registry, enabled: bool, ttl: float,
                 events: FastCounter) -> None:
        self.registry = registry
        #: Only when other nodes or workers can read the registry (not the in-process one).
        self.enabled = enabled
        self.ttl = ttl
        self.events = events
        #: The registry again when it writes dialogs in place (the replica engine), else None.
        self._in_place = registry if isinstance(registry, DialogsInPlace) else None
        self._pending: set[asyncio.Task[None]] = set()

    async def load(self, req: Request, table: DialogTable, now: float,
                   deadline: float) -> ProxyDialog | None:
        """The dialog ``req`` belongs to, from the registry into ``table``; None if absent."""
        for tag in (req.from_.tag, req.to.tag):
            if not tag:
                continue
            try:  # the registry bounds every call itself (registry/base.py)
                data = await self.registry.get_dialog(dialog_key(req.call_id, tag))
            except RegistryError:
                self.events.inc("dialog_load_failed")
                return None
            if data is None:
                continue
            try:
                dialog = ProxyDialog.restore(data, now)
            except ValueError:
                self.events.inc("dialog_load_corrupt")
                return None
            dialog.deadline = deadline
            try:
                table.add(dialog)
            except DialogTableFull:
                return None
            self.events.inc("dialog_loaded")
            return dialog
        return None

    def share(self, dialog: ProxyDialog) -> None:
        """Put a confirmed dialog in the registry for the others."""
        if not self.enabled:
            return
        if self._in_place is None:
            self._spawn(self.registry.put_dialog(dialog.id, dialog.snapshot(), self.ttl))
            return
        try:
            rest = self._in_place.put_dialog_nowait(dialog.id, dialog.snapshot(), self.ttl)
        except RegistryError:
            self.events.inc("dialog_share_failed")
            return
        if rest is not None:
            self._spawn(rest)

    def unshare(self, dialog: ProxyDialog) -> None:
        if not self.enabled:
            return
        if self._in_place is None:
            self._spawn(self.registry.delete_dialog(dialog.id))
            return
        rest = self._in_place.delete_dialog_nowait(dialog.id)
        if rest is not None:
            self._spawn(rest)

    async def flush(self, timeout: float) -> None:
        """Wait, at most ``timeout`` seconds, for the writes in flight.  A node that stops
        (a reload's old worker finishing its INVITEs) confirms dialogs to its last moment;
        the BYEs of those calls reach the node that takes over, which loads them from here."""
        if self._pending:
            await asyncio.wait(list(self._pending), timeout=timeout)

    def _spawn(self, aw: Coroutine[Any, Any, object]) -> None:
        if len(self._pending) >= MAX_PENDING_WRITES:
            aw.close()
            self.events.inc("dialog_share_dropped")
            return
        task = asyncio.get_running_loop().create_task(self._guard(aw))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _guard(self, aw: Coroutine[Any, Any, object]) -> None:
        try:
            await aw
        except RegistryError:
            self.events.inc("dialog_share_failed")
