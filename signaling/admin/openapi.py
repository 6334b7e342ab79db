"""The OpenAPI 3.1 document of the admin API, generated from the route table.

Schemas come from the msgspec types themselves (``msgspec.json.schema_components`` emits JSON
Schema 2020-12, which is what OpenAPI 3.1 uses), query parameters from the fields of each
route's ``*Query`` struct, path parameters from the ``{name}`` segments of its path.  Nothing
here is written by hand per operation, so the document describes exactly what is served.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from signaling.admin.routes import Route
from signaling.admin.schemas import MAX_PATH_PARAM, ErrorBody

__all__ = ["SECURITY_SCHEME", "build_document"]

SECURITY_SCHEME = "bearerToken"
_REF = "#/components/schemas/{name}"
_PATH_PARAM = re.compile(r"\{(\w+)\}")
_REASONS = {200: "OK", 204: "No Content", 400: "Bad request (query or body)",
            401: "Missing or wrong bearer token", 404: "Not found",
            409: "Values valid alone but contradicting the rest of the configuration",
            413: "Body larger than the admin API accepts",
            503: "Not ready, a backend (registry) did not answer, or too many API requests"
                 " at once"}


def build_document(routes: list[Route], title: str, version: str) -> dict[str, Any]:
    types: list[Any] = [ErrorBody]
    for r in routes:
        types += [t for t in (r.response, r.query, r.body) if t is not None]
    types = list(dict.fromkeys(types))
    refs, components = msgspec.json.schema_components(types, ref_template=_REF)
    ref_of = dict(zip(types, refs, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for r in routes:
        paths.setdefault(r.path, {})[r.method.lower()] = _operation(r, ref_of, components)
    for r in routes:  # query structs are inlined as parameters, not kept as schemas
        if r.query is not None:
            components.pop(r.query.__name__, None)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {SECURITY_SCHEME: {"type": "http", "scheme": "bearer"}},
        },
    }


def _operation(r: Route, ref_of: dict[Any, Any], components: dict[str, Any]) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": r.operation_id, "summary": r.summary, "tags": [r.tag]}
    params = [_path_param(name) for name in _PATH_PARAM.findall(r.path)]
    if r.query is not None:
        params += _query_params(components[r.query.__name__])
    if params:
        op["parameters"] = params
    if r.body is not None:
        op["requestBody"] = {"required": True,
                             "content": {"application/json": {"schema": ref_of[r.body]}}}
    op["responses"] = _responses(r, ref_of)
    if r.secured:
        op["security"] = [{SECURITY_SCHEME: []}]
    return op


def _path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True,
            "schema": {"type": "string", "minLength": 1, "maxLength": MAX_PATH_PARAM}}


def _query_params(schema: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for name, prop in schema["properties"].items():
        prop = dict(prop)
        description = prop.pop("description", "")
        out.append({"name": name, "in": "query", "required": False,
                    "description": description, "schema": prop})
    return out


def _responses(r: Route, ref_of: dict[Any, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    ok: dict[str, Any] = {"description": _REASONS.get(r.status, "OK")}
    if r.status != 204:
        if r.response is not None:
            schema = ref_of[r.response]
        elif r.media_type.startswith("text/"):
            schema = {"type": "string"}
        else:
            schema = {"type": "object"}
        ok["content"] = {r.media_type: {"schema": schema}}
    if r.links:
        ok["links"] = {name: {"operationId": op, "parameters": dict(params)}
                       for name, op, params in r.links}
    out[str(r.status)] = ok
    error = {"application/json": {"schema": ref_of[ErrorBody]}}
    statuses = list(r.errors)
    if r.secured:
        statuses += [401, 503]  # 503: limit_middleware
    for status in sorted(set(statuses)):
        entry: dict[str, Any] = {"description": _REASONS[status]}
        if r.path == "/ready" and status == 503:
            # Not ready is answered with the checks themselves, not an ErrorBody.
            entry["content"] = ok["content"]
        else:
            entry["content"] = error
        if status == 401:
            entry["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"},
                                                     "required": True}}
        out[str(status)] = entry
    return out
