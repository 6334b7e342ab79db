"""``signaling serve --processes N``: a supervisor and N worker processes sharing every port.

One Python process uses one core.  The supervisor binds the listeners, starts N workers (each a
fresh ``python -m signaling serve`` with the same arguments, so it runs the code and the
configuration on disk when it starts), restarts a worker that dies, replaces them all on
``reload`` (SIGHUP), and stops them all on SIGTERM/SIGINT.  It runs no SIP code itself: it owns
the sockets, the embedded registry's hub and owner (``signaling.registry.hub`` and ``.owner``,
when ``--registry memory``: each worker keeps a replica, ``signaling.registry.replica``) and
the admin front (``signaling.admin.front``: one ``/metrics`` and one API for the whole server).

How the workers share a port: per listener, the supervisor binds **one socket per worker slot**
with ``SO_REUSEPORT`` and keeps them all open; worker ``i`` inherits the slot's socket
(``signaling.worker``), and so does every worker that later takes slot ``i`` (a restart after a
crash, or the new generation of a reload).  Why this and not the alternatives:

* *One socket bound once and inherited by every worker* puts all UDP datagrams in one receive
  queue that whichever worker is free drains.  It balances well, but it spreads one client's
  datagrams over all workers: a retransmitted REGISTER lands on a worker that does not hold its
  transaction (and, applied twice, fails §10.3 step 7's CSeq rule), a CANCEL or an ACK for a
  non-2xx misses its INVITE transaction.  ``SO_REUSEPORT`` picks the socket by a hash of the
  source and destination address and port, so everything one client sends from one port reaches
  the same worker, like a single-process server.  (The cost: one busy peer, e.g. an SBC sending
  everything from one address and port, is served by one worker only.)
* *Each worker binding its own ``SO_REUSEPORT`` socket* changes the group whenever a worker
  exits or starts: the hash then moves clients between workers, and datagrams and pending
  connections queued on a closing socket are lost.  Here the group never changes while the
  server runs: a slot's socket outlives its workers, keeps queueing while a crashed worker is
  restarted, and is handed from the old to the new generation on reload without a packet lost.
* A taken port stays an error.  ``SO_REUSEPORT`` alone would let a second server of the same
  user join the group silently and take part of the traffic.  Before binding, the supervisor
  binds each port once *without* ``SO_REUSEPORT`` (and for UDP without ``SO_REUSEADDR``), which
  fails if any socket holds it, and exits 1 like the single-process server.  (The window
  between that probe and the group's bind is microseconds, at start only.)

Supervision: a worker that exits unexpectedly (crash, kill -9) is started again after a back-off
doubling from ``RESTART_BACKOFF`` to ``MAX_BACKOFF`` (reset once a worker has lived
``STABLE_AFTER``), so a worker that cannot start does not spin; the other workers keep serving.
Reload is rolling, one slot at a time: the new worker starts on the slot's sockets, and only once
it reports ready is the old one sent SIGTERM, on which it stops reading the shared sockets,
finishes what it holds (``Server.stop``) and exits.  A new worker that fails to start leaves the
old one serving (a broken configuration on disk does not take the server down).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from signaling.config import Config, HostPort
from signaling.metrics import Metrics
from signaling.registry import dialogmap
from signaling.registry.hub import ReplicaHub
from signaling.registry.journal import PRUNE_EVERY, prune
from signaling.registry.memory import MemoryRegistry
from signaling.registry.owner import RegistryOwner
from signaling.registry.replica import HUB_SOCKET, OWNER_SOCKET
from signaling.worker import WORKER_ENV, WorkerInfo

if TYPE_CHECKING:
    from signaling.admin.front import AdminFront

__all__ = [
    "MAX_BACKOFF",
    "READY_TIMEOUT",
    "RESTART_BACKOFF",
    "STABLE_AFTER",
    "STOP_GRACE",
    "Supervisor",
    "Worker",
    "bind_group",
    "default_processes",
]

log = logging.getLogger("signaling.supervisor")

#: First restart delay after a worker died.  Short: a crash under load should cost a fraction
#: of a second of that slot's traffic (which the kernel queues on the slot's socket meanwhile).
RESTART_BACKOFF = 0.1
#: Longest restart delay: a worker that dies at once every time is retried every 10 s, cheap for
#: the machine while the operator looks at the log.
MAX_BACKOFF = 10.0
#: A worker that lived this long is healthy again: its next crash starts from RESTART_BACKOFF.
STABLE_AFTER = 30.0
#: Seconds a new worker may take to report ready (interpreter start, imports, binding its
#: private sockets) before it is killed and counted as a failed start.  Generous: a busy
#: machine starts Python slowly.
READY_TIMEOUT = 60.0
#: How the workers share the embedded registry: "replica" (each keeps it whole, the default;
#: ``signaling.registry.replica``) or "owner" (the supervisor's, asked over a socket;
#: ``signaling.registry.shared``), or, for measurement only, "private" (each worker its own
#: registry, nothing shared: what running N processes costs without the sharing).  Not a
#: ``SIGNALING_*`` option: it is for ``benchmarks/bench_multiproc.py``, which compares them.
SHARING_ENV = "_SIGNALING_REGISTRY_SHARING"
#: Seconds beyond ``shutdown_timeout`` a stopping worker gets before SIGKILL.
STOP_GRACE = 5.0


def default_processes() -> int:
    """The CPUs this process may run on (affinity, not the machine's count: containers)."""
    return max(1, len(os.sched_getaffinity(0)))


def _listeners(cfg: Config) -> list[tuple[str, HostPort, int]]:
    out: list[tuple[str, HostPort, int]] = []
    for name, hp, kind in (("sip_udp", cfg.sip_udp, socket.SOCK_DGRAM),
                           ("sip_ws", cfg.sip_ws, socket.SOCK_STREAM),
                           # Stream listeners are shared like the WebSocket one: each worker
                           # binding its own port would fail from the second worker on.
                           ("sip_tcp", cfg.sip_tcp, socket.SOCK_STREAM),
                           ("sip_tls", cfg.sip_tls, socket.SOCK_STREAM),
                           ("sip_wss", cfg.sip_wss, socket.SOCK_STREAM),
                           ("diameter", cfg.diameter, socket.SOCK_STREAM)):
        if hp is not None:
            out.append((name, hp, kind))
    return out


def _probe(host: str, port: int, family: int, kind: int) -> None:
    """Fail (``OSError``: address in use) if any socket holds the port; see the docstring."""
    with socket.socket(family, kind) as probe:
        if kind == socket.SOCK_STREAM:  # TIME_WAIT of a previous run must not count as taken
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))


def bind_group(hp: HostPort, kind: int, count: int) -> list[socket.socket]:
    """``count`` sockets on one address with ``SO_REUSEPORT`` (listening, for TCP)."""
    host, port = hp
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if port:
        _probe(host, port, family, kind)
    group: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, kind)
            group.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if kind == socket.SOCK_STREAM:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            port = sock.getsockname()[1]  # port 0: the others join the port the first got
            if kind == socket.SOCK_STREAM:
                sock.listen(1024)
            sock.set_inheritable(True)
    except OSError:
        for sock in group:
            sock.close()
        raise
    return group


def _bind_udp(host: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.bind((host, 0))
        sock.set_inheritable(True)
    except OSError:
        sock.close()
        raise
    return sock


@dataclass(eq=False)
class Worker:
    """One worker process and what it reported when ready."""

    slot: int
    generation: int
    proc: asyncio.subprocess.Process
    started: float
    ready: asyncio.Future[dict[str, object]]
    admin: tuple[str, int] | None = None
    retiring: bool = False

    @property
    def name(self) -> str:
        return f"w{self.slot}.{self.generation}"


@dataclass(eq=False)
class _Slot:
    index: int
    fds: dict[str, int]
    current: Worker | None = None
    generation: int = 0
    failures: int = 0
    retiring: set[Worker] = field(default_factory=set)


class Supervisor:
    """Runs the workers of one server (see the module docstring)."""

    def __init__(self, cfg: Config, argv: Sequence[str], processes: int) -> None:
        self.cfg = cfg
        self.argv = list(argv)
        self.processes = processes
        self.metrics = Metrics()
        self.c_restarts = self.metrics.fast_counter(
            "supervisor_restarts", "Workers started again after an unexpected exit", ["slot"])
        self.c_reloads = self.metrics.fast_counter(
            "supervisor_reloads", "Rolling reloads, by outcome", ["outcome"])
        self.slots: list[_Slot] = []
        self.metrics.callback_gauge("supervisor_workers", "Worker processes, by state",
                                    ["state"], self._worker_counts)
        self.sockets: dict[str, list[socket.socket]] = {}
        self.owner: RegistryOwner | None = None
        self.hub: ReplicaHub | None = None
        self.token = cfg.admin_token or secrets.token_urlsafe(32)
        self._tmp = tempfile.TemporaryDirectory(prefix="signaling-")
        self._stopping = False
        self._reload_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        #: Pids of the worker processes started and not reaped yet (whether ready or not):
        #: their journals are in use (``journal.prune``).
        self.pids: set[int] = set()
        self._front: AdminFront | None = None
        #: Live options PATCHed through the admin front since the last reload: what a
        #: restarted worker must apply to run as its siblings do (see ``patched``).
        self.live: dict[str, int | float | str] = {}

    # -- start and stop ----------------------------------------------------------------------

    def bind(self) -> None:
        """Bind every listener's group (``OSError`` if a port is taken)."""
        try:
            for name, hp, kind in _listeners(self.cfg):
                self.sockets[name] = bind_group(hp, kind, self.processes)
            if self.cfg.sip_udp is not None:
                # Each slot's own port (signaling/transports/udp.py: Via, Record-Route), kept
                # across the slot's workers so that what belongs to the slot reaches its worker.
                self.sockets["sip_udp_slot"] = []
                for _ in range(self.processes):
                    self.sockets["sip_udp_slot"].append(_bind_udp(self.cfg.sip_udp[0]))
        except OSError:
            self.close_sockets()
            raise
        self.slots = [_Slot(i, {n: g[i].fileno() for n, g in self.sockets.items()})
                      for i in range(self.processes)]

    def close_sockets(self) -> None:
        for group in self.sockets.values():
            for sock in group:
                sock.close()
        self.sockets.clear()

    async def start(self) -> bool:
        """Start the shared registry, the admin front and every worker; False if a worker
        could not start (the caller stops everything: a server that cannot start its workers
        should fail at once, not retry in the background)."""
        if self.cfg.registry == "memory":
            registry = MemoryRegistry(max_bindings_per_aor=self.cfg.max_bindings_per_aor,
                                      max_bytes=self.cfg.binding_memory << 20)
            self.owner = RegistryOwner(registry, str(Path(self._tmp.name) / OWNER_SOCKET))
            await self.owner.start()
            if os.environ.get(SHARING_ENV, "replica") == "replica":
                self.hub = ReplicaHub(str(Path(self._tmp.name) / HUB_SOCKET))
                await self.hub.start()
                self._watch(self._prune_journals())
        if self.cfg.admin is not None:
            from signaling.admin.front import AdminFront  # aiohttp: only with the admin API
            front = AdminFront(self, self.cfg.admin, self.token)
            await front.start()
            self._front = front
            if not self.cfg.admin_token:
                print(f"signaling: admin API token (generated): {self.token}",
                      file=sys.stderr, flush=True)
        started = await asyncio.gather(*(self._start_slot(slot) for slot in self.slots))
        if not all(started):
            return False
        log.info("supervisor %d: %d workers serving", os.getpid(), self.processes)
        return True

    async def stop(self) -> None:
        """SIGTERM every worker (each drains, ``Server.stop``), SIGKILL what outlives the bound."""
        self._stopping = True
        workers = self.workers()
        for w in workers:
            _signal(w, signal.SIGTERM)
        bound = self.cfg.shutdown_timeout + STOP_GRACE
        await asyncio.gather(*(self._reap(w, bound) for w in workers))
        for task in list(self._tasks):
            task.cancel()
        if self._front is not None:
            await self._front.close()
        if self.hub is not None:
            await self.hub.close()
        if self.owner is not None:
            await self.owner.close()
        self.close_sockets()
        self._tmp.cleanup()
        log.info("supervisor: every worker stopped")

    def workers(self) -> list[Worker]:
        out = []
        for slot in self.slots:
            if slot.current is not None:
                out.append(slot.current)
            out.extend(slot.retiring)
        return out

    def serving(self) -> list[Worker]:
        """Workers that reported ready and are not being replaced (the admin front's view)."""
        return [s.current for s in self.slots if s.current is not None
                and s.current.ready.done() and not s.current.ready.exception()]

    def _worker_counts(self) -> dict[tuple[str, ...], float]:
        return {("serving",): float(len(self.serving())),
                ("retiring",): float(sum(len(s.retiring) for s in self.slots))}

    # -- workers -----------------------------------------------------------------------------

    async def _spawn(self, slot: _Slot) -> Worker:
        slot.generation += 1
        read_fd, write_fd = os.pipe()
        registry = None
        if os.environ.get(SHARING_ENV) == "private":
            pass  # each worker keeps its ``--registry memory`` to itself
        elif self.hub is not None:
            registry = f"replica+unix://{self._tmp.name}"
        elif self.owner is not None:
            registry = f"shared+unix://{self.owner.path}"
        info = WorkerInfo(slot=slot.index, generation=slot.generation, fds=slot.fds,
                          ready_fd=write_fd, supervisor=os.getpid(), registry=registry,
                          admin_token=self.token, run_dir=self._tmp.name,
                          live=dict(self.live))
        env = dict(os.environ)
        env[WORKER_ENV] = msgspec.json.encode(info).decode()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "signaling", *self.argv, env=env,
                pass_fds=(*slot.fds.values(), write_fd))
        finally:
            os.close(write_fd)
        loop = asyncio.get_running_loop()
        worker = Worker(slot.index, slot.generation, proc, time.monotonic(),
                        loop.create_future())
        self.pids.add(proc.pid)
        self._watch(self._read_ready(worker, read_fd))
        self._watch(self._monitor(worker, slot))
        log.info("worker %s started (pid %d)", worker.name, proc.pid)
        return worker

    async def _read_ready(self, worker: Worker, fd: int) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb"))
        try:
            line = await reader.readline()
        finally:
            transport.close()
        if worker.ready.done():
            return
        if not line:
            worker.ready.set_exception(RuntimeError("exited before it was ready"))
            return
        details = msgspec.json.decode(line, type=dict[str, object])
        admin = details.get("admin")
        if isinstance(admin, list) and len(admin) == 2:
            worker.admin = (str(admin[0]), int(admin[1]))
        worker.ready.set_result(details)

    async def _start_slot(self, slot: _Slot) -> bool:
        """Start a worker for ``slot`` and wait until it serves; False (and it is killed) if it
        does not report ready in time."""
        worker = await self._spawn(slot)
        try:
            await asyncio.wait_for(asyncio.shield(worker.ready), READY_TIMEOUT)
        except (TimeoutError, RuntimeError) as exc:
            log.error("worker %s did not start: %s", worker.name, exc or "timeout")
            # During a reload the old worker serves on and this one is just discarded;
            # otherwise the slot is empty and the monitor restarts it after its back-off.
            worker.retiring = slot.current is not None
            _signal(worker, signal.SIGKILL)
            return False
        old, slot.current = slot.current, worker
        if old is not None:
            self._retire(slot, old)
        log.info("worker %s ready (pid %d)", worker.name, worker.proc.pid)
        return True

    def _retire(self, slot: _Slot, worker: Worker) -> None:
        worker.retiring = True
        slot.retiring.add(worker)
        _signal(worker, signal.SIGTERM)

    async def _monitor(self, worker: Worker, slot: _Slot) -> None:
        code = await worker.proc.wait()
        self.pids.discard(worker.proc.pid)
        slot.retiring.discard(worker)
        if not worker.ready.done():
            worker.ready.set_exception(RuntimeError(f"exited with status {code}"))
        if worker.retiring or self._stopping:
            log.info("worker %s exited (status %d)", worker.name, code)
            return
        if slot.current is not worker and slot.current is not None:
            return
        slot.current = None
        lived = time.monotonic() - worker.started
        slot.failures = 1 if lived >= STABLE_AFTER else slot.failures + 1
        delay = min(MAX_BACKOFF, RESTART_BACKOFF * 2 ** (slot.failures - 1))
        log.error("worker %s died (status %d) after %.1f s: restarting in %.1f s",
                  worker.name, code, lived, delay)
        self.c_restarts.inc(str(slot.index))
        await asyncio.sleep(delay)
        if not self._stopping and slot.current is None:
            await self._start_slot(slot)

    async def _reap(self, worker: Worker, bound: float) -> None:
        try:
            await asyncio.wait_for(worker.proc.wait(), bound)
        except TimeoutError:
            log.error("worker %s did not stop within %.1f s: killed", worker.name, bound)
            _signal(worker, signal.SIGKILL)
            await worker.proc.wait()

    async def _prune_journals(self) -> None:
        """Remove the journals and dialog tables of exited workers once nothing needs them
        (the rules and why they are enough: ``signaling.registry.journal``, ``.dialogmap``)."""
        while True:
            await asyncio.sleep(PRUNE_EVERY)
            try:
                now = time.time()
                removed = prune(self._tmp.name, self.pids, now)
                tables = dialogmap.prune(self._tmp.name, self.pids, now)
            except OSError as exc:
                log.error("supervisor: cannot prune the journals: %s", exc)
                continue
            if removed:
                log.info("supervisor: removed %d journals of exited workers", len(removed))
            if tables:
                log.info("supervisor: removed %d dialog tables of exited workers", len(tables))

    def _watch(self, aw: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(aw)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- reload ------------------------------------------------------------------------------

    def patched(self, changes: dict[str, int | float | str]) -> None:
        """Every serving worker took ``changes`` (``PATCH /api/v1/config``): a worker started
        after a crash gets them too, or the server would run two configurations at once."""
        self.live.update(changes)

    async def reload(self) -> bool:
        """Replace every worker, one slot at a time; True if every slot got its new worker.

        The new workers run the configuration on disk, as a restart of a single-process server
        does: live changes made through the admin API are dropped (put them in the file to
        keep them)."""
        async with self._reload_lock:
            log.info("reload: starting new workers on the code and configuration on disk")
            if self.live:
                log.info("reload: live changes %s give way to the configuration on disk",
                         sorted(self.live))
            self.live = {}
            ok = True
            for slot in self.slots:
                if self._stopping:
                    return False
                ok = await self._start_slot(slot) and ok
            self.c_reloads.inc("done" if ok else "failed")
            log.info("reload %s", "done" if ok else "failed for some workers: they run on")
            return ok


def _signal(worker: Worker, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        worker.proc.send_signal(sig)


async def run_supervisor(cfg: Config, argv: Sequence[str], processes: int,
                         pid_file: str | None) -> int:
    """The supervisor's life: bind, start, serve until SIGTERM/SIGINT, reload on SIGHUP."""
    sup = Supervisor(cfg, argv, processes)
    try:
        sup.bind()
    except OSError as exc:
        print(f"signaling: cannot start: {exc}", file=sys.stderr)
        return 1
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    reloads: set[asyncio.Task[bool]] = set()

    def on_hup() -> None:
        task = loop.create_task(sup.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    loop.add_signal_handler(signal.SIGHUP, on_hup)
    if pid_file:
        Path(pid_file).write_text(f"{os.getpid()}\n")
    try:
        if not await sup.start():
            print("signaling: cannot start: a worker failed to start (see the log)",
                  file=sys.stderr)
            return 1
        await stopping.wait()
    finally:
        await sup.stop()
        if pid_file:
            with contextlib.suppress(OSError):
                if Path(pid_file).read_text().strip() == str(os.getpid()):
                    Path(pid_file).unlink()
    return 0
