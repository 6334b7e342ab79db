"""Headless Chromium as a real browser peer, trusting a test CA the way a user's browser would.

- ``nss_home`` makes a HOME whose NSS database (``~/.pki/nssdb``, what Chromium on Linux reads
  for locally added roots) holds the test CA as a trusted issuer of server certificates
  (``certutil -t C,,``): the server's certificate is then verified for real, name included,
  instead of certificate errors being ignored.
- ``PageServer`` serves a directory and a ``config.json`` over HTTPS (a web app served over
  HTTPS may only open ``wss://``, as in production) and collects what the page POSTs to
  ``/report``, one JSON object per request.
- ``chromium`` runs the browser on a URL until the test is done with it.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = ["CHROMIUM", "PageServer", "chromium", "nss_home"]

CHROMIUM = "/usr/bin/chromium"
_TYPES = {".html": "text/html", ".js": "text/javascript", ".json": "application/json"}


def nss_home(directory: Path, ca: Path | None) -> Path:
    """A HOME for Chromium whose NSS database trusts ``ca`` (none: an empty database)."""
    certutil = shutil.which("certutil")
    assert certutil is not None, "certutil missing (Debian libnss3-tools): see scripts/test"
    db = directory / ".pki" / "nssdb"
    db.mkdir(parents=True, exist_ok=True)
    subprocess.run([certutil, "-N", "-d", f"sql:{db}", "--empty-password"], check=True,
                   capture_output=True, timeout=60)
    if ca is not None:
        subprocess.run([certutil, "-A", "-d", f"sql:{db}", "-n", "signaling test CA",
                        "-t", "C,,", "-i", str(ca)], check=True, capture_output=True, timeout=60)
    return directory


class PageServer:
    """``root``'s files and ``config`` (as /config.json) over HTTPS with ``cert`` and ``key``
    (over HTTP without: 127.0.0.1 is a secure context to a browser all the same); ``reports``
    gets the page's POSTs to /report."""

    def __init__(self, root: Path, config: dict[str, Any], cert: Path | None = None,
                 key: Path | None = None) -> None:
        self.reports: queue.Queue[dict[str, Any]] = queue.Queue()
        files = {p.name: p.read_bytes() for p in root.iterdir() if p.is_file()}
        files["config.json"] = json.dumps(config).encode()
        reports = self.reports

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                name = self.path.lstrip("/").split("?", 1)[0]
                body = files.get(name)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", _TYPES.get(Path(name).suffix, "text/plain"))
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                reports.put(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.scheme = "http"
        if cert is not None and key is not None:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(cert, key)
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
            self.scheme = "https"
        self.port = int(self.httpd.server_address[1])
        self.url = f"{self.scheme}://127.0.0.1:{self.port}/"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> PageServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def wait_for(self, want: dict[str, Any], timeout: float,
                 seen: list[dict[str, Any]]) -> dict[str, Any]:
        """The first report matching every item of ``want``; all reports read go to ``seen``."""
        deadline = time.monotonic() + timeout
        for report in seen:
            if all(report.get(k) == v for k, v in want.items()):
                return report
        while True:
            left = deadline - time.monotonic()
            try:
                report = self.reports.get(timeout=max(left, 0.01))
            except queue.Empty:
                raise AssertionError(f"no report {want} within {timeout} s: {seen}") from None
            seen.append(report)
            if all(report.get(k) == v for k, v in want.items()):
                return report


@contextlib.contextmanager
def chromium(url: str, home: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Headless Chromium on ``url`` with ``home`` as its HOME, stopped on exit."""
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--autoplay-policy=no-user-gesture-required",
             # The browser stays up while the page runs (without it, headless exits at once).
             "--remote-debugging-port=0", f"--user-data-dir={profile}", url],
            env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        try:
            yield proc
        finally:
            with contextlib.suppress(ProcessLookupError):
                # Chromium's renderers and helpers are its process group (start_new_session).
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
