"""The route table's own invariants: the rows the app and the document are both built from."""

from __future__ import annotations

import re

from aiohttp import web

from signaling.admin.handlers import AdminApi
from signaling.admin.middleware import API_PREFIX
from signaling.admin.observe import Observer
from signaling.admin.routes import OPENAPI_PATH, Route, route_table
from signaling.admin.view import view_of
from signaling.config import Config
from signaling.server import Server


async def _openapi(request: web.Request) -> web.Response:
    return web.Response()


def _routes() -> list[Route]:
    server = Server(Config(sip_udp=None, sip_ws=None, admin=None, diameter=None))
    return route_table(AdminApi(view_of(server), Observer(view_of(server))), _openapi)


def test_operations_are_unique_and_secured_under_the_api_prefix() -> None:
    routes = _routes()
    assert len({r.operation_id for r in routes}) == len(routes)
    assert len({(r.method, r.path) for r in routes}) == len(routes)
    for r in routes:
        assert r.secured is (r.path.startswith(API_PREFIX + "/") and r.path != OPENAPI_PATH)
    assert {r.path for r in routes if not r.secured} == {
        "/health", "/ready", "/metrics", "/docs", "/docs/docs.js", OPENAPI_PATH}
    assert OPENAPI_PATH in {r.path for r in routes}


def test_errors_are_declared_where_they_can_happen() -> None:
    for r in _routes():
        has_params = bool(re.search(r"\{\w+\}", r.path))
        # Path parameters are length-checked (400) and name things that may not exist (404).
        assert (400 in r.errors and 404 in r.errors) or not has_params, r.path
        # A query or a body can be wrong: 400.
        assert 400 in r.errors or (r.query is None and r.body is None), r.path
        assert 413 in r.errors or r.body is None, r.path


def test_links_name_real_operations_and_their_parameters() -> None:
    routes = {r.operation_id: r for r in _routes()}
    for r in routes.values():
        for _, target, params in r.links:
            assert target in routes, target
            wanted = set(re.findall(r"\{(\w+)\}", routes[target].path))
            assert {name for name, _ in params} == wanted, (r.operation_id, target)
            for _, expression in params:
                assert expression.startswith("$response.body#/")
