"""What a reload costs in CPU: a rolling reload of an idle ``signaling serve --processes N``.

A reload starts N new interpreters while the old workers serve on.  Near capacity that CPU is
taken from the workers serving (``bench_reload``: at 4,000 REGISTER/s + 800 calls/s a reload
failed thousands where the control failed none), so this bench counts it, without load:

* the CPU-seconds of the whole process tree (the supervisor, its live workers, and through the
  supervisor's ``cutime``/``cstime`` every worker it reaped) across each reload, against the
  same wait without one (the idle server's own cost);
* each new worker's own CPU when the reload is done (interpreter start, imports, ``Server``,
  ``start()``, the replica copy): the part a lighter worker start-up cuts.

``--aors N`` registers N users first (SIPp), so that each new worker's replica copy (encoded
by a serving worker, decoded by the new one) is counted at that size.  ``--bytecode`` runs the
server with compiled modules (a private ``PYTHONPYCACHEPREFIX``, written as the server starts), as
an installed package has them: the venv here is an editable install run with
``PYTHONDONTWRITEBYTECODE=1``, so every worker compiles the project's sources.

Counted by the kernel (``/proc/PID/stat``, clock ticks): CPU time, not wall time, so the
machine's load moves it little; the Python figures still vary by a few % run to run.

    python -m benchmarks.bench_worker_start [--processes 2] [--reloads 3] [--admin]
                                            [--aors N] [--bytecode]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.bench_register import REGISTER_XML
from harness.serverproc import ServerProcess
from harness.sipp_runner import Sipp

__all__ = ["main", "tree_cpu"]

_TICK = os.sysconf("SC_CLK_TCK")
_STARTED = re.compile(r"worker (w\d+\.\d+) started \(pid (\d+)\)")


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()  # fields from the 3rd (state) on


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields is not None and int(fields[1]) == pid:
                out.append(int(entry))
    return out


def own_cpu(pid: int) -> float:
    """utime + stime of ``pid`` in seconds (0 once it is gone)."""
    fields = _stat(pid)
    return 0.0 if fields is None else (int(fields[11]) + int(fields[12])) / _TICK


def tree_cpu(pid: int) -> float:
    """CPU-seconds of ``pid``, its reaped children (cutime, cstime) and its live children."""
    fields = _stat(pid)
    if fields is None:
        return 0.0
    total = sum(int(f) for f in fields[11:15]) / _TICK
    return total + sum(tree_cpu(child) for child in _children(pid))


def _wait_for(server: ServerProcess, text: str, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while server.read_log().count(text) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {count} x {text!r}: {server.read_log()[-2000:]}")
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--reloads", type=int, default=3)
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds after a reload is done before the CPU is read (the old "
                             "workers exit)")
    parser.add_argument("--admin", action="store_true",
                        help="with the admin API (each worker then serves a private one)")
    parser.add_argument("--aors", type=int, default=0, help="users registered first")
    parser.add_argument("--bytecode", action="store_true",
                        help="compiled modules, as an installed package has them")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-start-"))
    pid_file = tmp / "signaling.pid"
    env = {"PYTHONPYCACHEPREFIX": str(tmp / "pyc"), "PYTHONDONTWRITEBYTECODE": ""} \
        if args.bytecode else {}
    with ServerProcess("--processes", str(args.processes), "--pid-file", str(pid_file),
                       ws=False, admin=args.admin, env=env) as server:
        assert server.proc is not None
        sup = server.proc.pid
        _wait_for(server, "workers serving", 1)
        if args.aors:
            result = Sipp(REGISTER_XML.as_posix(), f"127.0.0.1:{server.udp_port}",
                          calls=args.aors, rate=2000, timeout=args.aors / 1000 + 60,
                          extra=["-t", "un", "-max_socket", "64"]).start().wait()
            assert result.failed == 0, result
        time.sleep(args.settle)
        before = tree_cpu(sup)
        time.sleep(args.settle + 1.0)
        idle = tree_cpu(sup) - before
        costs, workers = [], []
        for n in range(1, args.reloads + 1):
            before = tree_cpu(sup)
            seen = len(_STARTED.findall(server.read_log()))
            os.kill(sup, signal.SIGHUP)
            _wait_for(server, "reload done", n)
            new = [int(pid) for _, pid in _STARTED.findall(server.read_log())[seen:]]
            workers += [own_cpu(pid) for pid in new]
            time.sleep(args.settle)
            costs.append(tree_cpu(sup) - before - idle * args.settle / (args.settle + 1.0))
    flags = "".join(f" --{name}" for name in ("admin", "bytecode") if getattr(args, name))
    print(f"rolling reload of an idle server, --processes {args.processes}{flags}, "
          f"{args.aors} AORs ({args.reloads} reloads)")
    print(f"  idle server: {idle:.2f} CPU-s per {args.settle + 1.0:.0f} s")
    print(f"  per reload (whole tree, idle subtracted): "
          f"{', '.join(f'{c:.2f}' for c in costs)} CPU-s; median {statistics.median(costs):.2f}")
    print(f"  new worker at ready: {', '.join(f'{w:.2f}' for w in workers)} CPU-s; "
          f"median {statistics.median(workers):.2f}")


if __name__ == "__main__":
    main()
