"""Transaction-layer throughput with a fake clock (RFC 3261 §17): complete transactions/s.

Measures only the transaction layer (matching, table, state machines, deadline heap), not
parsing or serialisation: the messages are built before the clock starts, as the parser would
have handed them over.  Every transaction runs to Terminated through its real timers, the
fake clock jumping forward so Timer J (32 s) or K (5 s) fire at once.

    python -m benchmarks.bench_transactions [--count N] [--rounds R]

Scenarios, each on one core:
  nist   non-INVITE server: request in (no match, new transaction), 200 out, Timer J fires.
  nict   non-INVITE client: request out, 200 in (matched), stale Timer E entry skipped, K fires.
  ist    INVITE server: INVITE in, 100 and 200 out, the INVITE retransmitted once (absorbed in
         Accepted), Timer L fires.
  ist486 INVITE server, rejected: INVITE in, 486 out, ACK in, Timer I fires.
  proxy  a stateful proxy's non-INVITE: server transaction in, client transaction out, 200 in
         and relayed back, Timers K and J fire (two transactions per count).
Target (issue 2): >= 50,000 complete non-INVITE transactions/s per core.
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable

from protocols.sip.builders import make_response
from protocols.sip.message import CSeq, NameAddr, Request, Response, SipURI, Via
from protocols.sip.timers import DEFAULT_TIMERS, timer_values
from protocols.sip.transaction import (
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    build_ack,
)
from protocols.sip.txtable import TransactionTable

#: One batch: enough live transactions that the dicts and heap are realistically large,
#: small enough that the whole run stays a few seconds on a shared 2-core machine.
DEFAULT_COUNT = 20_000
DEFAULT_ROUNDS = 5

UDP = timer_values(DEFAULT_TIMERS, reliable=False)


def _request(method: str, i: int) -> Request:
    return Request(
        method=method,
        uri=SipURI("sip", "example.com", user="bob"),
        vias=[Via("UDP", "10.0.0.1", 5060, {"branch": f"z9hG4bK{i:x}bench", "rport": None})],
        from_=NameAddr(SipURI("sip", "example.com", user="alice"), params={"tag": f"f{i}"}),
        to=NameAddr(SipURI("sip", "example.com", user="bob")),
        call_id=f"{i}@bench",
        cseq=CSeq(1, method),
        max_forwards=70,
    )


def _pairs(method: str, status: int, n: int) -> list[tuple[Request, Response]]:
    out = []
    for i in range(n):
        req = _request(method, i)
        out.append((req, make_response(req, status, to_tag=f"t{i}")))
    return out


def run_nist(pairs: list[tuple[Request, Response]]) -> int:
    table = TransactionTable()
    now = 1000.0
    done = 0
    for req, resp in pairs:
        txn = table.find_server(req)
        if txn is None:
            txn = NonInviteServerTransaction(req, UDP)
            table.add(txn)
        txn.send_response(resp, now)
    now += UDP.j + 0.001
    for _txn, events in table.fire_due(now):
        done += len(events)  # one TransactionTerminated each
    assert len(table) == 0
    return done


def run_nict(pairs: list[tuple[Request, Response]]) -> int:
    table = TransactionTable()
    now = 1000.0
    for req, _resp in pairs:
        txn = NonInviteClientTransaction(req, UDP)
        table.add(txn)
        txn.start(now)
    now += 0.01
    for _req, resp in pairs:
        found = table.find_client(resp)
        assert found is not None
        found.receive_response(resp, now)
    now += UDP.k + 0.001
    done = sum(len(events) for _txn, events in table.fire_due(now))
    assert len(table) == 0
    return done


def run_ist(pairs: list[tuple[Request, Response]], trying: list[Response]) -> int:
    table = TransactionTable()
    now = 1000.0
    for (req, resp), t100 in zip(pairs, trying, strict=True):
        txn = table.find_server(req)
        if txn is None:
            txn = InviteServerTransaction(req, UDP)
            table.add(txn)
        txn.send_response(t100, now)
        txn.send_response(resp, now)
    now += 0.5
    for req, _resp in pairs:  # the INVITE retransmitted: absorbed in Accepted (RFC 6026)
        again = table.find_server(req)
        assert again is not None
        again.receive_request(req, now)
    now += UDP.l + 0.001
    done = sum(len(events) for _txn, events in table.fire_due(now))
    assert len(table) == 0
    return done


def run_ist486(pairs: list[tuple[Request, Response]], acks: list[Request]) -> int:
    table = TransactionTable()
    now = 1000.0
    for req, resp in pairs:
        txn = InviteServerTransaction(req, UDP)
        table.add(txn)
        txn.send_response(resp, now)
    now += 0.05
    for ack in acks:
        txn2 = table.find_server(ack)
        assert txn2 is not None
        txn2.receive_request(ack, now)
    now += UDP.i + 0.001
    done = sum(len(events) for _txn, events in table.fire_due(now))
    assert len(table) == 0
    return done


def run_proxy(inbound: list[tuple[Request, Response]],
              outbound: list[tuple[Request, Response]]) -> int:
    table = TransactionTable()
    now = 1000.0
    for (req, _), (fwd, _) in zip(inbound, outbound, strict=True):
        server = NonInviteServerTransaction(req, UDP)
        table.add(server)
        client = NonInviteClientTransaction(fwd, UDP)
        client.peer = server  # the proxy core remembers which server to answer
        table.add(client)
        client.start(now)
    now += 0.01
    for (_, resp), (_, fwd_resp) in zip(inbound, outbound, strict=True):
        client2 = table.find_client(fwd_resp)
        assert client2 is not None
        client2.receive_response(fwd_resp, now)
        server2 = client2.peer
        assert isinstance(server2, NonInviteServerTransaction)
        server2.send_response(resp, now)
    now += UDP.j + 0.001
    done = sum(len(events) for _txn, events in table.fire_due(now))
    assert len(table) == 0
    return done // 2


def _measure(name: str, rounds: int, n: int, fn: Callable[[], int]) -> None:
    best = float("inf")
    for _ in range(rounds):
        gc.collect()
        t0 = time.perf_counter()
        done = fn()
        elapsed = time.perf_counter() - t0
        assert done == n, (name, done, n)
        best = min(best, elapsed)
    print(f"{name:8s} {n / best:>10,.0f} complete transactions/s  "
          f"({best / n * 1e6:.2f} us each, best of {rounds} x {n:,})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=DEFAULT_COUNT)
    ap.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    args = ap.parse_args()
    n, rounds = args.count, args.rounds

    opts = _pairs("OPTIONS", 200, n)
    invites = _pairs("INVITE", 200, n)
    trying = [make_response(req, 100) for req, _ in invites]
    rejects = _pairs("INVITE", 486, n)
    acks = [build_ack(req, resp) for req, resp in rejects]

    _measure("nist", rounds, n, lambda: run_nist(opts))
    _measure("nict", rounds, n, lambda: run_nict(opts))
    _measure("ist", rounds, n, lambda: run_ist(invites, trying))
    _measure("ist486", rounds, n, lambda: run_ist486(rejects, acks))
    forwarded = _pairs("OPTIONS", 200, n)
    for req, resp in forwarded:  # the proxy's own branch on the outgoing request (§16.6)
        via = Via("UDP", "192.0.2.1", 5060, {"branch": f"{req.vias[0].branch}p"})
        req.vias = [via, *req.vias]
        resp.vias = list(req.vias)
    _measure("proxy", rounds, n, lambda: run_proxy(opts, forwarded))


if __name__ == "__main__":
    main()
