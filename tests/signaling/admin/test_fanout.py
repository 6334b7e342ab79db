"""Putting the workers' dialogs and stats together (the front runs them against real workers
in tests/signaling/test_supervisor.py)."""

from __future__ import annotations

from typing import Any

from signaling.admin.fanout import Answer, first_found, merge_dialog_pages, merge_stats


def _stats(node: str, started: float, uptime: float, received: int, dialogs: int,
           aors: int, depths: list[int]) -> dict[str, Any]:
    return {"node_id": node, "started_at": started, "uptime": uptime,
            "sip": {"requests_received": received, "dropped": {"x": 1}},
            "registrations": {"200": received},
            "queues": {"queue_size": 128, "depths": depths},
            "tables": {"dialogs": dialogs, "registered_aors": aors}}


def test_merge_stats_adds_counters_and_keeps_server_wide_values_once() -> None:
    merged = merge_stats([_stats("h:5060/w0.1", 10.0, 5.0, 3, 2, 7, [0, 1]),
                          _stats("h:5060/w1.2", 12.0, 3.0, 4, 1, 7, [2])])
    assert merged == {
        "node_id": "h:5060", "started_at": 10.0, "uptime": 5.0,
        "sip": {"requests_received": 7, "dropped": {"x": 2}},
        "registrations": {"200": 7},
        "queues": {"queue_size": 128, "depths": [0, 1, 2]},
        "tables": {"dialogs": 3, "registered_aors": 7}}


async def test_dialog_pages_run_over_the_workers_in_order() -> None:
    held = {"a": [f"a{i}" for i in range(3)], "b": [f"b{i}" for i in range(4)]}

    async def fetch(worker: str, offset: int, limit: int) -> Answer:
        ids = held[worker]
        return 200, {"counts": {"confirmed": len(ids)},
                     "items": [{"id": i} for i in ids[offset:offset + limit]]}

    async def ids(offset: int, limit: int) -> list[str]:
        status, page = await merge_dialog_pages(fetch, ["a", "b"], offset, limit)
        assert status == 200 and page["counts"] == {"confirmed": 7}
        return [d["id"] for d in page["items"]]

    everything = held["a"] + held["b"]
    for offset in range(9):
        for limit in (1, 2, 5, 100):
            assert await ids(offset, limit) == everything[offset:offset + limit]


async def test_first_found_asks_until_a_worker_has_it() -> None:
    asked: list[str] = []

    async def ask(worker: str) -> Answer:
        asked.append(worker)
        return (200, {"id": "d"}) if worker == "b" else (404, {"error": "no"})

    assert await first_found(ask, ["a", "b", "c"]) == (200, {"id": "d"})
    assert asked == ["a", "b"]
    assert (await first_found(ask, ["a", "c"]))[0] == 404
