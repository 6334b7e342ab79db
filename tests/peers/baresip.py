"""baresip (Debian ``baresip``), a real UA by others, configured for a machine without sound
hardware: a sine source (which only makes 48 kHz stereo, else a call is refused 486) and a
player into a file.  ``-s`` in its command line traces SIP, which the tests read."""

from __future__ import annotations

import subprocess
from pathlib import Path

__all__ = ["config", "start"]


def config(listen: str = "127.0.0.1:0", player: str = "/dev/null", ca: Path | None = None,
           uuid: bool = False) -> str:
    """The ``config`` file: ``ca`` to verify a TLS server by; ``uuid`` loads the module that
    gives the persistent instance ID SIP Outbound needs (RFC 5626 §4.1)."""
    lines = ["poll_method epoll", f"sip_listen {listen}"]
    if ca is not None:
        lines.append(f"sip_cafile {ca}")
    lines += [f"audio_player aufile,{player}", "audio_source ausine,440",
              "audio_alert aufile,/dev/null", "ausrc_srate 48000", "auplay_srate 48000",
              "ausrc_channels 2", "auplay_channels 2", "module_path /usr/lib/baresip/modules",
              "module g711.so", "module aufile.so", "module ausine.so"]
    if uuid:
        lines.append("module_app uuid.so")
    lines += ["module_app account.so", "module_app menu.so"]
    return "\n".join(lines) + "\n"


def start(folder: Path, conf: str, accounts: str, seconds: int,
          commands: tuple[str, ...] = ()) -> subprocess.Popen[str]:
    """baresip with ``conf`` and ``accounts`` written in ``folder``, quitting after
    ``seconds`` (a bound, not a wait); its output (the SIP trace) in text on stdout."""
    (folder / "config").write_text(conf)
    (folder / "accounts").write_text(accounts)
    args = ["baresip", "-s", "-f", str(folder), "-t", str(seconds)]
    for c in commands:
        args += ["-e", c]
    return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            errors="replace")
