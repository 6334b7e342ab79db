"""Every admin endpoint over real HTTP against a real server process (``signaling serve``)."""

from __future__ import annotations

import random
import urllib.parse
from typing import Any

from harness.serverproc import ServerProcess
from harness.services import RedisServer
from signaling.config import Config
from signaling.server import Server
from tests.protocols.diameter.factory import ccr
from tests.signaling.admin.helpers import (
    TOKEN,
    answer,
    call,
    header_values,
    recv_request,
    register,
    register_message,
    send_options,
    session,
    sip_status,
    wait_admin,
)
from tests.signaling.diameter.client import Client as DiameterClient


def _users(n: int) -> tuple[str, list[str]]:
    prefix = f"u{random.randint(0, 1 << 30)}x"
    return prefix, [f"{prefix}{i}" for i in range(n)]


def _path(aor: str) -> str:
    return urllib.parse.quote(aor, safe="")


async def test_health_and_ready(server: ServerProcess) -> None:
    assert server.admin_port is not None
    async with session(server.admin_port, token=None) as http:
        async with http.get("/health") as resp:
            assert resp.status == 200
            body = await resp.json()
            assert body["status"] == "alive" and body["uptime"] >= 0
        async with http.get("/ready") as resp:
            assert resp.status == 200
            body = await resp.json()
    assert body["ready"] is True
    assert body["checks"] == {"sip_core": "ok", "sip_udp": "ok", "sip_ws": "ok",
                              "sip_tcp": "ok", "diameter": "ok", "registry": "ok"}


async def test_registrations_list_filter_page_get_delete(server: ServerProcess) -> None:
    assert server.admin_port is not None
    prefix, users = _users(3)
    for i, user in enumerate(users):
        assert register(server.udp_port, user, contact_port=6000 + i) == 200
    aors = [f"sip:{u}@example.com" for u in users]
    async with session(server.admin_port) as http:
        async with http.get("/api/v1/registrations",
                            params={"prefix": f"sip:{prefix}"}) as resp:
            assert resp.status == 200
            page = await resp.json()
        assert [item["aor"] for item in page["items"]] == aors
        assert page["items"][0]["bindings"][0]["contact"] == f"sip:{users[0]}@127.0.0.1:6000"
        assert page["total_aors"] >= 0
        async with http.get("/api/v1/registrations",
                            params={"prefix": f"sip:{prefix}", "offset": "1",
                                    "limit": "1"}) as resp:
            page = await resp.json()
        assert [item["aor"] for item in page["items"]] == aors[1:2]
        assert (page["offset"], page["limit"]) == (1, 1)

        async with http.get(f"/api/v1/registrations/{_path(aors[2])}") as resp:
            assert resp.status == 200
            one = await resp.json()
        assert one["aor"] == aors[2]
        (binding,) = one["bindings"]
        assert binding["contact"] == f"sip:{users[2]}@127.0.0.1:6002"
        assert binding["transport"] == "udp"

        url = f"/api/v1/registrations/{_path(aors[2])}/bindings/{_path(binding['key'])}"
        async with http.delete(url) as resp:
            assert resp.status == 204
        async with http.get(f"/api/v1/registrations/{_path(aors[2])}") as resp:
            assert resp.status == 404
            assert await resp.json() == {"error": f"no bindings for {aors[2]!r}",
                                         "status": 404}
        async with http.delete(url) as resp:
            assert resp.status == 404
            assert (await resp.json())["status"] == 404


async def test_registrations_bad_query(server: ServerProcess) -> None:
    assert server.admin_port is not None
    async with session(server.admin_port) as http:
        for params in ({"limit": "0"}, {"offset": "abc"}, {"limit": "100000"},
                       {"offset": "-1"}, {"prefix": "x" * 5000}):
            async with http.get("/api/v1/registrations", params=params) as resp:
                assert resp.status == 400, params
                body = await resp.json()
                assert body["status"] == 400 and body["error"].startswith("query:")


async def test_dialogs_empty_and_unknown(server: ServerProcess) -> None:
    assert server.admin_port is not None
    async with session(server.admin_port) as http:
        async with http.get("/api/v1/dialogs") as resp:
            assert resp.status == 200
            page = await resp.json()
        assert page["items"] == []
        assert page["offset"] == 0 and page["limit"] == 100
        assert all(n == 0 for n in page["counts"].values())
        for method, url in (("GET", "/api/v1/dialogs/nope"),
                            ("POST", "/api/v1/dialogs/nope/terminate")):
            async with http.request(method, url) as resp:
                assert resp.status == 404
                assert await resp.json() == {"error": "no dialog 'nope'", "status": 404}
        async with http.get("/api/v1/dialogs", params={"limit": "-5"}) as resp:
            assert resp.status == 400


async def test_diameter_peers_and_sessions(server: ServerProcess) -> None:
    assert server.admin_port is not None and server.diameter_port is not None
    client = await DiameterClient.connect(server.diameter_port)
    try:
        cea = await client.handshake("admin-test.client")
        assert cea.command_code == 257
        sid = f"admin-test.client;{random.randint(0, 1 << 30)};1"
        await client.send(ccr(session=sid, rtype=1, number=0, requested=30))
        cca = await client.recv()
        assert cca.command_code == 272
        async with session(server.admin_port) as http:
            async with http.get("/api/v1/diameter/peers") as resp:
                assert resp.status == 200
                peers = await resp.json()
            async with http.get("/api/v1/diameter/sessions", params={"limit": "5"}) as resp:
                assert resp.status == 200
                sessions = await resp.json()
            async with http.get("/api/v1/diameter/sessions", params={"limit": "0"}) as resp:
                assert resp.status == 400
    finally:
        await client.close()
    assert peers["enabled"] is True
    (peer,) = [p for p in peers["items"] if p["origin_host"] == "admin-test.client"]
    assert peer["state"] == "R-Open"
    assert sessions["enabled"] is True and sessions["total"] == 1
    (item,) = sessions["items"]
    assert item["session_id"] == sid and item["tcc_deadline"] > 0


async def test_stats(server: ServerProcess) -> None:
    assert server.admin_port is not None
    _, (user,) = _users(1)
    async with session(server.admin_port) as http:
        async with http.get("/api/v1/stats") as resp:
            before = await resp.json()
        assert send_options(server.udp_port) == 200
        assert register(server.udp_port, user) == 200
        async with http.get("/api/v1/stats") as resp:
            assert resp.status == 200
            stats = await resp.json()
        async with http.get("/api/v1/config") as resp:
            config = (await resp.json())["config"]
    assert stats["node_id"].endswith(f":{server.udp_port}")
    assert stats["uptime"] > 0
    assert len(stats["queues"]["depths"]) == config["workers"]  # one shard per worker
    assert stats["queues"]["queue_size"] == config["queue_size"]
    assert set(stats["tables"]) == {"transactions", "ws_connections", "registered_aors",
                                    "registered_bindings", "dialogs", "diameter_peers",
                                    "diameter_sessions"}
    sip, sip0 = stats["sip"], before["sip"]
    assert sip["requests_received"] - sip0["requests_received"] == 2
    assert sip["responses_sent"] - sip0["responses_sent"] == 2
    assert (stats["registrations"]["200"] - before["registrations"].get("200", 0)) == 1
    assert set(stats["diameter"]) == {"requests", "answers", "shed"}


async def test_config_read_masks_secrets(server: ServerProcess) -> None:
    assert server.admin_port is not None
    async with session(server.admin_port) as http, http.get("/api/v1/config") as resp:
        assert resp.status == 200
        view = await resp.json()
    assert view["config"]["admin_token"] == "***"
    assert view["config"]["sip_udp"] == ["127.0.0.1", server.udp_port]
    assert "queue_size" in view["live"] and "workers" not in view["live"]


async def test_config_patch_applies_live(server: ServerProcess) -> None:
    assert server.admin_port is not None
    _, (user,) = _users(1)
    async with session(server.admin_port) as http:
        async with http.get("/api/v1/config") as resp:
            before = (await resp.json())["config"]
        async with http.patch("/api/v1/config",
                              json={"queue_size": 10, "min_expires": 120}) as resp:
            assert resp.status == 200
            view = await resp.json()
        assert view["config"]["queue_size"] == 10
        assert view["config"]["min_expires"] == 120
        async with http.get("/api/v1/stats") as resp:
            assert (await resp.json())["queues"]["queue_size"] == 10
        # The registrar uses the new minimum at once (RFC 3261 §10.3 step 7: 423).
        assert register(server.udp_port, user, expires=90) == 423
        async with http.patch("/api/v1/config",
                              json={"queue_size": before["queue_size"],
                                    "min_expires": before["min_expires"]}) as resp:
            assert resp.status == 200
        assert register(server.udp_port, user, expires=90) == 200


async def test_config_patch_refusals(server: ServerProcess) -> None:
    assert server.admin_port is not None
    cases: list[tuple[bytes, str]] = [
        (b'{"workers": 4}', "'workers': read-only (needs a restart) option"),
        (b'{"bogus": 1}', "'bogus': unknown option"),
        (b'{"queue_size": "big"}', "Expected `int`, got `str` - at `$.queue_size`"),
        (b'{"queue_size": 0}', "Expected `int` >= 1 - at `$.queue_size`"),
        (b"[1]", "body must be a JSON object of option: value"),
        (b'"queue_size"', "body must be a JSON object of option: value"),
    ]
    async with session(server.admin_port) as http:
        async with http.get("/api/v1/config") as resp:
            before = (await resp.json())["config"]
        for body, message in cases:
            async with http.patch("/api/v1/config", data=body,
                                  headers={"Content-Type": "application/json"}) as resp:
                assert resp.status == 400, body
                assert await resp.json() == {"error": message, "status": 400}
        async with http.patch("/api/v1/config", json={"min_expires": 9000}) as resp:
            assert resp.status == 409
            assert await resp.json() == {
                "error": "expires: need min_expires <= default_expires <= max_expires",
                "status": 409}
        async with http.patch("/api/v1/config", data=b"{not json") as resp:
            assert resp.status == 400
            assert (await resp.json())["error"].startswith("body is not JSON")
        # 60,000 '[' (within the 64 KiB body bound): 400, not a 500 with a traceback in the
        # log (issue 20 #6); the module's server fixture checks the log has no Traceback.
        for nested in (b"[" * 60_000, b'{"queue_size": ' + b"[" * 60_000):
            async with http.patch("/api/v1/config", data=nested) as resp:
                assert resp.status == 400
                assert await resp.json() == {
                    "error": "body is not JSON of options: nested too deeply", "status": 400}
        async with http.get("/api/v1/config") as resp:
            config = (await resp.json())["config"]
    assert config == before  # nothing of a refused patch was applied


def test_register_helper_sanity(server: ServerProcess) -> None:
    # The REGISTER the tests build is one the registrar accepts (guards the helpers above).
    _, (user,) = _users(1)
    assert sip_status(server.udp_port, register_message(server.udp_port, user, 5999)) == 200


async def test_dialog_list_get_terminate_sends_bye_to_both(server: ServerProcess) -> None:
    assert server.admin_port is not None
    _, (callee,) = _users(1)
    a, b, call_id = call(server.udp_port, callee)
    try:
        async with session(server.admin_port) as http:
            async with http.get("/api/v1/dialogs", params={"limit": "1000"}) as resp:
                assert resp.status == 200
                page = await resp.json()
            (dialog,) = [d for d in page["items"] if d["call_id"] == call_id]
            assert dialog["state"] == "confirmed"
            assert (dialog["from_tag"], dialog["to_tag"]) == ("caller1", "callee1")
            assert dialog["answered_at"] is not None
            assert page["counts"]["confirmed"] >= 1
            url = f"/api/v1/dialogs/{_path(dialog['id'])}"
            async with http.get(url) as resp:
                assert resp.status == 200
                assert await resp.json() == dialog
            async with http.post(f"{url}/terminate") as resp:
                assert resp.status == 200
                assert await resp.json() == {"id": dialog["id"], "terminated": True}
            # RFC 3261 §15: the server ends the dialog with a BYE to each side.
            for sock in (a, b):
                bye = recv_request(sock, "BYE")
                assert header_values(bye, "Call-ID", "i") == [call_id]
                sock.sendto(answer(bye, 200, "x", "sip:x@127.0.0.1"),
                            ("127.0.0.1", server.udp_port))
            async with http.get(url) as resp:
                # Gone, or still shown while the proxy lingers on it, as terminated.
                gone = resp.status == 404 or (await resp.json())["state"] == "terminated"
            assert gone
    finally:
        a.close()
        b.close()


async def test_config_patch_empty_changes_nothing(server: ServerProcess) -> None:
    assert server.admin_port is not None
    async with session(server.admin_port) as http:
        async with http.get("/api/v1/config") as resp:
            before = await resp.json()
        async with http.patch("/api/v1/config", json={}) as resp:
            assert resp.status == 200
            assert await resp.json() == before


async def _ready(port: int) -> tuple[int, dict[str, Any]]:
    async with session(port, token=None) as http, http.get("/ready") as resp:
        body: dict[str, Any] = await resp.json()
        return resp.status, body


async def test_ready_follows_redis_and_postgres(postgres_db: str) -> None:
    redis = RedisServer(appendonly=False).start()
    server = ServerProcess("--domain", "example.com", "--admin-token", TOKEN,
                           "--registry", redis.url, "--database", postgres_db, admin=True)
    try:
        server.start()
        wait_admin(server)
        assert server.admin_port is not None
        status, body = await _ready(server.admin_port)
        assert (status, body["ready"]) == (200, True), body
        assert body["checks"]["registry"] == "ok" and body["checks"]["database"] == "ok"
        redis.kill()
        status, body = await _ready(server.admin_port)
        assert status == 503 and body["ready"] is False
        failing = {k for k, v in body["checks"].items() if v != "ok"}
        assert failing == {"registry"}, body
        async with session(server.admin_port) as http, \
                http.get("/api/v1/registrations") as resp:
            assert resp.status == 503
            assert resp.headers["Retry-After"] == "5"
            error = await resp.json()
        assert error["status"] == 503 and error["error"].startswith("registry unavailable")
    finally:
        server.stop()
        redis.close()
    assert "Traceback" not in server.log


async def test_ready_fails_while_postgres_is_unreachable() -> None:
    # Port 1 on loopback: nothing listens there, so the writer starts degraded (spooling).
    server = ServerProcess("--domain", "example.com", "--admin-token", TOKEN,
                           "--database", "postgresql://nobody@127.0.0.1:1/none", admin=True)
    try:
        server.start()
        wait_admin(server)
        assert server.admin_port is not None
        status, body = await _ready(server.admin_port)
    finally:
        server.stop()
    assert status == 503
    assert body["checks"]["database"] == "not connected"
    assert body["checks"]["registry"] == "ok"


async def test_ready_says_503_once_shutdown_begins() -> None:
    server = Server(Config(sip_udp=("127.0.0.1", 0), sip_ws=None, admin=("127.0.0.1", 0),
                           admin_token=TOKEN, diameter=None, domain=["example.com"]))
    await server.start()
    try:
        assert server.admin is not None and server.admin.address is not None
        port = server.admin.address[1]
        assert (await _ready(port))[0] == 200
        # The first step of Server.stop(): new SIP requests get 503 from here on, so a load
        # balancer probing /ready must stop sending traffic too.
        await server.core.stop(0)
        status, body = await _ready(port)
    finally:
        await server.stop()
    assert status == 503
    assert body["checks"]["sip_core"] == "shutting down"


async def test_binding_key_with_a_slash_can_be_deleted(server: ServerProcess) -> None:
    # An escaped "/" in the contact's user part (RFC 3261 §19.1.2) is unescaped in the key
    # (§19.1.4 comparison form), so the key holds a "/" that the URL must carry as %2F.
    assert server.admin_port is not None
    _, (user,) = _users(1)
    msg = register_message(server.udp_port, user, 5999).replace(
        f"<sip:{user}@127.0.0.1:5999>".encode(), b"<sip:a%2Fb@127.0.0.1:5071>")
    assert sip_status(server.udp_port, msg) == 200
    aor = f"sip:{user}@example.com"
    async with session(server.admin_port) as http:
        async with http.get(f"/api/v1/registrations/{_path(aor)}") as resp:
            (binding,) = (await resp.json())["bindings"]
        assert "/" in binding["key"]
        url = f"/api/v1/registrations/{_path(aor)}/bindings/{_path(binding['key'])}"
        async with http.delete(url) as resp:
            assert resp.status == 204
