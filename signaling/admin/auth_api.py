"""Admin API for authentication: subscribers (create, update, delete, list) and source blocks.

A password arrives in a request body, is hashed at once (``Subscriber.create``) and is never
stored, echoed or logged: views show identities and which algorithms have a hash, never the
hashes (an HA1 is a password equivalent for its realm).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Annotated, TypeVar

import msgspec
from aiohttp import web
from msgspec import Meta

from signaling.admin.handlers import parse_query, path_param
from signaling.admin.middleware import ApiError, json_response
from signaling.admin.schemas import PageQuery
from signaling.auth.subscribers import Subscriber, SubscriberError, split_identity

if TYPE_CHECKING:
    from signaling.admin.view import AuthView, ServerView

__all__ = ["AuthApi", "BlockList", "BlockView", "NewSubscriber", "Password", "SubscriberPage",
           "SubscriberView"]

T = TypeVar("T")
#: What ``split_identity`` accepts: a user part, "@", a host (an IPv6 one in brackets).
_IDENTITY = r"^(sips?:)?[^@\s:;<>\"]+@([^@\s:;<>\"]+|\[[0-9A-Fa-f:.]+\])$"
_Password = Annotated[str, Meta(min_length=1, max_length=256,
                                description="hashed on arrival; never stored or shown")]


class SubscriberView(msgspec.Struct):
    identity: str
    user: str
    realm: Annotated[str, Meta(description="the digest realm: the subscriber's domain")]
    algorithms: list[str]


class SubscriberPage(msgspec.Struct):
    offset: int
    limit: int
    total: int
    items: list[SubscriberView]


class NewSubscriber(msgspec.Struct, forbid_unknown_fields=True):
    identity: Annotated[str, Meta(min_length=3, max_length=512, pattern=_IDENTITY,
                                  description="USER@DOMAIN (the domain is the realm)")]
    password: _Password


class Password(msgspec.Struct, forbid_unknown_fields=True):
    password: _Password


class BlockView(msgspec.Struct):
    host: str
    reason: Annotated[str, Meta(description="'flood' (rate limit) or 'auth_failures'")]
    blocked_for: Annotated[float, Meta(description="seconds since the block began")]
    remaining: Annotated[float, Meta(description="seconds until it ends")]
    dropped: Annotated[int, Meta(description="messages dropped from it since")]


class BlockList(msgspec.Struct):
    items: list[BlockView]


def _view(sub: Subscriber) -> SubscriberView:
    return SubscriberView(sub.identity, sub.user, sub.realm, sorted(sub.ha1))


def _decode(body: bytes, kind: type[T]) -> T:
    try:
        return msgspec.json.decode(body, type=kind)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ApiError(400, f"body: {exc}") from None


def _identity(text: str, missing: int = 400) -> tuple[str, str]:
    """USER@DOMAIN; in a path, text that is no identity names no subscriber (404)."""
    try:
        return split_identity(text)
    except SubscriberError as exc:
        raise ApiError(missing, str(exc)) from None


class AuthApi:
    """Handlers bound to one server (rows in ``signaling.admin.routes``)."""

    def __init__(self, server: ServerView) -> None:
        self.server = server

    @property
    def auth(self) -> AuthView:
        if self.server.auth is None:
            raise ApiError(503, "authentication is not available on this node",
                           {"Retry-After": "60"})
        return self.server.auth

    async def _store_call(self, aw: Awaitable[T]) -> T:
        try:
            return await aw
        except SubscriberError as exc:
            raise ApiError(503, str(exc), {"Retry-After": "5"}) from None

    async def list_subscribers(self, request: web.Request) -> web.Response:
        q = parse_query(request, PageQuery)
        store = self.auth.subscribers
        items = await self._store_call(store.list(q.offset, q.limit))
        total = await self._store_call(store.count())
        return json_response(SubscriberPage(q.offset, q.limit, total,
                                            [_view(s) for s in items]))

    async def create_subscriber(self, request: web.Request) -> web.Response:
        new = _decode(await request.read(), NewSubscriber)
        user, realm = _identity(new.identity)
        store = self.auth.subscribers
        if await self._store_call(store.get(user, realm)) is not None:
            raise ApiError(409, f"subscriber {user}@{realm} exists (PUT changes its password)")
        sub = Subscriber.create(user, realm, new.password)
        await self._store_call(store.put(sub))
        return json_response(_view(sub), 201)

    async def update_subscriber(self, request: web.Request) -> web.Response:
        user, realm = _identity(path_param(request, "identity"), 404)
        secret = _decode(await request.read(), Password)
        store = self.auth.subscribers
        if await self._store_call(store.get(user, realm)) is None:
            raise ApiError(404, f"no subscriber {user}@{realm}")
        sub = Subscriber.create(user, realm, secret.password)
        await self._store_call(store.put(sub))
        return json_response(_view(sub))

    async def delete_subscriber(self, request: web.Request) -> web.Response:
        user, realm = _identity(path_param(request, "identity"), 404)
        if not await self._store_call(self.auth.subscribers.remove(user, realm)):
            raise ApiError(404, f"no subscriber {user}@{realm}")
        return web.Response(status=204)

    async def list_blocks(self, request: web.Request) -> web.Response:
        now = self.auth.now()
        return json_response(BlockList([
            BlockView(b.host, b.reason, round(now - b.since, 3), round(b.until - now, 3),
                      b.dropped) for b in self.auth.guard.active(now)]))

    async def lift_block(self, request: web.Request) -> web.Response:
        host = path_param(request, "host")
        if not self.auth.guard.lift(host):
            raise ApiError(404, f"no block for {host[:100]!r}")
        return web.Response(status=204)
