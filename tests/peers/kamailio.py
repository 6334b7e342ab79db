"""Kamailio as a peer of the tests: a process of the test's own configuration (an edge proxy in
front of our registrar, a registrar behind our edge), in its own session."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from harness.serverproc import free_udp_port, options, sip_request

__all__ = ["Kamailio"]


class Kamailio:
    """A Kamailio process of the test's own configuration, in its own session."""

    def __init__(self, config: str, tmp: Path) -> None:
        self.port = free_udp_port()
        self.cfg = tmp / "kamailio.cfg"
        self.cfg.write_text(config.replace("{port}", str(self.port)))
        self.log = tmp / "kamailio.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Kamailio:
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                ["kamailio", "-f", str(self.cfg), "-DD", "-E", "-m", "32", "-M", "8",
                 "-Y", str(self.cfg.parent), "-w", str(self.cfg.parent)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60  # generous: a loaded CI machine starts it slowly
        while sip_request(self.port, options(self.port), timeout=0.2) is None:
            assert self.proc.poll() is None, self.log.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "Kamailio did not answer OPTIONS"
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=20)
