"""``signaling serve --processes 2``: real supervisor and worker processes, real signals.

The kernel picks a worker per datagram by hashing the source address and port
(``SO_REUSEPORT``), so the tests spread traffic over the workers by sending from many sockets,
and find out which worker did what through each worker's own admin listener (listed by the
supervisor's ``/health``).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect as ws_connect

from harness.serverproc import ServerProcess, options, server_env, sip_request
from harness.sipp_runner import Sipp
from protocols.diameter.constants import ResultCode
from protocols.sip.message import CSeq, NameAddr, Request, SipURI
from signaling.registry import dialogmap
from signaling.registry.journal import PREFIX, writer_pid
from signaling.registry.replica import SNAPSHOT_SLICE
from signaling.worker import WORKER_ENV
from tests.peers.sipua import UdpUA, invited
from tests.signaling.admin.helpers import (
    TOKEN,
    register,
    register_message,
    session,
    sip_status,
)
from tests.signaling.diameter.client import Client as DiameterClient
from tests.signaling.diameter.client import result_code
from tests.siptools import register_many, registered_contacts

#: Bound on waiting for workers to start or restart: interpreters start slowly on a busy
#: machine; the supervisor's own back-off is a fraction of a second.
START_BOUND = 60.0
#: Distinct source sockets used to reach every worker: with 2 workers and a hash per source,
#: all 24 landing on one worker has probability 2**-23.
SOURCES = 24


class Supervised(ServerProcess):
    """A server with ``--processes 2``, its admin front and a pid file."""

    def __init__(self, *extra: str) -> None:
        self.pid_file = Path(tempfile.mkdtemp(prefix="sig-sup-")) / "signaling.pid"
        super().__init__("--processes", "2", "--pid-file", str(self.pid_file),
                         "--admin-token", TOKEN, "--domain", "example.com,127.0.0.1", *extra,
                         admin=True, ws=True, diameter=True)

    def start(self) -> Supervised:
        super().start()
        self.wait_serving(2)
        return self

    def __enter__(self) -> Supervised:
        return self.start()

    def health(self) -> dict[str, object]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/health",
                                    timeout=5) as resp:
            body: dict[str, object] = json.loads(resp.read())
            return body

    def workers(self) -> list[dict[str, str]]:
        workers = self.health()["workers"]
        assert isinstance(workers, list)
        return workers

    def wait_serving(self, count: int, exclude_pids: set[int] | None = None) -> None:
        """Until ``count`` workers serve (none of them in ``exclude_pids``) and /ready is 200."""
        deadline = time.monotonic() + START_BOUND
        while time.monotonic() < deadline:
            assert self.alive(), self.read_log()
            try:
                workers = self.workers()
                pids = {int(w["pid"]) for w in workers}
                with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/ready",
                                            timeout=5) as resp:
                    ready = resp.status == 200
            except OSError:
                ready = False
            else:
                if ready and len(workers) == count and not pids & (exclude_pids or set()):
                    return
            time.sleep(0.1)
        raise AssertionError(f"workers not serving: {self.read_log()}")


@pytest.fixture
def server() -> Iterator[Supervised]:
    srv = Supervised()
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def worker_metric(admin: str, name: str, **labels: str) -> float:
    """One sample from a worker's own (private) /metrics."""
    with urllib.request.urlopen(f"http://{admin}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return metric_value(text, name, **labels)


def metric_value(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


def front_metrics(srv: Supervised) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{srv.admin_port}/metrics", timeout=5) as r:
        text: str = r.read().decode()
    return text


def from_many_sources(port: int, count: int = SOURCES) -> int:
    """OPTIONS from ``count`` fresh sockets; returns how many were answered."""
    return sum(sip_request(port, options(port), timeout=5) is not None for _ in range(count))


def test_registration_through_one_worker_is_found_through_every_other(
        server: Supervised) -> None:
    assert register(server.udp_port, "alice", 7001) == 200
    # Queries from many source ports reach both workers; every one lists the binding.
    for _ in range(SOURCES):
        assert registered_contacts(server.udp_port, "alice", "example.com") == [
            "sip:alice@127.0.0.1:7001"]
    served = [worker_metric(w["admin"], "signaling_sip_requests_received_total",
                            method="REGISTER", transport="udp") for w in server.workers()]
    assert len(served) == 2 and all(n > 0 for n in served), served

    async def through_api() -> set[str]:
        seen = set()
        async with session(server.admin_port or 0) as http:
            for _ in range(4):  # the front forwards round robin
                async with http.get("/api/v1/registrations/sip:alice@example.com") as resp:
                    assert resp.status == 200, await resp.text()
                    body = await resp.json()
                    assert [b["contact"] for b in body["bindings"]] == [
                        "sip:alice@127.0.0.1:7001"]
                    seen.add(resp.headers["X-Signaling-Worker"])
        return seen

    assert {name.split(".")[0] for name in asyncio.run(through_api())} == {"w0", "w1"}


def test_metrics_add_up_over_workers(server: Supervised) -> None:
    name = "signaling_sip_requests_received_total"
    before = metric_value(front_metrics(server), name, method="OPTIONS", transport="udp")
    assert from_many_sources(server.udp_port) == SOURCES
    text = front_metrics(server)
    per_worker = [worker_metric(w["admin"], name, method="OPTIONS", transport="udp")
                  for w in server.workers()]
    total = metric_value(text, name, method="OPTIONS", transport="udp")
    assert total - before == SOURCES
    assert total == sum(per_worker) and all(n > 0 for n in per_worker), per_worker
    assert metric_value(text, "signaling_supervisor_workers", state="serving") == 2


def test_kill9_of_a_worker_mid_load(server: Supervised) -> None:
    victim = server.workers()[0]
    killed: list[int] = []

    def kill_once(answered: int) -> None:
        if answered >= 50 and not killed:
            os.kill(int(victim["pid"]), signal.SIGKILL)
            killed.append(int(victim["pid"]))

    async def load() -> set[str]:
        # Several client sockets, so both workers carry part of the load.
        batches = [[f"u{c}x{i}" for i in range(150)] for c in range(6)]
        results = await asyncio.gather(*(
            register_many(server.udp_port, users, 7002, window=20, timeout=20.0,
                          on_answer=kill_once if c == 0 else None)
            for c, users in enumerate(batches)))
        return set().union(*results)

    acknowledged = asyncio.run(load())
    assert killed, "the load ended before the kill"
    server.wait_serving(2, exclude_pids=set(killed))
    assert f"worker {victim['name']} died" in server.read_log()
    # No acknowledged registration is lost: each change was in its worker's journal (shared
    # memory) before its 200, so the other worker reads it, and the restarted worker copies
    # that replica.
    for user in sorted(acknowledged)[::15]:
        assert registered_contacts(server.udp_port, user) == [f"sip:{user}@127.0.0.1:7002"]

    async def listed() -> set[str]:
        aors: set[str] = set()
        async with session(server.admin_port or 0) as http:
            for offset in range(0, 2000, 1000):
                async with http.get("/api/v1/registrations",
                                    params={"offset": offset, "limit": 1000}) as resp:
                    assert resp.status == 200
                    aors |= {item["aor"] for item in (await resp.json())["items"]}
        return aors

    assert {f"sip:{u}@127.0.0.1" for u in acknowledged} <= asyncio.run(listed())
    assert from_many_sources(server.udp_port) == SOURCES  # both slots serve again
    assert metric_value(front_metrics(server), "signaling_supervisor_restarts_total",
                        slot=victim["name"].split(".")[0][1:]) == 1


def test_kill9_of_every_worker_at_once_loses_no_acknowledged_registration(
        server: Supervised) -> None:
    """With no worker left to copy a replica from, the restarted ones read the dead workers'
    journals from their start (registry/hub.py)."""
    users = asyncio.run(register_many(server.udp_port, [f"all{i}" for i in range(200)], 7004,
                                      window=20, timeout=20.0))
    assert len(users) == 200
    victims = {int(w["pid"]) for w in server.workers()}
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    server.wait_serving(2, exclude_pids=victims)
    for user in sorted(users)[::10]:
        assert registered_contacts(server.udp_port, user) == [f"sip:{user}@127.0.0.1:7004"]

    async def listed() -> set[str]:
        async with (session(server.admin_port or 0) as http,
                    http.get("/api/v1/registrations", params={"limit": 1000}) as resp):
            assert resp.status == 200
            return {item["aor"] for item in (await resp.json())["items"]}

    assert asyncio.run(listed()) == {f"sip:{u}@127.0.0.1" for u in users}


def test_a_reload_copies_a_registry_of_several_slices(server: Supervised) -> None:
    """Each new worker of a reload is sent a serving worker's replica a slice at a time
    (``SNAPSHOT_SLICE`` AORs, registry/replica.py): with more AORs than two slices, every
    registration is found through the new workers."""
    wanted = [f"many{i}" for i in range(2 * SNAPSHOT_SLICE + 100)]
    users = asyncio.run(register_many(server.udp_port, wanted, 7005, window=50, timeout=60.0))
    assert len(users) == len(wanted)
    _reload(server)
    for user in sorted(users)[::50]:
        assert registered_contacts(server.udp_port, user) == [f"sip:{user}@127.0.0.1:7005"]


def _journal_pids(run_dir: str) -> set[int | None]:
    return {writer_pid(n) for n in os.listdir(run_dir) if n.startswith(PREFIX)}


def _table_pids(run_dir: str) -> set[int | None]:
    """The writers of the dialog tables in the run directory (registry/dialogmap.py)."""
    return {dialogmap.writer_pid(n) for n in os.listdir(run_dir)
            if n.startswith(dialogmap.PREFIX)}


def _reload(srv: Supervised) -> set[int]:
    """SIGHUP, until the new generation serves; its pids."""
    before = {int(w["pid"]) for w in srv.workers()}
    assert srv.proc is not None
    srv.proc.send_signal(signal.SIGHUP)
    srv.wait_serving(2, exclude_pids=before)
    return {int(w["pid"]) for w in srv.workers()}


def test_reloads_leave_only_the_journals_still_needed(tmp_path: Path) -> None:
    """Each reload leaves N journals of exited workers: each goes once every binding it
    mentions has expired (registry/journal.py), so the run directory holds the serving
    workers' journals and the first generation's (its registrations live on), and a kill -9
    of every worker still loses none of them: the new workers rebuild from those.  The dialog
    tables of exited workers that held no dialog go at once (registry/dialogmap.py)."""
    config = tmp_path / "signaling.toml"
    config.write_text("min_expires = 1\n")
    with Supervised("--config", str(config)) as srv:
        first = {int(w["pid"]) for w in srv.workers()}
        environ = Path(f"/proc/{min(first)}/environ").read_bytes().split(b"\0")
        (info,) = [v for v in environ if v.startswith(WORKER_ENV.encode() + b"=")]
        run_dir = json.loads(info.split(b"=", 1)[1])["run_dir"]
        keep = [f"keep{n}" for n in range(SOURCES)]  # one socket each: both workers take some
        assert {register(srv.udp_port, user) for user in keep} == {200}
        _reload(srv)
        assert {register(srv.udp_port, f"brief{n}", expires=1) for n in range(SOURCES)} == {200}
        _reload(srv)
        last = _reload(srv)
        for user in keep:  # through both new workers: each maps its journal by then
            assert registered_contacts(srv.udp_port, user, "example.com") == [
                f"sip:{user}@127.0.0.1:5999"]
        deadline = time.monotonic() + START_BOUND
        while _journal_pids(run_dir) != first | last and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _journal_pids(run_dir) == first | last
        # No generation held a dialog: only the serving workers' tables are left.
        while _table_pids(run_dir) != last and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _table_pids(run_dir) == last
        assert registered_contacts(srv.udp_port, "brief0", "example.com") == []
        for pid in last:
            os.kill(pid, signal.SIGKILL)
        srv.wait_serving(2, exclude_pids=last)
        for user in keep:
            assert registered_contacts(srv.udp_port, user, "example.com") == [
                f"sip:{user}@127.0.0.1:5999"]


def _reload_under(server: Supervised, sipp: Sipp, after: float) -> None:
    """Start ``sipp``, reload the server ``after`` seconds in, and wait until new workers serve
    every slot (the caller stops SIPp)."""
    before = {int(w["pid"]) for w in server.workers()}
    sipp.start()
    time.sleep(after)
    reload = subprocess.run([sys.executable, "-m", "signaling", "reload", "--pid-file",
                             str(server.pid_file)], capture_output=True, text=True, timeout=30)
    assert reload.returncode == 0, reload.stderr
    server.wait_serving(2, exclude_pids=before)


def test_reload_under_sipp_register_load_loses_nothing(server: Supervised) -> None:
    # -t un: one socket per call, so the registrations spread over both workers.
    sipp = Sipp("register", f"127.0.0.1:{server.udp_port}", calls=1200, rate=100,
                keys={"user": "reloaded", "contact": "127.0.0.1:7003", "expires": "600"},
                extra=["-t", "un", "-max_socket", "512"], timeout=60)
    try:
        _reload_under(server, sipp, after=3)
        result = sipp.wait()
    finally:
        sipp.stop()
    assert result.failed == 0 and result.successful == 1200, result
    log = server.read_log()
    assert "reload done" in log
    assert "w0.2" in log and "w1.2" in log


def test_a_reload_under_load_hands_each_slot_over_at_once(server: Supervised) -> None:
    """Each old worker passes on thousands of REGISTER keys (kept for Timer J), then says
    "released": the new worker must hear it, not wait ``handoff.RELEASE_WAIT`` (5 s) with the
    slot's sockets unread.  Sent back to back, the keys filled the new worker's queue (10
    datagrams) and "released" was refused behind them (bench_reload near capacity: REGISTERs
    answered 3-7 s late).  Only the hand-off is checked, not SIPp's outcome at this rate."""
    sipp = Sipp("register", f"127.0.0.1:{server.udp_port}", calls=12_000, rate=2_000,
                keys={"user": "many", "contact": "127.0.0.1:7003", "expires": "600"},
                extra=["-t", "un", "-max_socket", "512"], timeout=60)
    try:
        _reload_under(server, sipp, after=4)
    finally:
        sipp.stop()
    deadline = time.monotonic() + START_BOUND
    while metric_value(front_metrics(server), "signaling_handoff_total", direction="received",
                       kind="released") < 2:  # one per new worker, from its predecessor
        log = server.read_log()
        assert time.monotonic() < deadline and "did not release the slot" not in log, \
            log[-3000:]
        time.sleep(0.1)
    assert "did not release the slot" not in server.read_log()


def test_sigterm_stops_every_worker(server: Supervised) -> None:
    pids = [int(w["pid"]) for w in server.workers()]
    assert server.stop() == 0
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    log = server.read_log()
    assert log.count("signaling.server: stopped") == 2
    assert "every worker stopped" in log
    assert not server.pid_file.exists()


@pytest.mark.parametrize("processes", ["1", "2"])
def test_a_second_server_on_the_same_port_is_refused(server: Supervised,
                                                     processes: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "signaling", "serve", "--processes", processes,
         "--sip-udp", f"127.0.0.1:{server.udp_port}", "--sip-ws", "off", "--admin", "off",
         "--diameter", "off"], capture_output=True, text=True, timeout=60,
        env=server_env())
    assert proc.returncode == 1, proc.stderr
    assert "cannot start" in proc.stderr
    assert from_many_sources(server.udp_port, 4) == 4


def test_reload_without_a_supervisor_fails_cleanly() -> None:
    missing = Path(tempfile.mkdtemp()) / "none.pid"
    proc = subprocess.run([sys.executable, "-m", "signaling", "reload", "--pid-file",
                           str(missing)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1 and "reload" in proc.stderr


def test_single_process_ignores_sighup() -> None:
    with ServerProcess(ws=False) as srv:
        assert srv.proc is not None
        srv.proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert srv.alive()
        assert sip_request(srv.udp_port, options(srv.udp_port), timeout=5) is not None
    assert "SIGHUP ignored" in srv.log



def _callee(server: Supervised, user: str, scenario: str, calls: int) -> Sipp:
    callee = Sipp(scenario, calls=calls, timeout=60)
    assert sip_status(server.udp_port, register_message(server.udp_port, user, callee.port,
                                                        domain="127.0.0.1")) == 200
    return callee.start()


def _invites_per_worker(server: Supervised) -> list[float]:
    return [worker_metric(w["admin"], "signaling_sip_requests_received_total",
                          method="INVITE", transport="udp") for w in server.workers()]


@pytest.mark.parametrize(("uac", "uas"), [("uac", "uas"), ("uac-callee-bye", "uas-callee-bye")])
def test_calls_through_both_workers_complete(server: Supervised, uac: str, uas: str) -> None:
    """The callee answers from one port: by the kernel's hash all its responses and requests
    would reach one worker, while the callers (one socket per call) reach both.  Every call
    completes because responses come back to the Via port of the worker that sent the INVITE,
    and ACK and BYE to its Record-Route port."""
    callee = _callee(server, "bob", uas, 100)
    try:
        caller = Sipp(uac, f"127.0.0.1:{server.udp_port}", calls=100, rate=50, timeout=60,
                      service="bob", extra=["-t", "un", "-max_socket", "64"]).start()
        result = caller.wait()
    finally:
        answered = callee.wait()
    assert (result.successful, result.failed) == (100, 0), result.errors[-3000:]
    assert (answered.successful, answered.failed) == (100, 0), answered.errors[-3000:]
    invites = _invites_per_worker(server)
    assert all(n > 0 for n in invites), invites


def test_reload_under_call_load_fails_no_call(server: Supervised) -> None:
    """Calls that span the reload (3 s each) end on the new workers: their ACK and BYE reach
    the slot's Record-Route port, read by the new worker, which loads the dialog from the
    shared registry; the old workers finish their transactions and exit."""
    before = {int(w["pid"]) for w in server.workers()}
    callee = _callee(server, "carol", "uas", 300)
    try:
        caller = Sipp("uac", f"127.0.0.1:{server.udp_port}", calls=300, rate=30, timeout=90,
                      service="carol", extra=["-t", "un", "-max_socket", "64", "-d", "3000"])
        caller.start()
        time.sleep(4)
        reload = subprocess.run([sys.executable, "-m", "signaling", "reload", "--pid-file",
                                 str(server.pid_file)], capture_output=True, text=True,
                                timeout=30)
        assert reload.returncode == 0, reload.stderr
        server.wait_serving(2, exclude_pids=before)
        result = caller.wait()
    finally:
        caller.stop()
        answered = callee.wait()
    assert (result.successful, result.failed) == (300, 0), result.errors[-3000:]
    assert (answered.successful, answered.failed) == (300, 0), answered.errors[-3000:]
    assert "reload done" in server.read_log()


def _reload_while(server: Supervised, uac: str, uas: str, user: str, calls: int,
                  pause_ms: int) -> None:
    """``calls`` calls, each waiting ``pause_ms`` at the callee (or the caller) while the
    server reloads; every call must complete as its scenario says."""
    before = {int(w["pid"]) for w in server.workers()}
    callee = Sipp(uas, calls=calls, timeout=90, extra=["-d", str(pause_ms)])
    assert sip_status(server.udp_port, register_message(server.udp_port, user, callee.port,
                                                        domain="127.0.0.1")) == 200
    callee.start()
    try:
        caller = Sipp(uac, f"127.0.0.1:{server.udp_port}", calls=calls, rate=calls,
                      timeout=90, service=user,
                      extra=["-t", "un", "-max_socket", "64", "-d", str(pause_ms)]).start()
        time.sleep(1.0)  # every call is ringing now
        start = time.monotonic()
        reload = subprocess.run([sys.executable, "-m", "signaling", "reload", "--pid-file",
                                 str(server.pid_file)], capture_output=True, text=True,
                                timeout=30)
        assert reload.returncode == 0, reload.stderr
        server.wait_serving(2, exclude_pids=before)
        # The pause is long enough for a reload on a busy machine (one took 8.6 s at load 10):
        # every answer (or CANCEL) comes after both slots changed hands, so every one of them
        # is handed over.
        assert time.monotonic() - start < pause_ms / 1000 - 1.5, "reload slower than pause"
        result = caller.wait()
    finally:
        answered = callee.wait()
    assert (result.successful, result.failed) == (calls, 0), result.errors[-3000:]
    assert (answered.successful, answered.failed) == (calls, 0), answered.errors[-3000:]


@pytest.fixture
def patient() -> Iterator[Supervised]:
    """A server whose retiring workers wait for their INVITEs longer than the callee rings."""
    with Supervised("--shutdown-timeout", "45") as srv:
        yield srv


def test_answer_after_a_reload_reaches_the_old_worker(patient: Supervised) -> None:
    """The callee answers 20 s after ringing; meanwhile the workers are replaced.  The 200 comes
    to the slot's port, now read by the new worker, which hands it to the old one (which holds
    the INVITE transactions, and waits for them within --shutdown-timeout)."""
    _reload_while(patient, "uac", "uas-slow-answer", "slow", 10, 20_000)
    text = front_metrics(patient)
    assert metric_value(text, "signaling_handoff_total", direction="sent",
                        kind="response") >= 10


def test_cancel_after_a_reload_reaches_the_old_worker(patient: Supervised) -> None:
    _reload_while(patient, "uac-cancel-late", "uas-cancel", "late", 10, 20_000)
    text = front_metrics(patient)
    assert metric_value(text, "signaling_handoff_total", direction="sent",
                        kind="cancel") >= 10


async def test_what_the_old_worker_holds_reaches_it_after_a_reload(
        patient: Supervised) -> None:
    """The old worker holds a confirmed call and a MESSAGE the callee has not answered when both
    slots change hands.  The MESSAGE retransmitted to the shared port belongs to the old
    worker's transaction (§17.2.3): the new worker hands it over rather than forwarding it again
    under a branch of its own.  The caller's BYE, for a dialog the new worker does not hold, is
    handed over too (the old worker may have confirmed it too recently for the shared
    registry).  Both complete end to end.  So does a REGISTER the old worker answered as it
    read it (no transaction: ``SipCore.answer_at_once``), retransmitted after the reload: the
    old worker's kept answer, not the new worker applying it again (§10.3 step 7 would refuse
    the same CSeq as out of order)."""
    callee = await UdpUA("bob", "127.0.0.1", patient.udp_port).start()
    caller = await UdpUA("alice", "127.0.0.1", patient.udp_port).start()
    try:
        # The callee answers where §18.2.2 says (the port of the worker that forwarded the
        # INVITE), as every later answer here: the shared port may lead to the other worker.
        invite, got = await invited(caller, callee)
        await callee.answer(callee.reply(got, 200, tag="c1", body=b"v=0\r\n"))
        leg = caller.uac_leg(invite, await caller.response(200))
        await caller.send(caller.in_dialog(leg, "ACK", cseq=1))
        await callee.request("ACK", START_BOUND)
        uri = SipURI("sip", "127.0.0.1", user="bob", port=patient.udp_port)
        message = Request(method="MESSAGE", uri=uri, vias=[caller.via()],
                          from_=caller.aor().with_param("tag", "reload1"), to=NameAddr(uri),
                          call_id="retransmitted-after-reload", cseq=CSeq(1, "MESSAGE"),
                          max_forwards=70, content_type="text/plain", body=b"hello")
        await caller.send(message)
        forwarded = await callee.request("MESSAGE", timeout=START_BOUND)
        register = caller.register()
        await caller.send(register)
        first = await caller.response(200, "REGISTER", timeout=START_BOUND)
        before = {int(w["pid"]) for w in patient.workers()}
        reload = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "signaling", "reload", "--pid-file",
                             str(patient.pid_file)], capture_output=True, text=True, timeout=30)
        assert reload.returncode == 0, reload.stderr
        await asyncio.to_thread(patient.wait_serving, 2, before)
        await caller.send(message)  # the same request again: a retransmission (§17.1.2.2)
        await caller.send(register)
        again = await caller.response(200, "REGISTER", timeout=START_BOUND)
        assert again.to.tag == first.to.tag  # the old worker's answer, resent
        await caller.send(caller.in_dialog(leg, "BYE"))
        await callee.answer(callee.reply(await callee.request("BYE", START_BOUND), 200))
        await caller.response(200, "BYE", timeout=START_BOUND)
        deadline = time.monotonic() + START_BOUND
        # The new workers read the slots' sockets only once the old ones released them.
        for direction, kind in (("sent", "retransmission"), ("sent", "in_dialog"),
                                ("received", "released")):
            while metric_value(front_metrics(patient), "signaling_handoff_total",
                               direction=direction, kind=kind) < 1:
                assert time.monotonic() < deadline, (kind, patient.read_log())
                await asyncio.sleep(0.2)
        await callee.answer(callee.reply(forwarded, 200, tag="bob1"))
        ok = await caller.response(200, "MESSAGE", timeout=START_BOUND)
        assert ok.call_id == message.call_id
        # Every copy the callee got is the old worker's one client transaction (its own Timer
        # E retransmissions), never a second forward by the new worker.
        copies = [m for m in callee.received
                  if isinstance(m, Request) and m.method == "MESSAGE"]
        assert {m.vias[0].params["branch"] for m in copies} == \
            {forwarded.vias[0].params["branch"]}
    finally:
        await caller.close()
        await callee.close()


def test_dialogs_and_stats_answer_for_every_worker(server: Supervised) -> None:
    callee = _callee(server, "dave", "uas", 20)
    caller = Sipp("uac", f"127.0.0.1:{server.udp_port}", calls=20, rate=20, timeout=60,
                  service="dave", extra=["-t", "un", "-max_socket", "64", "-d", "8000"])
    caller.start()
    try:
        async def views() -> None:
            async with session(server.admin_port or 0) as http:
                deadline = time.monotonic() + START_BOUND
                while True:  # until every call is in its 8 s hold
                    async with http.get("/api/v1/dialogs", params={"limit": 100}) as resp:
                        assert resp.status == 200
                        page = await resp.json()
                    if page["counts"].get("confirmed", 0) == 20 or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.2)
                assert page["counts"].get("confirmed") == 20, page["counts"]
                ids = [d["id"] for d in page["items"]]
                assert len(set(ids)) == 20
                async with http.get("/api/v1/dialogs",
                                    params={"offset": 5, "limit": 10}) as resp:
                    assert [d["id"] for d in (await resp.json())["items"]] == ids[5:15]
                for dialog_id in (ids[0], ids[-1]):  # the first and the last worker's
                    async with http.get(f"/api/v1/dialogs/{dialog_id}") as resp:
                        assert resp.status == 200 and (await resp.json())["id"] == dialog_id
                async with http.get("/api/v1/dialogs/nope") as resp:
                    assert resp.status == 404
                async with http.get("/api/v1/stats") as resp:
                    assert resp.status == 200
                    stats = await resp.json()
                assert stats["tables"]["dialogs"] == 20
                assert stats["registrations"]  # the callee's REGISTER, on whichever worker
                per_worker = []
                for w in server.workers():
                    async with aiohttp.ClientSession() as direct, direct.get(
                            f"http://{w['admin']}/api/v1/stats",
                            headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
                        per_worker.append(await resp.json())
                assert all(p["tables"]["dialogs"] > 0 for p in per_worker), per_worker
                # Every call is holding: no SIP message moved between the two readings.
                assert stats["sip"]["requests_received"] == sum(
                    p["sip"]["requests_received"] for p in per_worker)

        asyncio.run(views())
        result = caller.wait()
    finally:
        caller.stop()
        answered = callee.wait()
    assert (result.successful, result.failed) == (20, 0), result.errors[-3000:]
    assert answered.failed == 0


def test_websocket_and_diameter_listeners_are_shared(server: Supervised) -> None:
    """The TCP listeners are the supervisor's too, one per slot: every connection is accepted
    by the worker of the slot the kernel picks, and served."""

    async def clients() -> None:
        for n in range(8):
            async with ws_connect(f"ws://127.0.0.1:{server.ws_port}",
                                  subprotocols=["sip"]) as ws:  # type: ignore[list-item]
                await ws.send(options(server.ws_port or 0, branch=f"z9hG4bKws{n}").decode())
                answer = await asyncio.wait_for(ws.recv(), 10)
                assert str(answer).startswith("SIP/2.0 200")
            diameter = await DiameterClient.connect(server.diameter_port or 0)
            cea = await diameter.handshake()
            assert result_code(cea) == ResultCode.DIAMETER_SUCCESS
            await diameter.close()

    asyncio.run(clients())
    accepted = [worker_metric(w["admin"], "signaling_ws_events_total", event="opened")
                for w in server.workers()]
    assert sum(accepted) == 8, accepted


def test_kill9_while_calls_hold_loses_no_call(server: Supervised) -> None:
    """Calls through both workers are in their hold when one worker is killed: the calls of
    the other are untouched, and the BYEs of the dead one's calls reach its successor on the
    slot's port, which loads each dialog from the shared registry."""
    callee = _callee(server, "erin", "uas", 30)
    caller = Sipp("uac", f"127.0.0.1:{server.udp_port}", calls=30, rate=30, timeout=60,
                  service="erin", extra=["-t", "un", "-max_socket", "64", "-d", "6000"])
    caller.start()
    try:
        time.sleep(3)  # every call answered, holding
        victim = server.workers()[0]
        held = worker_metric(victim["admin"], "signaling_dialogs", state="confirmed")
        assert held > 0
        os.kill(int(victim["pid"]), signal.SIGKILL)
        server.wait_serving(2, exclude_pids={int(victim["pid"])})
        result = caller.wait()
    finally:
        caller.stop()
        answered = callee.wait()
    assert (result.successful, result.failed) == (30, 0), result.errors[-3000:]
    assert (answered.successful, answered.failed) == (30, 0), answered.errors[-3000:]
    loaded = metric_value(front_metrics(server), "signaling_proxy_events_total",
                          event="dialog_loaded")
    assert loaded >= held


def test_with_redis_every_worker_uses_it(redis_url: str) -> None:
    prefix = f"t{os.getpid()}x{time.monotonic_ns()}"
    with Supervised("--registry", f"{redis_url}?prefix={prefix}") as srv:
        assert "shared+unix" not in srv.read_log()  # no registry of the supervisor's
        assert register(srv.udp_port, "frank", 7004) == 200
        for _ in range(SOURCES):
            assert registered_contacts(srv.udp_port, "frank", "example.com") == [
                "sip:frank@127.0.0.1:7004"]
        served = [worker_metric(w["admin"], "signaling_sip_requests_received_total",
                                method="REGISTER", transport="udp") for w in srv.workers()]
        assert all(n > 0 for n in served), served


def test_a_reload_that_cannot_start_keeps_the_old_workers(tmp_path: Path) -> None:
    config = tmp_path / "signaling.toml"
    config.write_text("min_expires = 60\n")
    with Supervised("--config", str(config)) as srv:
        before = {int(w["pid"]) for w in srv.workers()}
        config.write_text("min_expires = 'soon'\n")  # broken on disk: the new workers exit 2
        assert srv.proc is not None
        srv.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + START_BOUND
        while "reload failed" not in srv.read_log() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "reload failed" in srv.read_log()
        assert {int(w["pid"]) for w in srv.workers()} == before
        assert from_many_sources(srv.udp_port) == SOURCES
        assert metric_value(front_metrics(srv), "signaling_supervisor_reloads_total",
                            outcome="failed") == 1


def _worker_min_expires(admin: str) -> int:
    req = urllib.request.Request(f"http://{admin}/api/v1/config",
                                 headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return int(json.loads(resp.read())["config"]["min_expires"])


def test_a_config_patch_survives_a_worker_restart_and_gives_way_to_a_reload(
        server: Supervised) -> None:
    """A worker restarted after kill -9 runs the live change its siblings took through the
    admin API, not the configuration on disk; a reload runs the configuration on disk."""

    async def patch() -> None:
        async with session(server.admin_port or 0) as http, http.patch(
                "/api/v1/config", json={"min_expires": 321}) as resp:
            assert resp.status == 200, await resp.text()

    default = _worker_min_expires(server.workers()[0]["admin"])
    assert default != 321
    asyncio.run(patch())
    assert [_worker_min_expires(w["admin"]) for w in server.workers()] == [321, 321]
    victim = int(server.workers()[0]["pid"])
    os.kill(victim, signal.SIGKILL)
    server.wait_serving(2, exclude_pids={victim})
    assert [_worker_min_expires(w["admin"]) for w in server.workers()] == [321, 321]
    # What the restarted worker enforces: a REGISTER below the minimum gets 423 (§10.3
    # step 7) from whichever worker the source hashes to.
    assert {register(server.udp_port, f"short{n}", expires=120) for n in range(8)} == {423}
    before = {int(w["pid"]) for w in server.workers()}
    assert server.proc is not None
    server.proc.send_signal(signal.SIGHUP)
    server.wait_serving(2, exclude_pids=before)
    assert [_worker_min_expires(w["admin"]) for w in server.workers()] == [default, default]
