"""Parse and serialize throughput of the SIP codec on one core.

Run: ``taskset -c 1 python -m benchmarks.bench_sip_parser``.  Prints messages per second for a
REGISTER, an INVITE with SDP and a 200 OK.  "Parse" decodes every header a proxy reads (Via list,
From/To with tags, Call-ID, CSeq, Max-Forwards, Route/Record-Route, Contact, Content-Length);
the benchmark touches those fields so nothing is left lazy.  "Serialize" writes a parsed message
back (the relay case) and a freshly built one (the response case).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from protocols.sip.builders import make_response
from protocols.sip.message import Request
from protocols.sip.parser import parse_message
from protocols.sip.serializer import serialize

from .sip_samples import INVITE_SDP, OK_200, REGISTER

DURATION = 1.5  # seconds per figure: long enough to swamp timer noise, short enough for CI


def rate(fn: Callable[[], object]) -> float:
    n = 0
    start = time.perf_counter()
    deadline = start + DURATION
    while True:
        for _ in range(1000):
            fn()
        n += 1000
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


def touch(data: bytes) -> Callable[[], object]:
    def run() -> object:
        m = parse_message(data)
        v = m.vias[0]
        return (v.branch, v.host, m.from_.tag, m.to.tag, m.call_id, m.cseq.seq,
                m.max_forwards, m.routes, m.record_routes, m.contacts)
    return run


def main() -> None:
    inv = parse_message(INVITE_SDP)
    assert isinstance(inv, Request)
    reg = parse_message(REGISTER)
    ok = parse_message(OK_200)
    print("SIP codec, one core (messages/s)")
    for name, data in (("REGISTER", REGISTER), ("INVITE+SDP", INVITE_SDP), ("200 OK", OK_200)):
        print(f"  parse      {name:<11} {rate(touch(data)):>10,.0f}")
    for name, msg in (("REGISTER", reg), ("INVITE+SDP", inv), ("200 OK", ok)):
        print(f"  serialize  {name:<11} {rate(lambda m=msg: serialize(m)):>10,.0f}")
    print(f"  build+serialize 200 for INVITE {rate(lambda: serialize(make_response(inv, 200, to_tag='x1'))):>10,.0f}")


if __name__ == "__main__":
    main()
