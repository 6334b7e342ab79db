"""What OpenTelemetry tracing costs per REGISTER and per call (issue 17), in instructions.

The server runs under callgrind as in ``bench_instructions`` (REGISTER: SIPp, a new user each;
CALL: INVITE/100/180/200/ACK/BYE/200 through the proxy, idle share subtracted), three times:
tracing off (the default: no tracer at all), 1% and 100% of new calls and registrations
sampled.  Spans are exported over OTLP/HTTP to a sink started here that answers every export
with 200, so the count includes the exporter thread's work too.

    python -m benchmarks.bench_tracing [--messages 200]
"""

from __future__ import annotations

import argparse
import http.server
import threading
from collections.abc import Sequence

from benchmarks.bench_instructions import measure

__all__ = ["main"]

SAMPLES = (0.0, 0.01, 1.0)


class _Sink(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: one line per export would drown the figures."""


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=200,
                    help="REGISTERs and calls per measurement (default 200)")
    args = ap.parse_args(argv)
    sink = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{sink.server_address[1]}/v1/traces"
    print(f"instructions per REGISTER and per call (callgrind, C parser), {args.messages} each")
    for kind in ("REGISTER", "CALL"):
        base = 0
        for sample in SAMPLES:
            extra = ["--trace-sample", str(sample), "--otlp-endpoint", endpoint]
            answered, per, idle = measure(kind, False, args.messages, extra=extra)
            net = per - idle if kind == "CALL" else per
            base = base or net
            label = "off" if sample == 0 else f"{sample:.0%} sampled"
            print(f"  {kind:<8} tracing {label:<12} answered {answered:>5}/{args.messages}  "
                  f"{net:>10,} instructions each  ({net / base - 1:+.1%} over off)", flush=True)
    sink.shutdown()


if __name__ == "__main__":
    main()
