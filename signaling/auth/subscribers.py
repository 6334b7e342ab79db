"""Subscribers: who may register and call, as digest HA1 hashes only.

One interface (``SubscriberStore``), two stores as the registry has: ``FileSubscribers`` (the
embedded default, a JSON-lines file) and ``PgSubscribers`` (PostgreSQL, in
``signaling.auth.pgstore``).  ``make_store`` picks one from the ``subscribers`` option.

A subscriber is a user part and a realm (the domain it belongs to, RFC 3261 §22.1) with
HA1 = H(user:realm:password) for each digest algorithm.  The password is hashed as soon as it
arrives (``Subscriber.create``) and never kept, written or logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Protocol

from protocols.sip.digest import ALGORITHMS, ha1

__all__ = ["FileSubscribers", "Subscriber", "SubscriberError", "SubscriberStore",
           "make_store", "split_identity"]

log = logging.getLogger(__name__)

#: Seconds between checks of the file's modification time (a stat per lookup would be wasted).
RELOAD_CHECK = 1.0


class SubscriberError(Exception):
    """The store cannot answer (file unreadable, database unreachable) or bad input."""


def split_identity(identity: str) -> tuple[str, str]:
    """``alice@example.com`` (``sip:`` allowed) -> (``alice``, ``example.com``)."""
    text = identity.strip()
    if text.lower().startswith(("sip:", "sips:")):
        text = text.split(":", 1)[1]
    user, at, realm = text.rpartition("@")
    bad = (not at or not user or not realm or ":" in user
           or any(c in text for c in " \t\r\n;<>\"")
           or (":" in realm and not (realm.startswith("[") and realm.endswith("]"))))
    if bad:
        raise SubscriberError(f"expected USER@DOMAIN, got {identity!r}")
    return user, realm.lower()


@dataclass(frozen=True, slots=True)
class Subscriber:
    user: str
    realm: str
    ha1: dict[str, str]  # algorithm -> hex HA1

    @classmethod
    def create(cls, user: str, realm: str, password: str) -> Subscriber:
        if not password:
            raise SubscriberError("empty password")
        return cls(user, realm, {alg: ha1(alg, user, realm, password) for alg in ALGORITHMS})

    @property
    def identity(self) -> str:
        return f"{self.user}@{self.realm}"

    def to_json(self) -> dict[str, object]:
        return {"user": self.user, "realm": self.realm, "ha1": dict(self.ha1)}

    @classmethod
    def from_json(cls, data: object) -> Subscriber:
        if not isinstance(data, dict):
            raise SubscriberError("not an object")
        user, realm, hashes = data.get("user"), data.get("realm"), data.get("ha1")
        if not isinstance(user, str) or not isinstance(realm, str) or not isinstance(hashes, dict):
            raise SubscriberError("needs user, realm and ha1")
        clean = {str(k): str(v).lower() for k, v in hashes.items() if k in ALGORITHMS}
        return cls(user, realm.lower(), clean)


class SubscriberStore(Protocol):
    """What the authenticator, the CLI and the admin API need of a store."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def get(self, user: str, realm: str) -> Subscriber | None: ...

    async def put(self, sub: Subscriber) -> bool:
        """Create or replace; True when it was created."""
        ...

    async def remove(self, user: str, realm: str) -> bool: ...

    async def list(self, offset: int, limit: int) -> list[Subscriber]: ...

    async def count(self) -> int: ...


class FileSubscribers:
    """Subscribers in a JSON-lines file, held in memory and reloaded when the file changes.

    The server notices a change (``signaling subscribers add`` from another process, an edit)
    within ``RELOAD_CHECK`` seconds (by modification time and size).  Writes go to a temporary
    file renamed over the old one, so a reader never sees half a file.  A file that does not
    exist is an empty store: a new server starts with no subscribers.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._subs: dict[tuple[str, str], Subscriber] = {}
        self._stamp: tuple[float, int] | None = None
        self._checked = float("-inf")
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        self.reload()

    async def close(self) -> None:
        return None

    def _file_stamp(self) -> tuple[float, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_mtime, st.st_size)

    def reload(self) -> int:
        """Read the file again; returns the number of subscribers."""
        stamp = self._file_stamp()
        subs: dict[tuple[str, str], Subscriber] = {}
        if stamp is not None:
            try:
                with open(self.path, encoding="utf-8") as fh:
                    lines = fh.readlines()
            except OSError as exc:
                raise SubscriberError(f"{self.path}: {exc.strerror}") from None
            for number, line in enumerate(lines, 1):
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                try:
                    sub = Subscriber.from_json(json.loads(line))
                except (ValueError, SubscriberError) as exc:
                    log.warning("%s line %d ignored: %s", self.path, number, exc)
                    continue
                subs[(sub.user, sub.realm)] = sub
        self._subs = subs
        self._stamp = stamp
        return len(subs)

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now - self._checked >= RELOAD_CHECK:
            self._reload_if_changed(now)

    def _reload_if_changed(self, now: float) -> None:
        self._checked = now
        if self._file_stamp() != self._stamp:
            try:
                count = self.reload()
            except SubscriberError as exc:
                log.warning("subscribers not reloaded: %s", exc)
                return
            log.info("subscribers reloaded from %s: %d", self.path, count)

    async def get(self, user: str, realm: str) -> Subscriber | None:
        return self.find(user, realm.lower())

    def find(self, user: str, realm: str) -> Subscriber | None:
        """``get`` without a coroutine: the file is in memory, and the authenticator looks a
        subscriber up for every authenticated request (``realm`` in lower case, as it has
        it; the time check of ``_maybe_reload`` inlined, one Python call less)."""
        now = time.monotonic()
        if now - self._checked >= RELOAD_CHECK:
            self._reload_if_changed(now)
        return self._subs.get((user, realm))

    async def put(self, sub: Subscriber) -> bool:
        async with self._lock:
            self.reload()
            created = (sub.user, sub.realm) not in self._subs
            self._subs[(sub.user, sub.realm)] = sub
            self._write()
        return created

    async def remove(self, user: str, realm: str) -> bool:
        async with self._lock:
            self.reload()
            found = self._subs.pop((user, realm.lower()), None) is not None
            if found:
                self._write()
        return found

    async def list(self, offset: int, limit: int) -> list[Subscriber]:
        self._maybe_reload()
        ordered = sorted(self._subs.values(), key=lambda s: (s.realm, s.user))
        return ordered[offset:offset + limit]

    async def count(self) -> int:
        self._maybe_reload()
        return len(self._subs)

    def _write(self) -> None:
        directory = os.path.dirname(os.path.abspath(self.path))
        fd, tmp = tempfile.mkstemp(prefix=".subscribers-", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                for sub in sorted(self._subs.values(), key=lambda s: (s.realm, s.user)):
                    fh.write(json.dumps(sub.to_json(), sort_keys=True) + "\n")
            os.chmod(tmp, 0o600)  # hashes are password equivalents for their realm
            os.replace(tmp, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise SubscriberError(f"{self.path}: {exc.strerror}") from None
        self._stamp = self._file_stamp()


def make_store(spec: str) -> SubscriberStore:
    """A file path, or a ``postgresql://`` DSN."""
    if spec.startswith(("postgres://", "postgresql://")):
        from signaling.auth.pgstore import PgSubscribers
        return PgSubscribers(spec)
    return FileSubscribers(spec)
