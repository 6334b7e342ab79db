"""Live configuration changes: decoding, refusals, and their effect on a real (unstarted) server."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signaling.admin.livecfg import APPLY, LIVE_OPTIONS, PatchError, apply_patch, decode_patch
from signaling.admin.schemas import ConfigPatch
from signaling.admin.view import view_of
from signaling.config import OPTIONS, Config
from signaling.server import Server


def _server() -> Server:
    return Server(Config(sip_udp=None, sip_ws=None, admin=None, diameter=None,
                         domain=["example.com"]))


def test_live_options_are_options_and_match_the_patch_type() -> None:
    assert set(LIVE_OPTIONS) <= set(OPTIONS)
    assert set(LIVE_OPTIONS) == set(ConfigPatch.__struct_fields__)


def test_every_other_option_is_refused_as_read_only() -> None:
    for name in set(OPTIONS) - set(APPLY):
        with pytest.raises(PatchError, match="read-only") as err:
            decode_patch(msgspec.json.encode({name: 1}))
        assert err.value.status == 400


@pytest.mark.parametrize(("body", "message"), [
    (b'{"nope": 1}', "'nope': unknown option"),
    (b'{"queue_size": 1.5}', "Expected `int`, got `float`"),
    (b'{"queue_size": true}', "Expected `int`, got `bool`"),
    (b'{"retry_after": -1}', "Expected `int` >= 0"),
    (b'{"log_level": "loud"}', "Expected `str` matching regex"),
    (b'{"max_dialog_duration": 0.5}', "Expected `float` >= 1.0"),
    (b"null", "body must be a JSON object"),
    (b"", "body is not JSON"),
    (b"[" * 60_000, "nested too deeply"),
    (b'{"queue_size":' + b"[" * 60_000, "nested too deeply"),
])
def test_bad_patches_are_refused(body: bytes, message: str) -> None:
    with pytest.raises(PatchError, match=message.replace("(", r"\(")) as err:
        decode_patch(body)
    assert err.value.status == 400


def test_integral_floats_count_as_integers() -> None:
    # JSON Schema (and so the OpenAPI document) calls 118.0 an integer.
    assert decode_patch(b'{"queue_size": 118.0, "max_dialog_duration": 60}') == {
        "queue_size": 118, "max_dialog_duration": 60}


async def test_queue_size_bounds_the_dispatcher_at_once() -> None:
    server = _server()
    apply_patch(view_of(server), decode_patch(b'{"queue_size": 1}'))
    assert server.cfg.queue_size == 1
    dispatcher: Any = server.core.dispatcher
    assert dispatcher.submit("same-call", object()) is True
    assert dispatcher.submit("same-call", object()) is False  # the shard holds one now


async def test_expires_reach_the_registrar_and_conflicts_change_nothing() -> None:
    server = _server()
    apply_patch(view_of(server), decode_patch(b'{"min_expires": 30, "default_expires": 40}'))
    assert (server.registrar.min_expires, server.registrar.default_expires) == (30, 40)
    with pytest.raises(PatchError, match="min_expires <= default_expires") as err:
        apply_patch(view_of(server), decode_patch(b'{"min_expires": 50, "retry_after": 9}'))
    assert err.value.status == 409
    assert (server.cfg.min_expires, server.cfg.retry_after) == (30, 5)
    assert server.registrar.min_expires == 30


async def test_max_dialogs_and_log_level() -> None:
    server = _server()
    root = logging.getLogger()
    level = root.level
    try:
        apply_patch(view_of(server), decode_patch(b'{"max_dialogs": 7, "log_level": "error"}'))
        assert server.proxy.dialogs.max_dialogs == 7
        assert root.level == logging.ERROR
    finally:
        root.setLevel(level)


_values = st.fixed_dictionaries({}, optional={
    "queue_size": st.integers(-5, 2_000_000),
    "retry_after": st.integers(-5, 100_000),
    "min_expires": st.integers(0, 10_000),
    "default_expires": st.integers(0, 10_000),
    "max_expires": st.integers(0, 10_000),
    "max_dialog_duration": st.floats(0, 1e6, allow_nan=False),
    "ws_max_connections": st.integers(-1, 100),
})


@settings(max_examples=200, deadline=None)
@given(_values)
def test_any_patch_is_applied_whole_or_not_at_all(patch: dict[str, Any]) -> None:
    server = _server()
    before = {k: getattr(server.cfg, k) for k in LIVE_OPTIONS}
    try:
        apply_patch(view_of(server), decode_patch(msgspec.json.encode(patch)))
    except PatchError:
        assert {k: getattr(server.cfg, k) for k in LIVE_OPTIONS} == before
        return
    cfg = server.cfg
    assert {k: getattr(cfg, k) for k in patch} == patch
    assert 1 <= cfg.min_expires <= cfg.default_expires <= cfg.max_expires
    assert server.core.dispatcher.queue_size == cfg.queue_size
