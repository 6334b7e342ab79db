"""Several nodes sharing one Redis (issue 5, "Many nodes"), with real processes and SIPp.

- A user registered through node A is called through node B.
- A binding removed through one node is gone for both.
- SIGKILL during a REGISTER load: every REGISTER answered 200 is still there after a restart.
- The same against a 3-master Redis Cluster.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from pathlib import Path

from harness.serverproc import ServerProcess, free_udp_port, free_udp_ports
from tests.siptools import UdpClient, register, register_many, registered_contacts

SIPP = Path(__file__).resolve().parents[3] / "shared" / "reference" / "sipp"


def _sipp(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    # Free media ports (-mp, four from it): SIPp's default 6000 taken by another test's SIPp
    # makes it exit 254.
    return subprocess.run(["sipp", *args, "-nostdin", "-mp", str(free_udp_ports(4))],
                          capture_output=True, text=True, timeout=timeout)


def test_user_registered_on_one_node_is_called_through_the_other(redis_url: str) -> None:
    prefix = f"mn{time.monotonic_ns()}"
    url = f"{redis_url}?prefix={prefix}"
    a = ServerProcess("--registry", url, ws=False).start()
    b = ServerProcess("--registry", url, ws=False).start()
    uas_port = free_udp_port()
    uas = subprocess.Popen(["sipp", "-sf", str(SIPP / "uas-rr.xml"), "-p", str(uas_port),
                            "-mp", str(free_udp_ports(4)), "-nostdin", "-m", "20"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        reg = _sipp(f"127.0.0.1:{a.udp_port}", "-sf", str(SIPP / "register-uas.xml"),
                    "-key", "contact", f"127.0.0.1:{uas_port}", "-m", "1",
                    "-p", str(free_udp_port()))
        assert reg.returncode == 0, reg.stdout[-2000:]
        assert registered_contacts(b.udp_port, "uas") == [f"sip:uas@127.0.0.1:{uas_port}"]
        uac = _sipp(f"127.0.0.1:{b.udp_port}", "-sf", str(SIPP / "uac-proxy.xml"), "-s", "uas",
                    "-m", "20", "-r", "20", "-d", "0", "-p", str(free_udp_port()))
        assert uac.returncode == 0, uac.stdout[-3000:]
    finally:
        uas.kill()
        uas.wait()
        assert a.stop() == 0
        assert b.stop() == 0
    assert "Traceback" not in a.log + b.log


def test_binding_removed_through_one_node_is_gone_for_both(redis_url: str) -> None:
    url = f"{redis_url}?prefix=rm{time.monotonic_ns()}"
    a = ServerProcess("--registry", url, ws=False).start()
    b = ServerProcess("--registry", url, ws=False).start()
    client = UdpClient()
    try:
        contact = "sip:bob@127.0.0.1:7000"
        ok = client.request(a.udp_port, register(a.udp_port, "bob", contact, call_id="c1"))
        assert ok.status == 200
        assert registered_contacts(b.udp_port, "bob") == [contact]
        gone = client.request(b.udp_port, register(b.udp_port, "bob", contact, expires=0,
                                                   call_id="c1", cseq=2))
        assert gone.status == 200
        assert gone.contacts == []
        assert registered_contacts(a.udp_port, "bob") == []
        assert registered_contacts(b.udp_port, "bob") == []
    finally:
        client.close()
        a.stop()
        b.stop()


def test_sigkill_during_register_load_keeps_every_answered_registration(
        redis_url: str) -> None:
    url = f"{redis_url}?prefix=kill{time.monotonic_ns()}"
    node = ServerProcess("--registry", url, ws=False).start()
    users = [f"k{i}" for i in range(2500)]

    def kill_mid_load(count: int) -> None:
        # SIGKILL once a hundred users are answered: the window's 200 REGISTERs are then in
        # flight, some applied and answered, some not.  (Not later: on a busy machine the
        # overload control may answer many of the 2,500 with 503, and a kill that never comes
        # proves nothing.)
        if count == 100:
            assert node.proc is not None
            node.proc.send_signal(signal.SIGKILL)

    answered = asyncio.run(register_many(node.udp_port, users, 7100, timeout=1.0,
                                         on_answer=kill_mid_load))
    node.stop()
    assert node.proc is not None and node.proc.returncode == -signal.SIGKILL
    # The kill must have landed mid-load, or this proves nothing.
    assert 0 < len(answered) < len(users), len(answered)
    again = ServerProcess("--registry", url, ws=False).start()
    try:
        for user in sorted(answered):
            assert registered_contacts(again.udp_port, user) == [
                f"sip:{user}@127.0.0.1:7100"], user
    finally:
        again.stop()


def test_registry_on_redis_cluster(redis_cluster_url: str) -> None:
    a = ServerProcess("--registry", redis_cluster_url, ws=False).start()
    b = ServerProcess("--registry", redis_cluster_url, ws=False).start()
    try:
        users = [f"c{i}-{time.monotonic_ns()}" for i in range(200)]
        answered = asyncio.run(register_many(a.udp_port, users, 7200))
        assert answered == set(users)
        for user in users[:50]:
            assert registered_contacts(b.udp_port, user) == [f"sip:{user}@127.0.0.1:7200"]
    finally:
        a.stop()
        b.stop()
    assert "Traceback" not in a.log + b.log


async def test_another_node_routes_an_in_dialog_request_from_shared_state(
        redis_url: str) -> None:
    """A call confirmed through node B; B goes away; the caller's BYE reaches node A, which
    has never seen the call: it loads the dialog from Redis and routes the BYE to the callee.
    A BYE for a dialog nobody stored gets a deliberate 481."""
    from protocols.sip.message import SipURI
    from tests.peers.sipua import UdpUA

    url = f"{redis_url}?prefix=fo{time.monotonic_ns()}"
    a = ServerProcess("--registry", url, ws=False).start()
    b = ServerProcess("--registry", url, ws=False).start()
    callee = await UdpUA("bob", "127.0.0.1", a.udp_port).start()
    caller = await UdpUA("alice", "127.0.0.1", b.udp_port).start()
    try:
        await callee.send(callee.register())
        await callee.response(200, "REGISTER")
        invite = caller.invite("bob")
        await caller.send(invite)
        got = await callee.request("INVITE")
        callee.server_port = b.udp_port  # responses go back the way the INVITE came (Via)
        await callee.send(callee.reply(got, 200, tag="fo1"))
        ok = await caller.response(200)
        leg = caller.uac_leg(invite, ok)
        await caller.send(caller.in_dialog(leg, "ACK", cseq=1))
        await callee.request("ACK")
        await asyncio.sleep(0.3)  # the dialog's snapshot is written to Redis off the call path
        assert b.stop() == 0
        caller.server_port = a.udp_port
        bye = caller.in_dialog(leg, "BYE")
        bye.routes = []  # B's Record-Route is dead; the caller now talks to A
        await caller.send(bye)
        routed = await callee.request("BYE")
        assert routed.call_id == invite.call_id
        assert routed.vias[0].port == a.udp_port  # node A relayed it
        callee.server_port = a.udp_port
        await callee.send(callee.reply(routed, 200))
        await caller.response(200, "BYE")
        # Addressed to the server itself, for a dialog no node stored: 481 (§12.2.2).
        stray = caller.in_dialog(leg, "BYE")
        stray.routes = []
        stray.call_id = "never-stored"
        stray.uri = SipURI("sip", "127.0.0.1", port=a.udp_port)
        await caller.send(stray)
        await caller.response(481, "BYE")
    finally:
        await caller.close()
        await callee.close()
        a.stop()
        b.stop()
    assert "Traceback" not in a.log + b.log
