"""What the server does second by second during ``bench_reload --trace``: where a reload's
latency bump comes from.

Sampled every ``EVERY`` seconds from outside the server (nothing in it changes): each UDP
socket the supervisor holds (``/proc/net/udp`` by the socket's inode: its receive queue and
the kernel's drop count), each worker's CPU (``/proc/PID/stat``), and the supervisor's and
workers' log lines that mark the reload (worker started, ready, exited; shutting down; the
overload control's shedding), each placed on SIPp's clock (the second of its per-second
statistics).
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

__all__ = ["EVERY", "Tracer"]

#: Seconds between samples: a queue that fills and empties within a second is still seen.
EVERY = 0.2
_TICK = os.sysconf("SC_CLK_TCK")
_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ (.*)$")
_EVENTS = ("started (pid", "ready (pid", "exited (status", "shutting down", "stopped",
           "shedding", "reload done", "did not stop", "died", "released the slot",
           "did not release")


@dataclass
class _Second:
    #: socket label -> (largest receive queue in octets, drops counted in the second)
    queues: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: worker pid -> CPU seconds used in the second
    cpu: dict[int, float] = field(default_factory=dict)


class Tracer:
    """Samples the server rooted at ``supervisor`` (its pid) from ``start()`` to ``stop()``;
    ``udp_port`` is the shared SIP port (the group's sockets are labelled ``L0``, ``L1``...,
    the slots' own ports ``S0``, ``S1``..., by slot)."""

    def __init__(self, supervisor: int, udp_port: int) -> None:
        self.supervisor = supervisor
        self.udp_port = udp_port
        self.t0 = 0.0
        self.seconds: dict[int, _Second] = {}
        self._labels: dict[int, str] = {}
        self._drops: dict[int, int] = {}
        self._cpu: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self, t0: float) -> None:
        """``t0``: the wall time (``time.time()``) of SIPp's start, second 0 of its series."""
        self.t0 = t0
        self._label_sockets()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _label_sockets(self) -> None:
        """By the supervisor's descriptor numbers: it binds each group slot by slot."""
        fds: dict[int, int] = {}
        for fd in Path(f"/proc/{self.supervisor}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                fds[int(target[8:-1])] = int(fd.name)
        ours = sorted(((fds[inode], inode, port) for inode, port, _, _ in _udp_sockets()
                       if inode in fds))
        shared = [inode for _, inode, port in ours if port == self.udp_port]
        slots = [inode for _, inode, port in ours if port != self.udp_port]
        self._labels = {inode: f"L{i}" for i, inode in enumerate(shared)}
        self._labels.update({inode: f"S{i}" for i, inode in enumerate(slots)})

    def _run(self) -> None:
        while not self._stop.wait(EVERY):
            second = int(time.time() - self.t0)
            if second < 0:
                continue
            row = self.seconds.setdefault(second, _Second())
            for inode, _, queue, drops in _udp_sockets():
                label = self._labels.get(inode)
                if label is None:
                    continue
                new = drops - self._drops.get(inode, drops)
                self._drops[inode] = drops
                most, dropped = row.queues.get(label, (0, 0))
                row.queues[label] = (max(most, queue), dropped + new)
            for pid in _children(self.supervisor):
                cpu = _cpu_seconds(pid)
                if cpu is None:
                    continue
                used = cpu - self._cpu.get(pid, cpu)
                self._cpu[pid] = cpu
                row.cpu[pid] = row.cpu.get(pid, 0.0) + used

    def events(self, log: str) -> dict[int, list[str]]:
        """The log lines that mark the reload, by SIPp's second (the same text again within
        the second counted, not repeated)."""
        seen: dict[tuple[int, str], tuple[float, int]] = {}
        for line in log.splitlines():
            match = _LOG_TIME.match(line)
            if match is None or not any(e in line for e in _EVENTS):
                continue
            at = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            text = re.sub(r"signaling\.\w+: |\(pid \d+\)|\bsupervisor \d+", "",
                          match.group(2)).strip()
            key = (int(at - self.t0), text)
            first, count = seen.get(key, (at - self.t0, 0))
            seen[key] = (first, count + 1)
        out: dict[int, list[str]] = {}
        for (second, text), (first, count) in sorted(seen.items(), key=lambda kv: kv[1][0]):
            times = f"{count} x " if count > 1 else ""
            out.setdefault(second, []).append(f"{first:.1f} {times}{text}")
        return out

    def table(self, series: dict[str, list[float]], log: str) -> list[str]:
        """One line a second: SIPp's response times, each socket's largest queue (KiB) and
        drops, each worker's CPU (% of a core), and what the log says happened then."""
        labels = sorted({lb for s in self.seconds.values() for lb in s.queues})
        events = self.events(log)
        last = max([len(v) for v in series.values()] + list(self.seconds) + [0])
        out = ["  s  " + " ".join(f"{k[:8]:>8}" for k in series) + "  "
               + " ".join(f"{lb + ' KiB/drops':>14}" for lb in labels) + "  worker CPU %"]
        for s in range(last + 1):
            row = self.seconds.get(s, _Second())
            times = " ".join(f"{v[s] if s < len(v) else 0:8.0f}" for v in series.values())
            queues = " ".join(f"{row.queues.get(lb, (0, 0))[0] >> 10:8d}/"
                              f"{row.queues.get(lb, (0, 0))[1]:<5d}" for lb in labels)
            cpu = " ".join(f"{pid}:{100 * c:.0f}" for pid, c in sorted(row.cpu.items()))
            out.append(f"{s:3d}  {times}  {queues}  {cpu}")
            out.extend(f"       ^ {e}" for e in events.get(s, []))
        return out


def _udp_sockets() -> list[tuple[int, int, int, int]]:
    """(inode, local port, receive queue octets, drops) of every IPv4 UDP socket."""
    out = []
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        f = line.split()
        out.append((int(f[9]), int(f[1].split(":")[1], 16), int(f[4].split(":")[1], 16),
                    int(f[12])))
    return out


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def _cpu_seconds(pid: int) -> float | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime
