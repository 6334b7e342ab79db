"""The admin API's route table: one row per operation, the source of the app and its document.

Each ``Route`` names its handler, the body type of its success answer, its query type, its
request body type and the error statuses it can give.  ``signaling.admin.app`` registers the
rows with aiohttp and ``signaling.admin.openapi`` turns the same rows into the OpenAPI document,
so a route cannot be served without being documented (a test checks both directions).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

import signaling.admin.auth_api as a
import signaling.admin.schemas as s
from signaling.admin.docs import DOCS_PATH, SCRIPT_PATH, docs_page, docs_script
from signaling.admin.handlers import AdminApi
from signaling.admin.middleware import API_PREFIX, OPENAPI_PATH

__all__ = ["OPENAPI_PATH", "Route", "route_table"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_FIRST = "$response.body#/items/0"


@dataclass(frozen=True, slots=True)
class Route:
    """One operation (see the module docstring)."""

    method: str
    path: str
    operation_id: str
    summary: str
    handler: Handler
    response: type | None
    status: int = 200
    query: type | None = None
    body: type | None = None
    errors: tuple[int, ...] = ()
    tag: str = "api"
    #: OpenAPI links (§4.8.20): name -> (operationId, {parameter: runtime expression}), so
    #: clients and contract testers can follow a listing to the items it names.
    links: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...] = ()
    #: Success body media type; ``None`` with ``response`` None means a JSON object.
    media_type: str = "application/json"

    @property
    def secured(self) -> bool:
        # The document is open (the docs page reads it); everything else under the prefix
        # needs the token.
        return self.path.startswith(API_PREFIX) and self.path != OPENAPI_PATH


def route_table(api: AdminApi, openapi: Handler) -> list[Route]:
    """Every operation of the admin API, bound to ``api`` (``openapi`` serves the document)."""
    v1 = API_PREFIX
    auth = a.AuthApi(api.server)
    return [
        Route("GET", "/health", "health", "Liveness: the process answers", api.health,
              s.Health, tag="probes"),
        Route("GET", "/ready", "ready", "Readiness: listeners up, backends reachable",
              api.ready, s.Ready, errors=(503,), tag="probes"),
        Route("GET", "/metrics", "metrics", "Prometheus text exposition (format 0.0.4)",
              api.metrics, None, tag="probes", media_type="text/plain"),
        Route("GET", OPENAPI_PATH, "openapi", "This document (OpenAPI 3.1), open to read",
              openapi, None, tag="docs"),
        Route("GET", DOCS_PATH, "docs", "This document as a page (HTML)", docs_page, None,
              tag="docs", media_type="text/html"),
        Route("GET", SCRIPT_PATH, "docsScript", "The page's script", docs_script, None,
              tag="docs", media_type="text/javascript"),
        Route("GET", f"{v1}/registrations", "listRegistrations",
              "AORs with their bindings, paged, optionally by AOR prefix",
              api.list_registrations, s.RegistrationPage, query=s.RegistrationQuery,
              errors=(400, 503),
              links=(("firstAor", "getRegistration", (("aor", _FIRST + "/aor"),)),
                     ("firstBinding", "deleteBinding",
                      (("aor", _FIRST + "/aor"), ("key", _FIRST + "/bindings/0/key"))))),
        Route("GET", f"{v1}/registrations/{{aor}}", "getRegistration",
              "One AOR's unexpired bindings", api.get_registration, s.AorBindings,
              errors=(400, 404, 503),
              links=(("firstBinding", "deleteBinding",
                      (("aor", "$response.body#/aor"),
                       ("key", "$response.body#/bindings/0/key"))),)),
        Route("DELETE", f"{v1}/registrations/{{aor}}/bindings/{{key}}", "deleteBinding",
              "Remove one binding by key", api.delete_binding, None, status=204,
              errors=(400, 404, 503)),
        Route("GET", f"{v1}/dialogs", "listDialogs", "Proxy dialogs, paged, with counts",
              api.list_dialogs, s.DialogPage, query=s.PageQuery, errors=(400,),
              links=(("firstDialog", "getDialog", (("dialog_id", _FIRST + "/id"),)),
                     ("terminateFirst", "terminateDialog",
                      (("dialog_id", _FIRST + "/id"),)))),
        Route("GET", f"{v1}/dialogs/{{dialog_id}}", "getDialog", "One dialog",
              api.get_dialog, s.DialogView, errors=(400, 404),
              links=(("terminate", "terminateDialog",
                      (("dialog_id", "$response.body#/id"),)),)),
        # An action, not a DELETE: the dialog stays visible (state "terminated") while the
        # proxy lingers on it to absorb retransmissions.
        Route("POST", f"{v1}/dialogs/{{dialog_id}}/terminate", "terminateDialog",
              "End the dialog: the server sends BYE to both sides (RFC 3261 §15)",
              api.terminate_dialog, s.Terminated, errors=(400, 404)),
        Route("GET", f"{v1}/diameter/peers", "diameterPeers",
              "Diameter peers and their state (RFC 6733 §5.6)", api.diameter_peers,
              s.DiameterPeers),
        Route("GET", f"{v1}/diameter/sessions", "diameterSessions",
              "Credit-Control sessions this node handled", api.diameter_sessions,
              s.DiameterSessions, query=s.SessionQuery, errors=(400,)),
        Route("GET", f"{v1}/stats", "stats", "Uptime, counters, queue depths, table sizes",
              api.stats, s.Stats),
        Route("GET", f"{v1}/config", "getConfig", "Effective configuration, secrets masked",
              api.get_config, s.ConfigView),
        Route("PATCH", f"{v1}/config", "patchConfig",
              "Change live limits; read-only or unknown options are refused",
              api.patch_config, s.ConfigView, body=s.ConfigPatch, errors=(400, 409, 413)),
        Route("GET", f"{v1}/subscribers", "listSubscribers",
              "Subscribers (identities and hashed algorithms; never hashes), paged",
              auth.list_subscribers, a.SubscriberPage, query=s.PageQuery, errors=(400,)),
        Route("POST", f"{v1}/subscribers", "createSubscriber",
              "Add a subscriber; the password is hashed on arrival, never stored",
              auth.create_subscriber, a.SubscriberView, status=201, body=a.NewSubscriber,
              errors=(400, 409, 413)),
        Route("PUT", f"{v1}/subscribers/{{identity}}", "updateSubscriber",
              "Change a subscriber's password", auth.update_subscriber, a.SubscriberView,
              body=a.Password, errors=(400, 404, 413)),
        Route("DELETE", f"{v1}/subscribers/{{identity}}", "deleteSubscriber",
              "Remove a subscriber", auth.delete_subscriber, None, status=204,
              errors=(400, 404)),
        Route("GET", f"{v1}/blocks", "listBlocks",
              "Sources blocked for flooding or password guessing", auth.list_blocks,
              a.BlockList),
        Route("DELETE", f"{v1}/blocks/{{host}}", "liftBlock", "Lift a source's block",
              auth.lift_block, None, status=204, errors=(400, 404)),
    ]
