"""The admin API's request and response bodies as msgspec types.

These types are the single source of both the JSON on the wire (``msgspec.json.encode``) and the
OpenAPI document (``msgspec.json.schema_components``), so the document cannot drift from what is
served.  Query strings are typed the same way: a ``*Query`` struct is decoded from the query
string with ``strict=False`` (``"10"`` becomes ``10``) and its fields become the operation's
query parameters, with the same bounds.

Read-only views of other subsystems (``Binding``, the Diameter ``PeerInfo`` / ``SessionInfo``)
are used as they are; the dialog view is mirrored here (``DialogView``) so the API keeps its
shape even if the proxy's own ``DialogInfo`` grows fields.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import UNSET, Meta, UnsetType

from signaling.config import Config
from signaling.diameter.server import PeerInfo, SessionInfo
from signaling.registry.base import MAX_LIST_WINDOW, Binding

__all__ = [
    "LOG_LEVELS",
    "MAX_AOR_PREFIX",
    "MAX_PAGE",
    "MAX_PATH_PARAM",
    "AorBindings",
    "ConfigPatch",
    "ConfigView",
    "DialogPage",
    "DialogView",
    "DiameterPeers",
    "DiameterSessions",
    "DiameterStats",
    "ErrorBody",
    "Health",
    "PageQuery",
    "QueueStats",
    "Ready",
    "RegistrationPage",
    "RegistrationQuery",
    "SessionQuery",
    "SipStats",
    "Stats",
    "TableStats",
    "Terminated",
]

#: Items one page may hold.  A page of registrations costs one registry lookup per AOR; 1,000
#: keeps a page under a second even against Redis and its JSON under a few MB.
MAX_PAGE = 1000
#: Deepest offset: offset + limit must stay within the registry's listing window.
MAX_OFFSET = MAX_LIST_WINDOW - MAX_PAGE
#: Longest AOR prefix filter: an AOR is a SIP URI, and URIs over 1 KiB are not real ones.
MAX_AOR_PREFIX = 1024
#: Longest path parameter (AOR, binding key, dialog id), in characters.  SIP URIs and Call-IDs
#: in real use are far shorter; the bound keeps the request line within ``MAX_REQUEST_LINE``.
MAX_PATH_PARAM = 2048
#: Deepest session listing; the Diameter server's view has no offset, only a limit.
MAX_SESSIONS = 10_000
#: Python logging levels an operator may switch to live.
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")

# Bounds reused by ``ConfigPatch``; they match ``signaling.config`` validation.
_Int31 = Annotated[int, Meta(ge=1, le=2**31 - 1)]


class ErrorBody(msgspec.Struct):
    """Every error answer: a message for the operator and the HTTP status repeated."""

    error: str
    status: int


class Health(msgspec.Struct):
    """``GET /health``: the process is alive and its event loop answers."""

    status: str
    uptime: float


class Ready(msgspec.Struct):
    """``GET /ready``: each check is ``ok`` or why it failed; 503 unless all are ``ok``."""

    ready: bool
    checks: dict[str, str]


class PageQuery(msgspec.Struct, forbid_unknown_fields=False):
    offset: Annotated[int, Meta(ge=0, le=MAX_OFFSET, description="items to skip")] = 0
    limit: Annotated[int, Meta(ge=1, le=MAX_PAGE, description="items to return")] = 100


class RegistrationQuery(PageQuery, forbid_unknown_fields=False):
    prefix: Annotated[str, Meta(max_length=MAX_AOR_PREFIX,
                                description="only AORs starting with this text")] = ""


class SessionQuery(msgspec.Struct, forbid_unknown_fields=False):
    limit: Annotated[int, Meta(ge=1, le=MAX_SESSIONS, description="sessions to return")] = 100


class AorBindings(msgspec.Struct):
    """One address-of-record and its unexpired bindings, highest q first (RFC 3261 §10)."""

    aor: str
    bindings: list[Binding]


class RegistrationPage(msgspec.Struct):
    """A page of AORs in lexicographic order; ``total_aors`` is refreshed once a second."""

    offset: int
    limit: int
    prefix: str
    total_aors: int
    items: list[AorBindings]


class DialogView(msgspec.Struct):
    """A dialog through the proxy (RFC 3261 §12); times are UNIX seconds."""

    id: str
    call_id: str
    state: str
    caller: str
    callee: str
    from_tag: str
    to_tag: str
    created_at: float
    answered_at: float | None


class DialogPage(msgspec.Struct):
    offset: int
    limit: int
    counts: dict[str, int]
    items: list[DialogView]


class Terminated(msgspec.Struct):
    """The server sent BYE to both sides of the dialog (RFC 3261 §15)."""

    id: str
    terminated: bool


class DiameterPeers(msgspec.Struct):
    enabled: bool
    items: list[PeerInfo]


class DiameterSessions(msgspec.Struct):
    enabled: bool
    total: int
    items: list[SessionInfo]


class SipStats(msgspec.Struct):
    requests_received: int
    responses_sent: int
    requests_sent: int
    responses_received: int
    retransmissions: int
    rejected: int
    dropped: dict[str, int]
    shed: dict[str, int]


class DiameterStats(msgspec.Struct):
    """Requests by command name and answers by Result-Code (RFC 6733 §7.1)."""

    requests: dict[str, int]
    answers: dict[str, int]
    shed: int


class QueueStats(msgspec.Struct):
    queue_size: int
    depths: list[int]


class TableStats(msgspec.Struct):
    transactions: int
    ws_connections: int
    registered_aors: int
    registered_bindings: int
    dialogs: int
    diameter_peers: int
    diameter_sessions: int


class Stats(msgspec.Struct):
    node_id: str
    started_at: float
    uptime: float
    sip: SipStats
    registrations: dict[str, int]
    diameter: DiameterStats
    queues: QueueStats
    tables: TableStats


class ConfigView(msgspec.Struct):
    """The effective configuration (secrets masked) and the options PATCH may change."""

    config: Config
    live: list[str]


class ConfigPatch(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Options that can change while the server runs; absent ones stay as they are."""

    queue_size: Annotated[int, Meta(ge=1, le=1_000_000)] | UnsetType = UNSET
    retry_after: Annotated[int, Meta(ge=0, le=86_400)] | UnsetType = UNSET
    min_expires: _Int31 | UnsetType = UNSET
    max_expires: _Int31 | UnsetType = UNSET
    default_expires: _Int31 | UnsetType = UNSET
    max_dialogs: Annotated[int, Meta(ge=1, le=100_000_000)] | UnsetType = UNSET
    # At least a second: a shorter maximum would end every call as it is answered.
    max_dialog_duration: Annotated[float, Meta(ge=1.0, le=604_800)] | UnsetType = UNSET
    ws_max_connections: Annotated[int, Meta(ge=0, le=10_000_000)] | UnsetType = UNSET
    log_level: Annotated[str, Meta(pattern="^(debug|info|warning|error|critical)$")] \
        | UnsetType = UNSET
