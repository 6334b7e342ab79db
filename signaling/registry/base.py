"""The registry interface: location bindings (RFC 3261 §10), dialog state and Diameter sessions.

One interface, several engines (``memory`` for the embedded default, ``redis`` and Redis Cluster for
many nodes).  The registrar never holds state of its own: everything it needs across requests and
across nodes lives behind ``Registry``.

Rules every implementation follows:

* ``register`` applies RFC 3261 §10.3 steps 6-8 for one whole REGISTER *atomically*: either every
  contact change is applied or none is (``OutOfOrder`` / ``RegistryFull`` leave nothing behind).
  The Redis engine does it in one Lua script so two nodes racing on one AOR cannot interleave.
* A binding is identified inside its AOR by ``key``: the registrar passes the comparison form of
  the Contact URI (RFC 3261 §19.1.4) or, for RFC 5626 outbound, ``instance`` + ``reg-id``; when the
  key is empty the contact text itself is the key.  ``contact`` keeps the URI exactly as registered
  (escapes included) because that is what the 200 OK must echo (§10.3 step 8).
* Expired bindings are invisible to every read (``lookup`` filters on ``now``) even before the
  sweeper (``expire``) deletes them, so correctness never depends on the sweeper's timing.
* Every method is bounded in time; an engine that cannot answer raises ``RegistryUnavailable``
  (the registrar answers 503 + Retry-After, RFC 3261 §21.5.4), never hangs and never answers 200.
* Dialog and Diameter session state are opaque bytes with a TTL: the proxy and the Diameter
  applications own their encodings; a missing entry is a deliberate 481 / 5002 for them.
"""

from __future__ import annotations

from collections.abc import Coroutine, Sequence
from typing import Annotated, Any, ClassVar, Protocol, runtime_checkable

import msgspec

__all__ = [
    "MAX_BINDINGS_PER_AOR",
    "MAX_LIST_WINDOW",
    "MAX_STATE_BYTES",
    "Binding",
    "ContactChange",
    "DialogsInPlace",
    "OutOfOrder",
    "Registry",
    "RegistryError",
    "RegistryFull",
    "RegistryUnavailable",
    "binding_key",
    "make_binding",
    "registers_at_once",
    "sort_bindings",
]

# Bindings one AOR may hold by default (``--max-bindings-per-aor``).  RFC 3261 sets no limit;
# 10 covers a user's desk phone, mobile, softphone and a few browser tabs, while keeping the
# 200 OK (which lists them all, §10.3 step 8) and one INVITE's fan-out small.  An attacker who
# registers one AOR cannot make it cost more than this many bindings' memory.
MAX_BINDINGS_PER_AOR = 10

# Largest opaque dialog / session blob accepted.  A dialog's route set, tags, CSeqs and targets
# fit in well under 4 KiB; 16 KiB leaves room while bounding what one bad caller can store.
MAX_STATE_BYTES = 16 * 1024

# Deepest page the admin API may ask for (offset + limit).  The Redis engine merges one sorted
# page per slot bucket, so the cost grows with the window; 10,000 AORs is a screenful of pages,
# and deeper listings should filter by prefix instead.
MAX_LIST_WINDOW = 10_000


class RegistryError(Exception):
    """Base class of every error a registry raises on purpose.

    ``status`` is the SIP answer the registrar should send (RFC 3261 §21), ``retry_after`` the
    Retry-After value in seconds when the condition is transient.
    """

    status: int = 500
    reason: str = "Server Internal Error"
    retry_after: int | None = None


class OutOfOrder(RegistryError):
    """RFC 3261 §10.3 step 7: same Call-ID with a CSeq not higher than the stored one.

    The whole REGISTER is aborted, nothing is applied.  The RFC says only that "the request
    fails"; 500 is what deployed registrars answer, and the client's next REGISTER (new CSeq)
    succeeds.
    """

    status = 500
    reason = "Server Internal Error"

    def __init__(self, aor: str, key: str, stored_cseq: int, cseq: int) -> None:
        super().__init__(f"{aor}: binding {key!r} has CSeq {stored_cseq} >= {cseq}")
        self.aor = aor
        self.key = key
        self.stored_cseq = stored_cseq
        self.cseq = cseq


class RegistryFull(RegistryError):
    """A bound was reached (AORs, bindings per AOR, memory, dialogs): the registrar answers 503.

    503 + Retry-After rather than 500: the condition is one of capacity, not a fault, and it
    ends as bindings expire; 503 tells the UA to retry later or use another server (§21.5.4).
    ``bound`` names the limit for the counters (``registry_full{bound=...}``).
    """

    status = 503
    reason = "Service Unavailable"
    # Capacity frees up when bindings expire; a minute is a reasonable back-off (§21.5.4).
    retry_after = 60

    def __init__(self, message: str, bound: str = "other") -> None:
        super().__init__(message)
        self.bound = bound


class RegistryUnavailable(RegistryError):
    """The engine did not answer within its bound (down, slow, failing over): 503 + Retry-After."""

    status = 503
    reason = "Service Unavailable"
    # Redis restarts and Cluster fail-overs take seconds; a short Retry-After spreads the retries.
    retry_after = 5


class ContactChange(msgspec.Struct, frozen=True):
    """One Contact of a REGISTER, as the registrar parsed it (RFC 3261 §10.3 step 7 input).

    ``expires`` is the seconds granted (already clamped to the registrar's policy; 0 removes).
    """

    contact: str
    expires: int
    q: float = 1.0
    transport: str = "udp"
    source: str = ""
    connection_id: str | None = None
    node: str | None = None
    instance: str | None = None
    reg_id: int | None = None
    path: tuple[str, ...] = ()
    key: str = ""
    reach_source: bool = False


#: A contact URI's wire text as a binding stores it.  Checked when a binding is decoded from a
#: shared store (Redis): the registrar writes it into its 200 as is (§10.3 step 8), so a
#: corrupted value must fail there, never put a line break (a header of its own) into it.
ContactText = Annotated[str, msgspec.Meta(pattern=r"\A[^\r\n]*\Z")]


class Binding(msgspec.Struct, frozen=True):
    """A stored binding of an address-of-record to a contact (RFC 3261 §10.2.1)."""

    aor: str
    contact: ContactText
    q: float
    expires_at: float
    call_id: str
    cseq: int
    transport: str = "udp"
    source: str = ""
    connection_id: str | None = None
    node: str | None = None
    instance: str | None = None
    reg_id: int | None = None
    path: tuple[str, ...] = ()
    key: str = ""
    #: Reached at ``source`` rather than at ``contact``: an RFC 5626 UDP flow, or a client
    #: behind NAT (``protocols.sip.outbound.behind_nat``).  A field added with its default, so
    #: bindings stored before it (Redis) decode as reached at their Contact, as they were.
    reach_source: bool = False

    def remaining(self, now: float) -> int:
        """Seconds left, as the 200 OK's ``expires`` parameter (§10.3 step 8), never negative."""
        return max(0, int(self.expires_at - now + 0.5))


def binding_key(change: ContactChange) -> str:
    """The identity of a contact within its AOR: the explicit key, else the contact text."""
    return change.key or change.contact


def make_binding(
    aor: str, change: ContactChange, call_id: str, cseq: int, now: float
) -> Binding:
    """The binding a change creates or refreshes (§10.3 step 7)."""
    return Binding(
        aor=aor, contact=change.contact, q=change.q, expires_at=now + change.expires,
        call_id=call_id, cseq=cseq, transport=change.transport, source=change.source,
        connection_id=change.connection_id, node=change.node, instance=change.instance,
        reg_id=change.reg_id, path=change.path,
        key=change.key or change.contact,  # binding_key, without the call (every REGISTER)
        reach_source=change.reach_source,
    )


def sort_bindings(bindings: Sequence[Binding]) -> list[Binding]:
    """Highest q first (RFC 3261 §16.6 target order), then most recently refreshed first."""
    if len(bindings) < 2:  # one binding per AOR is the usual case: nothing to order
        return list(bindings)
    return sorted(bindings, key=lambda b: (-b.q, -b.expires_at, b.key))


@runtime_checkable
class Registry(Protocol):
    """Location service + dialog and Diameter session state (see the module docstring)."""

    #: ``register`` never waits on anything but its own bounded I/O (no queue, no lock, no
    #: round trip that another request's work can hold up), so the registrar may answer a
    #: REGISTER as it is read rather than queue it for a worker task
    #: (``SipCore.answer_at_once``, ``signaling.eager``).  Read by ``registers_at_once``:
    #: only a class's own declaration counts, so a subclass that waits on more (a test's
    #: gated store) is queued unless it says otherwise.
    registers_at_once: ClassVar[bool]

    async def register(
        self, aor: str, call_id: str, cseq: int, changes: Sequence[ContactChange], now: float
    ) -> list[Binding]:
        """Apply one REGISTER's contacts atomically (§10.3 steps 6-8).

        Per contact: a missing (or expired) binding is added when ``expires > 0``; an existing one
        with another Call-ID is updated (or removed when ``expires == 0``); with the same Call-ID
        only if ``cseq`` is higher, else ``OutOfOrder`` and nothing is applied.  Over
        ``MAX_BINDINGS_PER_AOR`` (or the engine's AOR bound): ``RegistryFull``, nothing applied.
        Returns every unexpired binding after the change, sorted by q descending.  An empty
        ``changes`` is a query (§10.3: REGISTER without Contact) and returns the bindings.
        """
        ...

    async def remove_all(self, aor: str, call_id: str, cseq: int, now: float) -> int:
        """``Contact: *`` with Expires 0 (§10.3 step 6): remove every binding, same ordering rule.

        Returns the number removed; ``OutOfOrder`` (nothing removed) if a binding with the same
        Call-ID has a CSeq not lower than ``cseq``.
        """
        ...

    async def lookup(self, aor: str, now: float) -> list[Binding]:
        """Unexpired bindings of ``aor``, highest q first (§16.5 target set)."""
        ...

    async def remove_binding(self, aor: str, key: str) -> bool:
        """Remove one binding by key (admin API, or a contact proven dead). True if it existed."""
        ...

    async def remove_connection(self, connection_id: str) -> int:
        """A connection closed (RFC 7118 §5): remove the bindings it registered, via an index.

        A binding refreshed since over another connection is kept, and so is an Outbound flow
        (a ``reg_id``, never indexed): RFC 5626 §5.3 answers 430 Flow Failed for it until it
        expires or its instance registers that reg-id again, which tells the caller's proxy
        to try the instance's other flows (``signaling.flows``).  Returns the number removed.
        """
        ...

    async def expire(self, now: float, limit: int) -> int:
        """Sweeper: delete at most ``limit`` bindings whose ``expires_at <= now``; returns count."""
        ...

    async def list_aors(self, offset: int = 0, limit: int = 100, prefix: str = "") -> list[str]:
        """AORs with stored bindings, in lexicographic order, for the admin API.

        ``ValueError`` when ``offset + limit`` exceeds ``MAX_LIST_WINDOW`` or either is negative.
        """
        ...

    async def count_aors(self) -> int:
        """AORs with stored bindings."""
        ...

    async def count_bindings(self) -> int:
        """Stored bindings (expired ones count until the sweeper removes them)."""
        ...

    async def known_user(self, aor: str) -> bool:
        """True if ``aor`` has registered before (bounded memory): 480 rather than 404."""
        ...

    async def put_dialog(self, dialog_id: str, data: bytes, ttl: float) -> None:
        """Store a dialog's opaque state for ``ttl`` seconds (replaces any previous value)."""
        ...

    async def get_dialog(self, dialog_id: str) -> bytes | None:
        """The dialog's state, or None when gone (the proxy answers 481, RFC 3261 §12.2.2)."""
        ...

    async def delete_dialog(self, dialog_id: str) -> bool:
        """Forget a dialog; True if it existed."""
        ...

    async def claim(self, key: str, ttl: float) -> bool:
        """Record ``key`` for ``ttl`` seconds; True the first time, False while it stands.
        Every node sharing the registry sees the claim (a digest nonce count used once on
        any node, RFC 7616 §3.4)."""
        ...

    async def put_session(self, session_id: str, data: bytes, ttl: float) -> None:
        """Store a Diameter session's opaque state (RFC 6733 §8) for ``ttl`` seconds."""
        ...

    async def get_session(self, session_id: str) -> bytes | None:
        """The session's state, or None (the application answers DIAMETER_UNKNOWN_SESSION_ID)."""
        ...

    async def delete_session(self, session_id: str) -> bool:
        """Forget a session; True if it existed."""
        ...

    async def ping(self) -> None:
        """Readiness: returns when the engine answers, else ``RegistryUnavailable``."""
        ...

    async def close(self) -> None:
        """Release connections; the object must not be used afterwards."""
        ...


def registers_at_once(registry: Registry) -> bool:
    """Whether ``registry``'s class itself declares ``registers_at_once`` true (see the
    protocol): a subclass inherits the value, not the promise."""
    return type(registry).__dict__.get("registers_at_once") is True


@runtime_checkable
class DialogsInPlace(Protocol):
    """An engine that stores dialogs without suspending (the replica engine's table in shared
    memory, ``signaling.registry.dialogmap``): the proxy calls these instead of spawning a task
    per write (``signaling.dialogshare``).  Each does what it can at once and returns None, or
    the rest to run as a task (a dialog too large for the table, written to the supervisor's
    registry).  ``put_dialog_nowait`` raises ``RegistryFull`` as ``put_dialog`` does."""

    def put_dialog_nowait(self, dialog_id: str, data: bytes,
                          ttl: float) -> Coroutine[Any, Any, None] | None: ...

    def delete_dialog_nowait(self, dialog_id: str) -> Coroutine[Any, Any, bool] | None: ...
