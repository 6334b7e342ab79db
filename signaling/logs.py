"""Log output for people and for log pipelines, and summaries instead of floods.

- ``--log-format text`` (the default): one readable line per record.
- ``--log-format json``: one JSON object per line (``ts`` in RFC 3339 UTC, ``level``, ``logger``,
  ``message``, ``node``, ``pid``; ``exc`` when a traceback is attached; ``trace_id`` and
  ``span_id`` when tracing is on and a span is current), which Loki, Elasticsearch or
  Vector read without a parsing rule.
- ``RateLimitedLog``: bad input (a malformed packet, a client that misbehaves, a backend that
  keeps failing) is summarised: the first occurrence per source is logged, then at most one
  line per source per ``interval`` carrying how many were suppressed since.  A flood of bad
  packets costs a dict lookup each, never a log line each (ARCHITECTURE: no log line per packet
  of a flood).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable

import msgspec

__all__ = ["LOG_FORMATS", "MAX_SOURCES", "JsonFormatter", "RateLimitedLog", "configure_logging",
           "set_trace_ids"]

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: Sources one ``RateLimitedLog`` remembers.  A flood from spoofed addresses must not grow the
#: table without bound: beyond this, new sources share one "other sources" entry.
MAX_SOURCES = 1024
_OTHER = "(other sources)"

#: Returns the current (trace_id, span_id) as hex, or None; set by ``signaling.tracing``.
_trace_ids: Callable[[], tuple[str, str] | None] | None = None


def set_trace_ids(reader: Callable[[], tuple[str, str] | None] | None) -> None:
    """Install (or remove) the reader of the current span's ids for JSON log records."""
    global _trace_ids
    _trace_ids = reader


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring)."""

    def __init__(self, node: str = "") -> None:
        super().__init__()
        self.node = node
        self.pid = os.getpid()

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                  + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "node": self.node,
            "pid": self.pid,
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        ids = _trace_ids() if _trace_ids is not None else None
        if ids is not None:
            out["trace_id"], out["span_id"] = ids
        return msgspec.json.encode(out).decode()


def configure_logging(level: str, fmt: str = "text", node: str = "", who: str = "") -> None:
    """The root logger's one handler on stderr, in ``fmt`` (one of ``LOG_FORMATS``).

    ``who`` prefixes text lines with the process of a multi-process server that wrote them
    (``[w1.2 PID]``: slot 1, generation 2); JSON lines carry the pid and the worker's node id.
    """
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler(sys.stderr)
    text = TEXT_FORMAT.replace("%(name)s", f"{who}%(name)s") if who else TEXT_FORMAT
    handler.setFormatter(JsonFormatter(node) if fmt == "json" else logging.Formatter(text))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


class RateLimitedLog:
    """At most one line per source per ``interval`` seconds, with the count suppressed.

    ``clock`` is injectable so the tests do not sleep.
    """

    def __init__(self, logger: logging.Logger, interval: float = 10.0,
                 clock: Callable[[], float] = time.monotonic,
                 max_sources: int = MAX_SOURCES) -> None:
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self.max_sources = max_sources
        #: source -> (time of its last line, occurrences suppressed since)
        self._sources: dict[str, tuple[float, int]] = {}

    def log(self, level: int, source: str, msg: str, *args: object,
            exc_info: bool = False, stacklevel: int = 2) -> bool:
        """Log ``msg % args`` for ``source`` unless it logged within ``interval``; True if a
        line was written."""
        if not self.logger.isEnabledFor(level):
            return False
        now = self.clock()
        sources = self._sources
        if source not in sources and len(sources) >= self.max_sources:
            self._forget(now)
            if len(sources) >= self.max_sources:
                source = _OTHER
        last = sources.get(source)
        if last is not None and now - last[0] < self.interval:
            sources[source] = (last[0], last[1] + 1)
            return False
        suppressed = last[1] if last is not None else 0
        sources[source] = (now, 0)
        if suppressed:
            msg += " (%d more from %s in the last %.0f s)"
            args = (*args, suppressed, source, now - last[0] if last else 0.0)
        # stacklevel: the record names the caller's line, not this helper's.
        self.logger.log(level, msg, *args, exc_info=exc_info, stacklevel=stacklevel)
        return True

    def warning(self, source: str, msg: str, *args: object, exc_info: bool = False) -> bool:
        return self.log(logging.WARNING, source, msg, *args, exc_info=exc_info, stacklevel=3)

    def info(self, source: str, msg: str, *args: object) -> bool:
        return self.log(logging.INFO, source, msg, *args, stacklevel=3)

    def _forget(self, now: float) -> None:
        """Drop sources quiet for a whole interval with nothing suppressed."""
        stale = [s for s, (t, n) in self._sources.items()
                 if n == 0 and now - t >= self.interval]
        for s in stale:
            del self._sources[s]
