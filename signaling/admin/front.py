"""The admin front of a multi-process server: one address answering for every worker.

The supervisor (``signaling.supervisor``) listens on the configured ``--admin`` address; each
worker runs its own admin API on a private loopback port it reports when ready.  The front:

* ``/metrics``: scrapes every serving worker concurrently and adds their samples up (counters,
  histogram buckets, sums and counts, and gauges of per-process things such as queue depths,
  transactions and dialogs), so Prometheus sees one server.  Gauges that every worker reports
  for the whole server (the shared registry's sizes, the uptime, the build) or as a limit of
  each process are not added but taken once (``SERVER_WIDE``); the start time and the
  certificates' expiry are the earliest (``EARLIEST``), a share of each worker's traffic the
  mean (``MEAN``).  The supervisor's own series (workers, restarts, reloads) are appended.  A
  worker that does not answer within ``SCRAPE_TIMEOUT`` is left out and counted
  (``signaling_supervisor_scrape_failures_total``): its counters then dip, which Prometheus
  reads as a reset.
* ``/health``: the supervisor answers, listing the serving workers (name, pid, private
  admin address); ``/ready``: ready when every slot has a serving worker
  and each of them says it is ready.
* dialogs and stats: every worker is asked and the answers put together
  (``signaling.admin.fanout``);
* everything else (``/api/v1/...``): forwarded as is (bearer token included) to one serving
  worker, round robin.  Registrations are the shared registry's, so any worker answers for the
  whole server, and the configuration is the same on every worker (a PATCH of the live
  limits goes to every worker, and the supervisor keeps it for a worker it restarts after a
  crash; a reload runs the configuration on disk).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

import aiohttp
import msgspec
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from signaling.admin.fanout import Answer, first_found, merge_dialog_pages, merge_stats
from signaling.admin.handlers import METRICS_CONTENT_TYPE
from signaling.admin.livecfg import decode_patch
from signaling.tls import admin_tls

if TYPE_CHECKING:
    from signaling.supervisor import Supervisor, Worker

__all__ = ["EARLIEST", "MEAN", "SCRAPE_TIMEOUT", "SERVER_WIDE", "AdminFront", "merge_expositions"]

log = logging.getLogger(__name__)

#: Bound on one worker's scrape or forwarded request.  Prometheus's own scrape timeout is 10 s
#: by default; a worker that cannot answer in 2 s is too busy and is left out of this scrape.
SCRAPE_TIMEOUT = 2.0
#: Gauges each worker reports for the whole server, or a limit of each process: taken once
#: (the highest), never added.
SERVER_WIDE = frozenset({
    "signaling_registered_aors", "signaling_registered_bindings", "signaling_uptime_seconds",
    "signaling_build_info", "signaling_build", "process_max_fds",
})
#: Gauges where the whole server's value is the lowest: when its first process started, when
#: the first of its certificates expires (every worker serves the same: added, two workers
#: put the expiry twice as far away).
EARLIEST = frozenset({"process_start_time_seconds",
                      "signaling_tls_certificate_expiry_timestamp_seconds"})
#: Gauges that are a share of what each worker receives: the whole server's is the workers'
#: mean (the kernel spreads new sources evenly over the slots' sockets, ``SO_REUSEPORT``).
#: Each worker's listening socket has a filter of its own (``udpshed``); added, two workers
#: shedding 0.8 read as 1.6 (session 13).
MEAN = frozenset({"signaling_sip_overload_kernel_shed_share"})
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length",
                         "host", "upgrade", "te", "trailer"})

_Key = tuple[str, tuple[tuple[str, str], ...]]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value)}.0"
    return repr(value)


def _add(a: float, b: float) -> float:
    return a + b


def merge_expositions(texts: Iterable[str]) -> bytes:
    """Prometheus text expositions of several workers as one (see the module docstring)."""
    families: dict[str, tuple[str, str]] = {}
    samples: dict[str, dict[_Key, float]] = {}
    #: Of a ``MEAN`` gauge's samples, how many were added (its workers).
    counted: dict[_Key, int] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            families.setdefault(family.name, (family.type, family.documentation))
            into = samples.setdefault(family.name, {})
            combine = (max if family.name in SERVER_WIDE else
                       min if family.name in EARLIEST else _add)
            for sample in family.samples:
                if sample.name.endswith("_created"):  # a timestamp: adding them means nothing
                    continue
                key = (sample.name, tuple(sorted(sample.labels.items())))
                old = into.get(key)
                into[key] = sample.value if old is None else combine(old, sample.value)
                if family.name in MEAN:
                    counted[key] = counted.get(key, 0) + 1
    for name in MEAN.intersection(samples):
        for key in samples[name]:
            samples[name][key] /= counted[key]
    out: list[str] = []
    for name, (kind, doc) in families.items():
        out.append(f"# HELP {name} {doc.replace(chr(92), chr(92) * 2).replace(chr(10), '')}")
        out.append(f"# TYPE {name} {kind}")
        for (sample_name, labels), value in samples[name].items():
            label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
            braces = f"{{{label_text}}}" if label_text else ""
            out.append(f"{sample_name}{braces} {_number(value)}")
    return ("\n".join(out) + "\n").encode()


class AdminFront:
    """The supervisor's admin listener (see the module docstring)."""

    def __init__(self, supervisor: Supervisor, listen: tuple[str, int], token: str) -> None:
        self.sup = supervisor
        self.listen = listen
        self.token = token
        #: HTTPS on the public address (``--admin-tls-cert``); the workers' private loopback
        #: listeners stay plain HTTP.  Raises ConfigError for unusable files.
        self.tls = admin_tls(supervisor.cfg)
        self.address: tuple[str, int] | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._turn = itertools.count()
        self.c_scrape_failed = supervisor.metrics.fast_counter(
            "supervisor_scrape_failures", "Worker /metrics scrapes that failed", ["slot"])

    async def start(self) -> tuple[str, int]:
        app = web.Application()
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/health", self.health)
        app.router.add_get("/ready", self.ready)
        app.router.add_get("/api/v1/stats", self.stats)
        app.router.add_get("/api/v1/dialogs", self.dialogs)
        app.router.add_get("/api/v1/dialogs/{dialog_id}", self.dialog)
        app.router.add_post("/api/v1/dialogs/{dialog_id}/terminate", self.dialog)
        app.router.add_patch("/api/v1/config", self.patch_config)
        app.router.add_route("*", "/{tail:.*}", self.forward)
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT))
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        self._runner = runner
        site = web.TCPSite(runner, self.listen[0], self.listen[1], reuse_address=True,
                           ssl_context=self.tls.front if self.tls is not None else None)
        await site.start()
        if self.tls is not None:
            self.tls.start(on_hup=False)  # SIGHUP is the supervisor's: reload the workers
        sockname = runner.addresses[0]
        self.address = (str(sockname[0]), int(sockname[1]))
        log.info("admin API (all workers) on %s://%s:%d",
                 "http" if self.tls is None else "https", *self.address)
        return self.address

    async def close(self) -> None:
        if self.tls is not None:
            await self.tls.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _get_text(self, admin: tuple[str, int], path: str) -> tuple[int, str]:
        assert self._session is not None
        async with self._session.get(f"http://{admin[0]}:{admin[1]}{path}") as resp:
            return resp.status, await resp.text()

    async def metrics(self, request: web.Request) -> web.Response:
        workers = [(w.slot, w.admin) for w in self.sup.serving() if w.admin is not None]
        got = await asyncio.gather(*(self._get_text(a, "/metrics") for _, a in workers),
                                   return_exceptions=True)
        texts = []
        for (slot, _), result in zip(workers, got, strict=True):
            if isinstance(result, BaseException) or result[0] != 200:
                self.c_scrape_failed.inc(str(slot))
                continue
            texts.append(result[1])
        texts.append(self.sup.metrics.exposition().decode())
        return web.Response(body=merge_expositions(texts),
                            headers={"Content-Type": METRICS_CONTENT_TYPE})

    async def health(self, request: web.Request) -> web.Response:
        workers = [{"name": w.name, "pid": w.proc.pid,
                    "admin": f"{w.admin[0]}:{w.admin[1]}" if w.admin else None}
                   for w in self.sup.serving()]
        return web.json_response({"status": "alive", "supervisor": os.getpid(),
                                  "workers": workers})

    async def ready(self, request: web.Request) -> web.Response:
        serving = [w for w in self.sup.serving() if w.admin is not None]
        got = await asyncio.gather(*(self._get_text(w.admin, "/ready") for w in serving
                                     if w.admin is not None), return_exceptions=True)
        checks = {f"slot_{s.index}": "no worker" for s in self.sup.slots}
        for w, result in zip(serving, got, strict=True):
            ok = not isinstance(result, BaseException) and result[0] == 200
            checks[f"slot_{w.slot}"] = "ok" if ok else "not ready"
        ready = all(v == "ok" for v in checks.values())
        return web.Response(body=msgspec.json.encode({"ready": ready, "checks": checks}),
                            status=200 if ready else 503, content_type="application/json")

    # -- views every worker holds a part of (signaling.admin.fanout) ---------------------------

    async def _ask(self, worker: Worker, request: web.Request, path: str | None = None,
                   body: bytes | None = None) -> Answer:
        assert worker.admin is not None and self._session is not None
        url = f"http://{worker.admin[0]}:{worker.admin[1]}{path or request.rel_url}"
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        try:
            async with self._session.request(request.method, url, headers=headers,
                                             data=body) as resp:
                return resp.status, await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            return 503, {"error": f"worker {worker.name}: {exc}", "status": 503}

    @staticmethod
    def _json(answer: Answer) -> web.Response:
        return web.Response(body=msgspec.json.encode(answer[1]), status=answer[0],
                            content_type="application/json")

    async def stats(self, request: web.Request) -> web.Response:
        serving = [w for w in self.sup.serving() if w.admin is not None]
        answers = await asyncio.gather(*(self._ask(w, request) for w in serving))
        failed = next((a for a in answers if a[0] != 200), None)
        if failed is not None or not answers:
            return self._json(failed or (503, {"error": "no worker serving", "status": 503}))
        return self._json((200, merge_stats([a[1] for a in answers])))

    async def dialogs(self, request: web.Request) -> web.StreamResponse:
        try:
            offset = int(request.query.get("offset", "0"))
            limit = int(request.query.get("limit", "100"))
        except ValueError:
            return await self.forward(request)  # the worker's own 400, as documented
        serving = [w for w in self.sup.serving() if w.admin is not None]

        async def fetch(worker: Worker, skip: int, count: int) -> Answer:
            return await self._ask(worker, request,
                                   f"/api/v1/dialogs?offset={skip}&limit={count}")

        return self._json(await merge_dialog_pages(fetch, serving, offset, limit))

    async def dialog(self, request: web.Request) -> web.Response:
        serving = [w for w in self.sup.serving() if w.admin is not None]
        return self._json(await first_found(lambda w: self._ask(w, request), serving))

    async def patch_config(self, request: web.Request) -> web.Response:
        """A live change applies to every worker (each checks it the same way); once every
        worker took it, the supervisor keeps it for the workers it starts after a crash
        (``Supervisor.patched``; a reload runs the configuration on disk)."""
        body = await request.read()
        serving = [w for w in self.sup.serving() if w.admin is not None]
        answers = [await self._ask(w, request, body=body) for w in serving]
        failed = next((a for a in answers if a[0] != 200), None)
        if not answers:
            return self._json((503, {"error": "no worker serving", "status": 503}))
        if any(a[0] == 200 for a in answers):
            # A worker took it (each validates it the same way, so it decodes here too): a
            # worker that missed it (unreachable) gets it when it is restarted.
            self.sup.patched(decode_patch(body))
        return self._json(failed or answers[0])

    async def forward(self, request: web.Request) -> web.StreamResponse:
        serving = [w for w in self.sup.serving() if w.admin is not None]
        if not serving:
            return web.json_response({"error": "no worker serving", "status": 503},
                                     status=503, headers={"Retry-After": "1"})
        target = serving[next(self._turn) % len(serving)]
        assert target.admin is not None and self._session is not None
        url = f"http://{target.admin[0]}:{target.admin[1]}{request.rel_url}"
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        body = await request.read()
        try:
            async with self._session.request(request.method, url, headers=headers,
                                             data=body or None) as resp:
                payload = await resp.read()
                out = {k: v for k, v in resp.headers.items() if k.lower() not in _HOP_BY_HOP}
                out["X-Signaling-Worker"] = target.name
                return web.Response(status=resp.status, body=payload, headers=out)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return web.json_response({"error": f"worker {target.name}: {exc}", "status": 503},
                                     status=503, headers={"Retry-After": "1"})
