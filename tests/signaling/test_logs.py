"""Log formats and the rate-limited summary helper."""

from __future__ import annotations

import io
import json
import logging

import pytest

from signaling import logs
from signaling.logs import JsonFormatter, RateLimitedLog, configure_logging, set_trace_ids


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _logger(name: str) -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    logger = logging.getLogger(name)
    logger.handlers[:] = []
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger, out


def test_one_line_per_source_per_interval_with_the_count() -> None:
    logger, out = _logger("test.ratelimit")
    clock = Clock()
    rl = RateLimitedLog(logger, interval=10.0, clock=clock)
    assert rl.warning("10.0.0.1", "bad packet from %s", "10.0.0.1")
    for _ in range(999):
        assert not rl.warning("10.0.0.1", "bad packet from %s", "10.0.0.1")
    assert rl.warning("10.0.0.2", "bad packet from %s", "10.0.0.2")  # its own source
    clock.now += 10.0
    assert rl.warning("10.0.0.1", "bad packet from %s", "10.0.0.1")
    lines = out.getvalue().splitlines()
    assert lines == [
        "WARNING bad packet from 10.0.0.1",
        "WARNING bad packet from 10.0.0.2",
        "WARNING bad packet from 10.0.0.1 (999 more from 10.0.0.1 in the last 10 s)",
    ]


def test_sources_are_bounded() -> None:
    logger, out = _logger("test.ratelimit.bound")
    clock = Clock()
    rl = RateLimitedLog(logger, interval=10.0, clock=clock, max_sources=4)
    for i in range(10_000):
        rl.warning(f"10.0.{i >> 8}.{i & 255}", "flood")
    assert len(rl._sources) <= 5  # four sources and the shared overflow entry
    assert len(out.getvalue().splitlines()) == 5


def test_disabled_level_costs_no_line() -> None:
    logger, out = _logger("test.ratelimit.level")
    logger.setLevel(logging.ERROR)
    assert not RateLimitedLog(logger).warning("x", "nothing")
    assert out.getvalue() == ""


def test_json_lines_carry_the_fields_a_pipeline_needs() -> None:
    record = logging.LogRecord("signaling.proxy", logging.WARNING, __file__, 1,
                               "branch %s failed", ("z9hG4bK1",), None)
    line = JsonFormatter(node="node-1").format(record)
    data = json.loads(line)
    assert "\n" not in line
    assert data["level"] == "warning" and data["logger"] == "signaling.proxy"
    assert data["message"] == "branch z9hG4bK1 failed" and data["node"] == "node-1"
    assert data["ts"].endswith("Z") and "T" in data["ts"]
    assert "trace_id" not in data
    set_trace_ids(lambda: ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"))
    try:
        data = json.loads(JsonFormatter().format(record))
    finally:
        set_trace_ids(None)
    assert data["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert data["span_id"] == "b7ad6b7169203331"


def test_json_keeps_tracebacks_inside_the_one_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (),
                                   sys.exc_info())
    line = JsonFormatter().format(record)
    assert "\n" not in line and "ValueError: boom" in json.loads(line)["exc"]


def test_configure_logging_formats() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("warning", "json", "n1")
        assert isinstance(root.handlers[-1].formatter, JsonFormatter)
        assert root.level == logging.WARNING
        configure_logging("info", "text")
        assert not isinstance(root.handlers[-1].formatter, JsonFormatter)
        with pytest.raises(ValueError):
            configure_logging("info", "xml")
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    assert logs.LOG_FORMATS == ("text", "json")
