"""Certificates made with the ``openssl`` command for the TLS tests: a CA, server and client
certificates signed by it, and a self-signed one it does not know."""

from __future__ import annotations

import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Pki", "make_pki"]


@dataclass(frozen=True)
class Pki:
    dir: Path
    ca: Path

    @property
    def ca_key(self) -> Path:
        return self.ca.with_suffix(".key")

    def cert(self, name: str) -> Path:
        return self.dir / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.dir / f"{name}.key"

    def client_context(self, cert: str | None = None, *, version: ssl.TLSVersion | None = None,
                       ) -> ssl.SSLContext:
        """A client's context trusting this CA, presenting ``cert`` (mutual TLS) if named and
        pinned to ``version`` if given."""
        ctx = ssl.create_default_context(cafile=str(self.ca))
        if cert is not None:
            ctx.load_cert_chain(self.cert(cert), self.key(cert))
        if version is not None:
            ctx.minimum_version = ctx.maximum_version = version
        return ctx

    def issue(self, name: str, cn: str, sans: list[str] | None = None, *,
              self_signed: bool = False, days: int = 30) -> tuple[Path, Path]:
        """A key and certificate for ``cn`` with subjectAltNames ``sans`` (``DNS:x``, ``IP:y``,
        ``URI:sip:z``), signed by the CA unless ``self_signed``."""
        key, crt, csr = self.key(name), self.cert(name), self.dir / f"{name}.csr"
        ext = self.dir / f"{name}.ext"
        ext.write_text(("subjectAltName=" + ",".join(sans) + "\n") if sans else "")
        _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-nodes", "-keyout", key, "-out", csr, "-subj", f"/CN={cn}")
        if self_signed:
            _openssl("x509", "-req", "-in", csr, "-signkey", key, "-out", crt,
                     "-days", str(days), "-extfile", ext)
        else:
            _openssl("x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey",
                     self.ca_key, "-CAcreateserial", "-out", crt, "-days", str(days),
                     "-extfile", ext)
        return crt, key


def make_pki(directory: Path) -> Pki:
    """A fresh CA in ``directory``, plus ``server`` (sip.example.com, localhost, 127.0.0.1),
    ``other`` (other.example.com), ``client`` (trunk.example.net) and ``stranger``
    (self-signed)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca = directory / "ca.key", directory / "ca.crt"
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", ca_key, "-out", ca, "-days", "30", "-subj", "/CN=Test CA")
    pki = Pki(directory, ca)
    pki.issue("server", "sip.example.com",
              ["DNS:sip.example.com", "DNS:localhost", "IP:127.0.0.1"])
    pki.issue("other", "other.example.com", ["DNS:other.example.com"])
    pki.issue("client", "trunk.example.net", ["DNS:trunk.example.net"])
    pki.issue("stranger", "trunk.example.net", ["DNS:trunk.example.net"], self_signed=True)
    return pki


def _openssl(*args: object) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)
