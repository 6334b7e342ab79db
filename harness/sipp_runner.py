"""Run SIPp (the real UA, Debian ``sip-tester``) with a scenario and read back its verdict.

``Sipp(...).start()`` launches one SIPp process in the background (a UAS waiting for calls, or a
UAC placing them); ``wait()`` collects it and returns a ``SippResult`` with the exit code and the
successful/failed call counts, read from the statistics file SIPp writes with ``-trace_stat``
(the last line is the cumulative total at exit).  ``run_sipp`` is start + wait in one call.

SIPp exit codes (``sipp -h``): 0 all calls successful, 1 at least one failed, 97 exit on an
internal command, 99 normal exit without calls processed, -1/255 fatal error.

Scenarios live in ``harness/sipp/`` (our own); ``scenario()`` resolves a bare name there.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import os
import resource
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from harness.serverproc import free_udp_port, free_udp_ports

__all__ = ["SCENARIOS", "Sipp", "SippResult", "run_sipp", "scenario", "sipp_binary",
           "sipp_tls_binary", "sipp_tls_dir"]

SCENARIOS = Path(__file__).parent / "sipp"
#: Seconds a SIPp run may take beyond what the caller expects before it is killed: SIPp hangs
#: forever on a scenario that waits for a message that never comes (no -timeout given).
KILL_GRACE = 10.0
#: SIPp's UDP socket buffers (bytes).  Its default (64 KB) overflows when SIPp is briefly
#: descheduled at a thousand calls per second, and a lost ACK then aborts the UAS's call;
#: 4 MB is the usual net.core.rmem_max, the most an unprivileged setsockopt gets.
SOCKET_BUFFER = 4 * 1024 * 1024
#: Seconds a SIPp UAS over TCP or TLS may take to listen: it starts in well under a second;
#: generous for a loaded CI machine.
LISTEN_TIMEOUT = 30.0


def scenario(name: str) -> Path:
    """``harness/sipp/<name>.xml`` (or a path as given)."""
    p = Path(name)
    return p if p.suffix == ".xml" else SCENARIOS / f"{name}.xml"


def sipp_binary() -> str:
    found = shutil.which("sipp")
    if found is None:
        raise RuntimeError("sipp not installed (apt-get install sip-tester; see scripts/test)")
    return found


def _has_tls(binary: str) -> bool:
    """``sipp -v`` names its build options (``SIPp v3.7.3-TLS-SCTP-PCAP-SHA256``); it exits
    99 (no calls run), so only its text counts."""
    out = subprocess.run([binary, "-v"], capture_output=True, timeout=30, check=False)
    return b"-TLS" in out.stdout + out.stderr


def sipp_tls_dir() -> Path:
    """Where scripts/sipp-tls.sh puts a SIPp built with TLS when the installed one is not
    (bookworm's is not): the same rule as its ``sipp_tls_dir``."""
    cache = os.environ.get("SIGNALING_CACHE") or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "signaling")
    return Path(cache) / "sipp-tls"


_tls_binary: list[str] = []


def sipp_tls_binary() -> str:
    """A SIPp that speaks TLS (``-t l1``): ``sipp`` itself if it was built with TLS, else the
    one scripts/test provides.  Never skipped: without one the TLS tests fail, saying why."""
    if not _tls_binary:
        candidates = [sipp_binary(), str(sipp_tls_dir() / "sipp")]
        found = [c for c in candidates if os.access(c, os.X_OK) and _has_tls(c)]
        if not found:
            raise RuntimeError(f"no SIPp built with TLS (tried {', '.join(candidates)}); "
                               "bash scripts/test provides one (scripts/sipp-tls.sh)")
        _tls_binary.append(found[0])
    return _tls_binary[0]


def _uses_tls(extra: list[str]) -> bool:
    """``-t l1`` / ``-t ln``: SIPp's TLS transports."""
    return any(a == "-t" and b.startswith("l") for a, b in itertools.pairwise(extra))


def _uses_stream(extra: list[str]) -> bool:
    """``-t t1``, ``tn``, ``l1``, ``ln``: SIPp over TCP or TLS."""
    return any(a == "-t" and b[:1] in ("t", "l") for a, b in itertools.pairwise(extra))


def _listening(port: int) -> bool:
    """Whether a TCP socket listens on ``port`` (read from /proc: connecting to find out
    would cost SIPp a failed TLS accept, which it treats as fatal)."""
    needle = f":{port:04X} "
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in f:
                fields = line.split()
                if len(fields) > 3 and fields[3] == "0A" and (fields[1] + " ").endswith(needle):
                    return True
    return False


@dataclass(frozen=True)
class SippResult:
    """What one SIPp run reported."""

    returncode: int
    successful: int
    failed: int
    created: int
    output: str
    errors: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.failed == 0


class Sipp:
    """One SIPp process.  ``remote`` is ``host:port`` (UAC) or None (UAS)."""

    def __init__(self, name: str, remote: str | None = None, *, port: int | None = None,
                 calls: int = 1, rate: float | None = None, keys: dict[str, str] | None = None,
                 service: str | None = None, timeout: float = 30.0,
                 extra: list[str] | None = None, cpu: int | None = None) -> None:
        self.scenario = scenario(name)
        self.remote = remote
        self.port = port or free_udp_port()
        self.calls = calls
        self.rate = rate
        self.keys = keys or {}
        self.service = service
        self.timeout = timeout
        self.extra = extra or []
        self.cpu = cpu
        self.dir = Path(tempfile.mkdtemp(prefix="sipp-"))
        self.stat_file = self.dir / "stat.csv"
        self.error_file = self.dir / "errors.log"
        self.proc: subprocess.Popen[bytes] | None = None
        #: CPU seconds SIPp used (from wait(); approximate if other children ended meanwhile).
        self.cpu_seconds = 0.0
        self._children_cpu = 0.0

    def args(self) -> list[str]:
        cmd = [sipp_tls_binary() if _uses_tls(self.extra) else sipp_binary()]
        if self.remote is not None:
            cmd.append(self.remote)
        cmd += ["-sf", str(self.scenario), "-i", "127.0.0.1", "-p", str(self.port),
                "-mp", str(free_udp_ports(4)), "-m", str(self.calls), "-nostdin",
                "-trace_stat", "-stf", str(self.stat_file), "-fd", "1",
                "-trace_err", "-error_file", str(self.error_file),
                "-timeout", f"{self.timeout:g}s", "-timeout_error",
                "-buff_size", str(SOCKET_BUFFER)]
        if self.rate is not None:
            cmd += ["-r", f"{self.rate:g}"]
        if self.service is not None:
            cmd += ["-s", self.service]
        for k, v in self.keys.items():
            cmd += ["-key", k, v]
        cmd += self.extra
        if self.cpu is not None:
            cmd = ["taskset", "-c", str(self.cpu), *cmd]
        return cmd

    def start(self) -> Sipp:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._children_cpu = usage.ru_utime + usage.ru_stime
        self.proc = subprocess.Popen(self.args(), cwd=self.dir, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env={**os.environ, "TERM": "dumb"})
        if self.remote is None and _uses_stream(self.extra):
            # A UAS over TCP or TLS takes a moment to listen (longer for the TLS SIPp on a
            # loaded machine); a call placed before it does is refused, not retransmitted.
            deadline = time.monotonic() + LISTEN_TIMEOUT
            while not _listening(self.port):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"SIPp did not listen on port {self.port}: "
                                       f"{self.args()}")
                time.sleep(0.02)
        return self

    def wait(self) -> SippResult:
        assert self.proc is not None
        try:
            out, _ = self.proc.communicate(timeout=self.timeout + KILL_GRACE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        rc = self.proc.returncode
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.cpu_seconds = usage.ru_utime + usage.ru_stime - self._children_cpu
        successful, failed, created = _read_stats(self.stat_file)
        errors = self.error_file.read_text(errors="replace") if self.error_file.exists() else ""
        shutil.rmtree(self.dir, ignore_errors=True)
        return SippResult(rc, successful, failed, created, out.decode(errors="replace"), errors)

    def stop(self) -> None:
        """Kill a SIPp still running (test teardown)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()
        shutil.rmtree(self.dir, ignore_errors=True)


def _read_stats(path: Path) -> tuple[int, int, int]:
    """(successful, failed, created) from the last line of a -trace_stat file."""
    if not path.exists():
        return (0, 0, 0)
    with path.open(newline="", errors="replace") as f:
        rows = list(csv.reader(f, delimiter=";"))
    if len(rows) < 2:
        return (0, 0, 0)
    head, last = rows[0], rows[-1]
    values = dict(zip(head, last, strict=False))

    def get(name: str) -> int:
        v = values.get(name, "0").strip()
        return int(v) if v.isdigit() else 0

    return (get("SuccessfulCall(C)"), get("FailedCall(C)"), get("TotalCallCreated"))


def run_sipp(name: str, remote: str | None = None, **kw: object) -> SippResult:
    """Run one SIPp to completion (see ``Sipp`` for the keywords)."""
    return Sipp(name, remote, **kw).start().wait()  # type: ignore[arg-type]
