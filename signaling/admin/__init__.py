"""REST admin API and Prometheus metrics (aiohttp), on its own listener (``--admin``).

Open (for probes, Prometheus and people): ``GET /health``, ``GET /ready`` (503 listing the
failing checks), ``GET /metrics`` (text format 0.0.4), ``GET /docs`` (the API's page) and the
OpenAPI document it renders.  Under ``/api/v1``, with
``Authorization: Bearer <token>``: registrations (list, get, delete a binding), dialogs (list,
get, ``POST .../terminate``), Diameter peers and sessions, stats, config (GET, PATCH of the live
options); ``openapi.json`` (open), generated from the same route table (``signaling.admin.routes``)
that the app serves.  Modules:

- ``app``: the listener, its token, malformed-request counting;
- ``routes`` / ``handlers``: the operations; ``schemas``: their msgspec types;
- ``middleware``: JSON errors and bearer auth; ``openapi``: the document;
- ``livecfg``: live configuration changes; ``observe``: cached registry gauges;
- ``view``: the typed, read-only view of the server every other module reads through;
- ``growth``: table sizes and their growth rate; ``docs``: the documentation page.
"""

from signaling.admin.app import AdminServer, build_app

__all__ = ["AdminServer", "build_app"]
