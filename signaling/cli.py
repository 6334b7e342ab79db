"""``signaling serve`` and ``signaling ctl``: the command line.

``serve`` exit status: 0 after a clean shutdown, 2 for bad configuration (one line on stderr), 1
when a listener cannot start (port taken, permission denied).  ``serve --processes N`` runs a
supervisor and N workers (``signaling.supervisor``); ``reload`` asks it to replace them.
``ctl`` (``signaling.ctl``) talks to a running server's admin API.  ``signaling --version``
prints the version.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import uvloop

from signaling import ctl, worker
from signaling.auth import cli as subscribers_cli
from signaling.auth.subscribers import SubscriberError
from signaling.config import OPTIONS, Config, ConfigError, load_config
from signaling.logs import configure_logging
from signaling.metrics import version
from signaling.registry.base import RegistryError
from signaling.server import Server, default_node_id
from signaling.worker import WorkerInfo

__all__ = ["GC_GEN0_THRESHOLD", "GC_GEN1_THRESHOLD", "GC_GEN2_THRESHOLD", "build_parser", "main"]

log = logging.getLogger(__name__)

#: Allocations between young-generation collections (default 700).  At tens of thousands of
#: messages per second the default runs the collector thousands of times a second.  Not more:
#: a collection walks every object that survived since the last one, and each REGISTER of a
#: new AOR leaves ~4.3 (its binding), so a collection's pause grows with this threshold; at
#: 50,000 it took 7-18 ms of CPU, 36-172 ms of wall time at 0.1 core (mostly over the 50 ms
#: admission target: benchmarks/README.md bench_multiproc session 14), against 0.28 ms median,
#: 2.4 ms at most, at 2,000 (session 14).
GC_GEN0_THRESHOLD = 2000
#: Young-generation collections before a middle-generation one, which walks what the last
#: ones left, ~GC_GEN0_THRESHOLD x this many objects: 1.3-2.0 ms of CPU median, 6.3 ms at most
#: at 2,000 x 5 (session 14).  At 50,000 x 50 it would walk ~2.5 million objects, ≥ 0.38 s of CPU
#: (0.15 µs each, measured at 50,000 x 10: 82 ms), seconds of wall time under a small quota.
#: A surviving object is walked once in each generation whatever the thresholds, so the total
#: stays: 1.5-1.9 µs per REGISTER at 2,000 x 5 (1.5-1.8% of its CPU), ≥ 1.74 at 50,000 x 50
#: (1.09 young, its middle walk owed); over 174,000 REGISTERs 263 ms at 2,000 x 5 against
#: 367 ms at 50,000 x 10 (a walk of 50,000 objects misses the cache more).
GC_GEN1_THRESHOLD = 5
#: Middle-generation collections before a full one is considered.  A full collection walks
#: every live object: ~0.4 s per 30,000 live transactions measured here, a pause that would
#: make every client retransmit.  The hot-path objects form no reference cycles (the proxy
#: breaks its one cycle when a request completes), so full collections are made rare: one per
#: 2,000 x 5 x 250,000 = 2.5e9 net allocations, as with 50,000 x 50 x 1,000 before; at ~100
#: allocations per message and 15,000 messages/s, about one an hour.
GC_GEN2_THRESHOLD = 250_000


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="signaling",
                                     description="SIP and Diameter signaling server")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server",
                           description="Options may also come from a TOML file (--config) and "
                                       "SIGNALING_<OPTION> environment variables.")
    serve.add_argument("--config", help="TOML configuration file")
    reload = sub.add_parser("reload", help="replace every worker of a running server",
                            description="Signals the supervisor (SIGHUP) named in its pid file: "
                                        "it starts workers on the code and configuration now "
                                        "on disk and retires the old ones once they are done.")
    reload.add_argument("--pid-file", required=True, help="the server's --pid-file")
    for name, (kind, help_text) in OPTIONS.items():
        flag = "--" + name.replace("_", "-")
        if kind == "bool":
            serve.add_argument(flag, dest=name, action="store_const", const=True, default=None,
                               help=help_text)
        elif kind == "list":
            serve.add_argument(flag, dest=name, action="append", default=None, help=help_text)
        else:
            serve.add_argument(flag, dest=name, default=None, help=help_text)
    ctl.add_parser(sub)
    subscribers_cli.add_parser(sub)
    return parser


def _flags(ns: argparse.Namespace) -> dict[str, object]:
    out: dict[str, object] = {}
    for name, (kind, _) in OPTIONS.items():
        value = getattr(ns, name, None)
        if value is None:
            continue
        if kind == "list":
            value = [item for v in value for item in str(v).split(",")]
        out[name] = value
    return out


def _tune_gc() -> None:
    """Make the cyclic garbage collector cheap for a server holding millions of live objects.

    Message objects are freed by reference counting (they form no cycles); what the collector
    would walk are the long-lived tables (transactions, dialogs, bindings), over and over.
    Objects alive at start are frozen out of its view, and young-generation collections are
    made rarer, so collection work stops scaling with the number of calls in progress.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, GC_GEN1_THRESHOLD, GC_GEN2_THRESHOLD)


def _as_worker(cfg: Config, info: WorkerInfo) -> None:
    """A supervised worker's view of the configuration (``signaling.supervisor``): its admin
    listener is private (the supervisor's front serves the configured address), the embedded
    registry is the supervisor's, its node id names the worker (WebSocket connection ids and
    records must not collide between workers, nor with a dead worker's), and its records
    spool is its slot's."""
    if cfg.admin is not None:
        cfg.admin = ("127.0.0.1", 0)
    cfg.admin_tls_cert = cfg.admin_tls_key = None  # the front speaks HTTPS, not the worker
    cfg.admin_token = info.admin_token or cfg.admin_token
    if info.registry is not None and cfg.registry == "memory":
        cfg.registry = info.registry
    cfg.node_id = f"{cfg.node_id or default_node_id(cfg)}/{info.name}"
    # One spool per slot: two processes must not append to and rotate one file.  The slot's
    # next worker replays what its predecessor left.
    cfg.spool = f"{cfg.spool}.w{info.slot}"
    cfg.processes = 1
    # Live changes its siblings took through the admin API (validated by them), so that a
    # worker restarted after a crash runs what they run.
    for name, value in info.live.items():
        setattr(cfg, name, value)


def _who(info: WorkerInfo | None, processes: int) -> str:
    """The text log prefix saying which process of a multi-process server wrote a line."""
    if info is not None:
        return f"[{info.name} {os.getpid()}] "
    return "" if processes == 1 else f"[supervisor {os.getpid()}] "


async def _serve(cfg: Config) -> int:
    info = worker.current()
    if info is not None:
        worker.die_with_parent()
    try:
        server = Server(cfg)  # reads the TLS certificate and key files
    except ConfigError as exc:
        print(f"signaling: configuration error: {exc}", file=sys.stderr)
        return 2
    if not cfg.node_id:  # JSON log lines name the node: the server's default id
        configure_logging(cfg.log_level, cfg.log_format, server.node_id)
    # Handlers first: the listeners answer as soon as they are bound, so a SIGTERM may come
    # while start() is still finishing (or during _tune_gc); it must mean a clean stop, not
    # the default action that kills the process mid-start.
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    # A lone process has nothing to reload into: SIGHUP must not kill it (its default action).
    loop.add_signal_handler(signal.SIGHUP, lambda: log.warning(
        "SIGHUP ignored: reload replaces workers, this server runs as a single process "
        "(--processes 1)"))
    try:
        await server.start()
        _tune_gc()
    except (OSError, SubscriberError) as exc:  # a port taken, a subscriber store unreachable
        print(f"signaling: cannot start: {exc}", file=sys.stderr)
        await server.stop()
        return 1
    if info is not None:
        # A replica registry takes a serving sibling's copy first (registry/replica.py): only
        # then is this worker ready to take the place of the one it replaces.
        try:
            await server.registry.ping()
        except RegistryError as exc:
            log.warning("registry not reachable yet: %s", exc)
        worker.notify_ready({"pid": os.getpid(),
                             "admin": list(server.admin.address) if server.admin and
                             server.admin.address else None})
    await stopping.wait()
    if info is not None:
        # The shared sockets are the next generation's (reload) or nobody's (shutdown): this
        # worker stops taking new work from them and finishes what it holds.
        server.stop_taking_new()
    await server.stop()
    return 0


def _reload(pid_file: str) -> int:
    try:
        pid = int(Path(pid_file).read_text().strip())
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError) as exc:
        print(f"signaling: reload: {pid_file}: {exc}", file=sys.stderr)
        return 1
    print(f"signaling: reload requested from supervisor {pid}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    ns = build_parser().parse_args(args)
    if ns.command == "ctl":
        return ctl.run(ns)
    if ns.command == "reload":
        return _reload(ns.pid_file)
    flags = _flags(ns) if ns.command == "serve" else {"subscribers": ns.subscribers}
    try:
        cfg = load_config(flags, config_file=ns.config)
    except ConfigError as exc:
        print(f"signaling: configuration error: {exc}", file=sys.stderr)
        return 2
    if ns.command == "subscribers":
        return subscribers_cli.run(ns, cfg.subscribers)
    info = worker.current()
    if info is not None:
        _as_worker(cfg, info)
        configure_logging(cfg.log_level, cfg.log_format, cfg.node_id, _who(info, 1))
        return uvloop.run(_serve(cfg))
    # Only here, not in a worker: a worker never supervises, and a reload starts N of them,
    # each import CPU taken from the workers serving (benchmarks/bench_worker_start.py).
    from signaling.supervisor import default_processes, run_supervisor
    processes = cfg.processes or default_processes()
    configure_logging(cfg.log_level, cfg.log_format, cfg.node_id, _who(None, processes))
    if processes > 1:
        try:
            return uvloop.run(run_supervisor(cfg, args, processes, cfg.pid_file))
        except ConfigError as exc:  # the admin front's certificate (signaling.tls)
            print(f"signaling: configuration error: {exc}", file=sys.stderr)
            return 2
    return uvloop.run(_serve(cfg))


if __name__ == "__main__":
    sys.exit(main())
