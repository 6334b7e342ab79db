"""The API's documentation page: ``GET /docs``, readable by anyone who can reach the listener.

A static page and script (``static/docs.html``, ``static/docs.js``) render the OpenAPI document
of ``GET /api/v1/openapi.json``, which is open too, so an operator can read the API without a
token; every operation behind it still needs one.  Nothing is fetched from a CDN (the page works
on an air-gapped management network), and a Content-Security-Policy allows only this origin's
script and the document: the page cannot be turned into a vector against the token holder.
"""

from __future__ import annotations

from importlib.resources import files

from aiohttp import web

__all__ = ["CSP", "DOCS_PATH", "SCRIPT_PATH", "docs_page", "docs_script"]

DOCS_PATH = "/docs"
SCRIPT_PATH = "/docs/docs.js"
CSP = ("default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; "
       "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

_STATIC = files("signaling.admin").joinpath("static")
_PAGE = _STATIC.joinpath("docs.html").read_bytes()
_SCRIPT = _STATIC.joinpath("docs.js").read_bytes()


async def docs_page(request: web.Request) -> web.Response:
    return web.Response(body=_PAGE, content_type="text/html", charset="utf-8",
                        headers={"Content-Security-Policy": CSP,
                                 "X-Content-Type-Options": "nosniff"})


async def docs_script(request: web.Request) -> web.Response:
    return web.Response(body=_SCRIPT, content_type="text/javascript", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})
