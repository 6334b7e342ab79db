"""The admin API's subscriber and block operations against an in-process server."""

from __future__ import annotations

import json
from pathlib import Path

from signaling.server import Server
from tests.signaling.admin.helpers import TOKEN, session
from tests.signaling.auth.sipauth import DOMAIN, Client, open_peer
from tests.signaling.inproc import running_server


def _admin_port(srv: Server) -> int:
    assert srv.admin is not None and srv.admin.address is not None
    return srv.admin.address[1]


async def test_subscribers_are_managed_with_passwords_in_and_only_hashes_kept(
        tmp_path: Path) -> None:
    path = tmp_path / "subs.jsonl"
    async with running_server(domain=[DOMAIN], auth="on", subscribers=str(path),
                              admin="127.0.0.1:0", admin_token=TOKEN) as srv:
        assert srv.udp_address is not None
        port = srv.udp_address[1]
        async with session(_admin_port(srv)) as http:
            r = await http.post("/api/v1/subscribers",
                                json={"identity": f"carol@{DOMAIN}", "password": "pa55-word"})
            assert r.status == 201
            body = await r.json()
            assert body == {"identity": f"carol@{DOMAIN}", "user": "carol", "realm": DOMAIN,
                            "algorithms": ["MD5", "SHA-256", "SHA-512-256"]}
            again = await http.post("/api/v1/subscribers",
                                    json={"identity": f"carol@{DOMAIN}", "password": "x"})
            assert again.status == 409
            assert "pa55-word" not in path.read_text()  # hashes only on disk
            assert set(json.loads(path.read_text())["ha1"]) == {"MD5", "SHA-256",
                                                                 "SHA-512-256"}
            carol = Client(await open_peer(), port, "carol")
            assert (await carol.register("pa55-word"))[0].status == 200
            r = await http.put(f"/api/v1/subscribers/carol@{DOMAIN}",
                               json={"password": "new-one"})
            assert r.status == 200
            assert (await carol.register("pa55-word", call_id="r2"))[0].status == 401
            assert (await carol.register("new-one", call_id="r3"))[0].status == 200
            listing = await (await http.get("/api/v1/subscribers")).json()
            assert listing["total"] == 1 and listing["items"][0]["identity"] == f"carol@{DOMAIN}"
            assert "ha1" not in json.dumps(listing)
            assert (await http.delete(f"/api/v1/subscribers/carol@{DOMAIN}")).status == 204
            assert (await http.delete(f"/api/v1/subscribers/carol@{DOMAIN}")).status == 404
            assert (await carol.register("new-one", call_id="r4"))[0].status == 401
            bad = await http.post("/api/v1/subscribers", json={"identity": "nodomain",
                                                               "password": "x"})
            assert bad.status == 400
        assert "pa55-word" not in srv.metrics.exposition().decode()


async def test_blocks_are_listed_and_lifted(tmp_path: Path) -> None:
    async with running_server(domain=[DOMAIN], auth="on", subscribers=str(tmp_path / "s"),
                              admin="127.0.0.1:0", admin_token=TOKEN, auth_fail_limit=2,
                              ) as srv:
        assert srv.udp_address is not None
        port = srv.udp_address[1]
        guesser = Client(await open_peer(), port, "alice")
        for n in range(2):
            assert (await guesser.register("guess", call_id=f"g{n}"))[0].status == 401
        guesser.peer.send(guesser.request("OPTIONS", f"sip:x@{DOMAIN}", to=f"sip:x@{DOMAIN}",
                                          call_id="o"), port)
        assert await guesser.peer.silent(0.5)
        async with session(_admin_port(srv)) as http:
            blocks = (await (await http.get("/api/v1/blocks")).json())["items"]
            assert [(b["host"], b["reason"]) for b in blocks] == [("127.0.0.1", "auth_failures")]
            assert blocks[0]["dropped"] >= 1 and blocks[0]["remaining"] > 0
            assert (await http.delete("/api/v1/blocks/127.0.0.1")).status == 204
            assert (await http.delete("/api/v1/blocks/127.0.0.1")).status == 404
            assert (await (await http.get("/api/v1/blocks")).json())["items"] == []
        first, _ = await guesser.register(None, call_id="after")
        assert first.status == 401  # heard again
