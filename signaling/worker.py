"""What a worker process of ``signaling serve --processes N`` receives from its supervisor.

The supervisor (``signaling.supervisor``) starts each worker as ``python -m signaling serve ...``
with the same arguments it was given, so the worker loads the code and configuration on disk
*now* (that is what makes ``reload`` an upgrade).  One environment variable, ``WORKER_ENV``, tells
it that it is a worker: its slot and generation, the listening sockets it inherits (file
descriptor per listener name), the pipe on which it says it is ready, and the registry to use.

Nothing here binds: a worker's listeners are the supervisor's sockets, so a worker that is
restarted or replaced never leaves the port, and the kernel keeps queueing for it meanwhile.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import socket

import msgspec

__all__ = [
    "WORKER_ENV",
    "WorkerInfo",
    "current",
    "die_with_parent",
    "inherited_socket",
    "notify_ready",
]

log = logging.getLogger(__name__)

#: Not ``SIGNALING_*``: those are configuration options, and an unknown one is refused.
WORKER_ENV = "_SIGNALING_WORKER"
_PR_SET_PDEATHSIG = 1


class WorkerInfo(msgspec.Struct, frozen=True):
    """The supervisor's description of one worker (JSON in ``WORKER_ENV``)."""

    slot: int
    generation: int
    #: listener name (``sip_udp``, ``sip_ws``, ``diameter``, ...) -> inherited descriptor
    fds: dict[str, int]
    #: write end of the pipe on which the worker reports it is serving
    ready_fd: int
    #: the supervisor's pid: the worker's parent as long as the supervisor lives
    supervisor: int = 0
    #: registry URL replacing ``--registry memory`` (the supervisor's shared registry)
    registry: str | None = None
    #: the admin token the supervisor's front uses (the configured one, or one it generated)
    admin_token: str | None = None
    #: the supervisor's private directory (hand-off sockets, ``signaling.handoff``)
    run_dir: str | None = None
    #: live options changed through the admin API (``PATCH /api/v1/config``) since the
    #: workers started: a worker restarted after a crash applies them, so it runs what its
    #: siblings run, not the configuration on disk (``signaling.supervisor``)
    live: dict[str, int | float | str] = {}

    @property
    def name(self) -> str:
        return f"w{self.slot}.{self.generation}"


_info: WorkerInfo | None = None
_loaded = False


def current() -> WorkerInfo | None:
    """This process's ``WorkerInfo``, or None when it is not a supervised worker."""
    global _info, _loaded
    if not _loaded:
        raw = os.environ.get(WORKER_ENV)
        _info = msgspec.json.decode(raw, type=WorkerInfo) if raw else None
        _loaded = True
    return _info


def inherited_socket(name: str, family: int, kind: int) -> socket.socket | None:
    """The supervisor's listening socket for ``name``, or None when not supervised."""
    info = current()
    if info is None or name not in info.fds:
        return None
    fd = info.fds[name]
    sock = socket.socket(family, kind, fileno=fd)
    sock.setblocking(False)
    return sock


def notify_ready(details: dict[str, object]) -> None:
    """Tell the supervisor this worker serves (one JSON line), then close the pipe."""
    info = current()
    if info is None:
        return
    with os.fdopen(info.ready_fd, "wb") as pipe:
        pipe.write(msgspec.json.encode(details) + b"\n")


def die_with_parent() -> None:
    """Have the kernel send SIGTERM when the supervisor dies (Linux ``PR_SET_PDEATHSIG``), so a
    worker never serves on alone after its supervisor is killed; it then shuts down cleanly."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return
    libc = ctypes.CDLL(libc_name, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
        log.warning("PR_SET_PDEATHSIG failed (errno %d)", ctypes.get_errno())
    info = current()
    if info is not None and os.getppid() != info.supervisor:
        os.kill(os.getpid(), signal.SIGTERM)  # it died before the request took effect
