"""Helpers to run real Diameter peers (freeDiameter, Erlang/OTP, tshark) next to the server."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

# Ports this suite may bind besides ephemeral ones (assigned to the Diameter tests).
PORT_RANGE = range(38680, 38700)
PEERS_DIR = Path(__file__).resolve().parents[2] / "peers" / "diameter"


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on loopback from the assigned range."""
    held: list[socket.socket] = []
    try:
        for port in PORT_RANGE:
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                s.close()
                continue
            held.append(s)  # keep it bound so the next pick differs
            if len(held) == count:
                return [h.getsockname()[1] for h in held]
    finally:
        for h in held:
            h.close()
    raise RuntimeError("not enough free ports in the Diameter test range")


def free_port() -> int:
    return free_ports(1)[0]


def require(binary: str) -> str:
    """The binary's path; scripts/test installs every one of them, so absence is a failure."""
    path = shutil.which(binary)
    assert path is not None, f"{binary} not installed: run scripts/test to install it"
    return path


def self_signed_cert(directory: Path, name: str) -> tuple[Path, Path]:
    """freeDiameter insists on TLS credentials even for a TCP-only peer."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [require("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={name}", "-days", "1"],
        check=True, capture_output=True,
    )
    return cert, key


def freediameter_conf(directory: Path, identity: str, tw: int, *,
                      connect_to: tuple[str, int] | None = None,
                      allow: str | None = None) -> tuple[Path, int]:
    """A freeDiameter config: its identity, Tw, the peer it connects to (Origin-Host, port)
    and/or the identity it accepts connections from (acl_wl, no TLS).  Returns the path and
    the port freeDiameter listens on."""
    cert, key = self_signed_cert(directory, identity)
    conf = directory / "freeDiameter.conf"
    port, sec_port = free_ports(2)
    lines = [
        f'Identity = "{identity}";', 'Realm = "test";', f"Port = {port};",
        f"SecPort = {sec_port};", "No_SCTP;", "No_IPv6;", 'ListenOn = "127.0.0.1";',
        f"TwTimer = {tw};", "TcTimer = 6;", f'TLS_Cred = "{cert}", "{key}";',
        f'TLS_CA = "{cert}";',
    ]
    if connect_to is not None:
        host, server_port = connect_to
        lines.append(f'ConnectPeer = "{host}" {{ ConnectTo = "127.0.0.1"; '
                     f"Port = {server_port}; No_TLS; }};")
    if allow is not None:
        acl = directory / "acl_wl.conf"
        acl.write_text(f"ALLOW_IPSEC {allow}\n")  # cleartext TCP for this identity
        lines.append(f'LoadExtension = "/usr/lib/freeDiameter/acl_wl.fdx" : "{acl}";')
    conf.write_text("\n".join(lines) + "\n")
    return conf, port


def build_erlang_client(outdir: Path) -> Path:
    """Compile the RFC 4006 dictionary (diameterc) and the client module (erlc)."""
    subprocess.run([require("diameterc"), "-o", str(outdir), str(PEERS_DIR / "cc_rfc4006.dia")],
                   check=True, capture_output=True)
    subprocess.run([require("erlc"), "-o", str(outdir), str(outdir / "cc_rfc4006.erl"),
                    str(PEERS_DIR / "cc_client.erl")], check=True, capture_output=True)
    return outdir
