"""``signaling ctl``: the admin API from a shell, in the manner of kamcmd.

    signaling ctl stats
    signaling ctl registrations [--prefix sip:alice] [--limit 50]
    signaling ctl registration sip:alice@example.com
    signaling ctl unregister sip:alice@example.com KEY
    signaling ctl dialogs | dialog ID | terminate ID
    signaling ctl peers | sessions
    signaling ctl config [--set queue_size=256 ...]

The admin URL comes from ``--url`` or ``SIGNALING_ADMIN_URL`` (default http://127.0.0.1:8081);
the token from ``SIGNALING_ADMIN_TOKEN`` or ``--token-file`` (never a flag: a flag shows in
``ps`` and in shell history).  Output is a table for people, ``--json`` for scripts (the API's
own JSON, unchanged).  Exit status: 0 on success, 1 when the API answered an error (its message
on stderr), 2 for usage errors and an unreachable server.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["DEFAULT_URL", "TIMEOUT", "add_parser", "run", "table"]

DEFAULT_URL = "http://127.0.0.1:8081"
#: Seconds to wait for an answer: above the API's own 5 s bound on registry calls.
TIMEOUT = 10.0

Row = dict[str, object]


class CtlError(Exception):
    """The command failed; ``status`` is the exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ctl = sub.add_parser("ctl", help="query and control a running server (admin API)",
                         description=__doc__.split("\n\n")[0] if __doc__ else None)
    ctl.add_argument("--url", default=None, help=f"admin API (default {DEFAULT_URL} or "
                                                 "SIGNALING_ADMIN_URL)")
    ctl.add_argument("--token-file", default=None,
                     help="file holding the bearer token (else SIGNALING_ADMIN_TOKEN)")
    ctl.add_argument("--json", action="store_true", help="print the API's JSON")
    cmd = ctl.add_subparsers(dest="what", required=True)
    cmd.add_parser("stats", help="counters, queues, table sizes")
    regs = cmd.add_parser("registrations", help="AORs and their bindings")
    regs.add_argument("--prefix", default="")
    regs.add_argument("--offset", type=int, default=0)
    regs.add_argument("--limit", type=int, default=100)
    cmd.add_parser("registration", help="one AOR's bindings").add_argument("aor")
    unreg = cmd.add_parser("unregister", help="remove one binding")
    unreg.add_argument("aor")
    unreg.add_argument("key")
    dialogs = cmd.add_parser("dialogs", help="dialogs through the proxy")
    dialogs.add_argument("--offset", type=int, default=0)
    dialogs.add_argument("--limit", type=int, default=100)
    cmd.add_parser("dialog", help="one dialog").add_argument("dialog_id")
    cmd.add_parser("terminate", help="end a dialog (BYE to both sides)").add_argument(
        "dialog_id")
    cmd.add_parser("peers", help="Diameter peers")
    sessions = cmd.add_parser("sessions", help="Credit-Control sessions")
    sessions.add_argument("--limit", type=int, default=100)
    config = cmd.add_parser("config", help="effective configuration; --set changes live "
                                           "options")
    config.add_argument("--set", action="append", default=[], metavar="OPTION=VALUE")


def _token(ns: argparse.Namespace) -> str:
    if ns.token_file:
        try:
            return Path(ns.token_file).read_text().strip()
        except OSError as exc:
            raise CtlError(f"token file: {exc.strerror}", 2) from None
    token = os.environ.get("SIGNALING_ADMIN_TOKEN", "")
    if not token:
        raise CtlError("no token: set SIGNALING_ADMIN_TOKEN or pass --token-file", 2)
    return token


def _call(ns: argparse.Namespace, method: str, path: str,
          query: dict[str, object] | None = None, body: object = None) -> object:
    base = (ns.url or os.environ.get("SIGNALING_ADMIN_URL") or DEFAULT_URL).rstrip("/")
    url = base + path
    if query:
        url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v != ""})
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": f"Bearer {_token(ns)}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read())["error"]
        except (ValueError, KeyError, TypeError):
            message = exc.reason
        raise CtlError(f"{exc.code}: {message}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CtlError(f"cannot reach the admin API at {base}: {reason}", 2) from None
    return json.loads(raw) if raw else None


def _q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def table(rows: Sequence[Row], columns: Sequence[str]) -> str:
    """``rows`` as a left-aligned text table with a header line."""
    cells = [[str(c).upper() for c in columns]]
    cells += [["" if r.get(c) is None else str(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip()
                     for line in cells)


def _flatten(prefix: str, value: object, out: list[Row]) -> list[Row]:
    """Nested objects as (dotted name, value) rows: stats and config read as key lists."""
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out.append({"name": prefix, "value": value})
    return out


def _rows(data: Row, key: str) -> list[Row]:
    items = data.get(key)
    return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []


def _bindings(pages: list[Row]) -> list[Row]:
    return [{"aor": page.get("aor"), **b} for page in pages for b in _rows(page, "bindings")]


_BINDING = ("aor", "contact", "expires_at", "q", "transport", "key")
_DIALOG = ("id", "state", "caller", "callee", "call_id", "created_at")
_PEER = ("origin_host", "origin_realm", "state", "watchdog", "address")


def _registrations(d: Row) -> str:
    return table(_bindings(_rows(d, "items")), _BINDING) + f"\n{d.get('total_aors')} AORs"


def _dialogs(d: Row) -> str:
    counts = d.get("counts")
    summary = ", ".join(f"{k}: {v}" for k, v in counts.items()) if isinstance(counts, dict) \
        else ""
    return table(_rows(d, "items"), _DIALOG) + f"\n{summary or 'no dialogs'}"


def _diameter(columns: tuple[str, ...]) -> Callable[[Row], str]:
    def render(d: Row) -> str:
        return table(_rows(d, "items"), columns) if d.get("enabled") else "Diameter is off"
    return render


#: Command -> (method, path template, table rendering).
_COMMANDS: dict[str, tuple[str, str, Callable[[Row], str]]] = {
    "stats": ("GET", "/stats", lambda d: table(_flatten("", d, []), ("name", "value"))),
    "registrations": ("GET", "/registrations", _registrations),
    "registration": ("GET", "/registrations/{aor}",
                     lambda d: table(_bindings([d]), _BINDING)),
    "unregister": ("DELETE", "/registrations/{aor}/bindings/{key}",
                   lambda d: "binding removed"),
    "dialogs": ("GET", "/dialogs", _dialogs),
    "dialog": ("GET", "/dialogs/{dialog_id}", lambda d: table([d], _DIALOG)),
    "terminate": ("POST", "/dialogs/{dialog_id}/terminate",
                  lambda d: f"dialog {d.get('id')} terminated (BYE sent to both sides)"),
    "peers": ("GET", "/diameter/peers", _diameter(_PEER)),
    "sessions": ("GET", "/diameter/sessions", _diameter(("session_id", "tcc_deadline"))),
    "config": ("GET", "/config",
               lambda d: table(_flatten("", d.get("config"), []), ("name", "value"))),
}
_PATH_ARGS = ("aor", "key", "dialog_id")
_QUERY_ARGS = ("prefix", "offset", "limit")


def _changes(settings: list[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for item in settings:
        name, eq, text = item.partition("=")
        if not eq or not name:
            raise CtlError(f"--set: expected OPTION=VALUE, got {item!r}", 2)
        try:
            out[name.strip()] = json.loads(text)  # numbers as numbers
        except ValueError:
            out[name.strip()] = text  # words (log_level=debug) as strings
    return out


def run(ns: argparse.Namespace) -> int:
    """Run one ``ctl`` command; prints its result and returns the exit status."""
    what: str = ns.what
    method, template, render = _COMMANDS[what]
    args = vars(ns)
    path = "/api/v1" + template.format(**{k: _q(str(args[k])) for k in _PATH_ARGS
                                         if k in args})
    query = {k: args[k] for k in _QUERY_ARGS if k in args}
    body = None
    if what == "config" and ns.set:
        method, body = "PATCH", _changes(ns.set)
    try:
        data = _call(ns, method, path, query, body)
    except CtlError as exc:
        print(f"signaling ctl: {exc}", file=sys.stderr)
        return exc.status
    if ns.json:
        print(json.dumps(data, indent=2))
    else:
        print(render(data if isinstance(data, dict) else {}))
    return 0
