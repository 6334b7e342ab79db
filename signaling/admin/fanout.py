"""The admin views that each worker holds a part of, answered for the whole server.

The admin front (``signaling.admin.front``) forwards most of the API to one worker: what it
answers from the shared registry (registrations) or from the configuration is the same on
every worker.  Dialogs and statistics are each worker's own, so for those the front asks every
serving worker and puts the answers together, in the API's own schemas:

* ``GET /api/v1/stats``: counters and table sizes added up, shard queue depths listed one
  after the other (every shard of every worker), the earliest start and the longest uptime;
  the registry's sizes (the same shared registry seen by each worker) taken once.
* ``GET /api/v1/dialogs``: one list, worker after worker in slot order, paged over the
  whole; counts by state added up.
* ``GET /api/v1/dialogs/{id}`` and ``POST .../terminate``: asked of each worker until one
  has it; 404 when none has.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

__all__ = ["SERVER_WIDE_STATS", "first_found", "merge_dialog_pages", "merge_stats"]

#: Stats fields that describe the whole server on every worker: taken once, not added.
SERVER_WIDE_STATS = frozenset({"registered_aors", "registered_bindings", "queue_size"})

#: (status, JSON body) of one worker's answer.
Answer = tuple[int, Any]


def _merge(key: str, values: list[Any]) -> Any:
    first = values[0]
    if key == "started_at":
        return min(values)
    if key == "uptime" or key in SERVER_WIDE_STATS:
        return max(values)
    if key == "node_id":
        return str(first).rsplit("/", 1)[0]  # the node, without the worker's suffix
    if isinstance(first, bool) or not isinstance(first, (int, float, dict, list)):
        return first
    if isinstance(first, (int, float)):
        return sum(values)
    if isinstance(first, list):
        return [item for v in values for item in v]
    keys = list(dict.fromkeys(k for v in values for k in v))
    return {k: _merge(k, [v[k] for v in values if k in v]) for k in keys}


def merge_stats(stats: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Every worker's ``Stats`` as one (see the module docstring)."""
    merged: dict[str, Any] = _merge("", list(stats))
    return merged


async def merge_dialog_pages(
        fetch: Callable[[Any, int, int], Awaitable[Answer]], workers: Sequence[Any],
        offset: int, limit: int) -> Answer:
    """One ``DialogPage`` over the workers in order: ``fetch(worker, offset, limit)`` answers
    that worker's page.  A worker's part starts after the dialogs of the workers before it."""
    skip = offset
    items: list[Any] = []
    counts: dict[str, int] = {}
    for worker in workers:
        status, page = await fetch(worker, skip, max(1, limit - len(items)))
        if status != 200:
            return status, page
        held = sum(page["counts"].values())
        for state, n in page["counts"].items():
            counts[state] = counts.get(state, 0) + n
        if len(items) < limit:
            items.extend(page["items"][:limit - len(items)])
        skip = max(0, skip - held)
    return 200, {"offset": offset, "limit": limit, "counts": counts, "items": items}


async def first_found(ask: Callable[[Any], Awaitable[Answer]],
                      workers: Sequence[Any]) -> Answer:
    """The first worker's answer that is not 404 (the one holding the dialog), else 404."""
    answer: Answer = (404, {"error": "no such dialog on any worker", "status": 404})
    for worker in workers:
        answer = await ask(worker)
        if answer[0] != 404:
            return answer
    return answer
