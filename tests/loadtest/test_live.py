"""The per-second CSV, the live lines without a terminal, and the progress bar on one."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from loadtest.live import CSV_COLUMNS, CsvStats, LiveLines, ProgressBar, fan_out
from loadtest.timeline import SecondPoint


class _Engine:
    """What the live view reads of the engine: how many events were started."""

    def __init__(self) -> None:
        self.idx = 0


def _point(second: int, **kw: object) -> SecondPoint:
    p = SecondPoint(second)
    for k, v in kw.items():
        setattr(p, k, v)
    return p


def test_csv_row_per_second_with_its_columns(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    stats = CsvStats(str(path))
    eng = _Engine()
    stats.second(_point(0, offered=10, sent=12, answered=11, by_class={"1xx": 3, "2xx": 9,
                                                                       "5xx": 2},
                        good=9, errors=3, timeouts=1, retransmissions=4, inflight=2,
                        calls_started=5, calls_up=4, p50_us=1500.0, p99_us=25000.0,
                        late_p99_us=800.0, late_max_us=1200.0), eng)
    # Written and flushed as the second closes: readable while the run goes on.
    assert len(path.read_text().splitlines()) == 2
    stats.second(_point(1), eng)
    stats.close()
    rows = list(csv.DictReader(path.open()))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert rows[0] == {"second": "0", "offered": "10", "sent": "12", "answered": "11",
                       "1xx": "3", "2xx": "9", "3xx": "0", "4xx": "0", "5xx": "2", "6xx": "0",
                       "timeouts": "1", "errors": "3", "goodput": "9", "p50_ms": "1.500",
                       "p99_ms": "25.000", "retransmissions": "4", "inflight": "2",
                       "calls_started": "5", "calls_up": "4", "lateness_p99_ms": "0.800",
                       "lateness_max_ms": "1.200"}
    assert rows[1]["second"] == "1" and rows[1]["answered"] == "0"


def test_live_lines_every_interval_and_at_the_end() -> None:
    out = io.StringIO()
    live = LiveLines(2, out)
    eng = _Engine()
    live.second(_point(0, offered=100, sent=100, good=90, errors=4, p99_us=2000.0), eng)
    assert out.getvalue() == ""
    live.second(_point(1, offered=200, sent=200, good=200, p99_us=9000.0, inflight=7), eng)
    live.second(_point(2, offered=50, sent=50, good=50, timeouts=1, errors=1), eng)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("storm: 0-2s  offered 150/s  sent 150/s  good 145/s  errors 4")
    assert "P99 9.0 ms  inflight 7" in lines[0]
    live.close()  # the last, partial interval is not lost
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and lines[1].startswith("storm: 2-3s  offered 50/s")
    assert "timeouts 1" in lines[1]


def test_progress_bar_on_a_terminal_and_fan_out() -> None:
    bar = ProgressBar(100)
    eng = _Engine()
    seen: list[int] = []
    both = fan_out(bar.second, lambda p, e: seen.append(p.second))
    eng.idx = 30
    both(_point(0, offered=30, good=28, p99_us=1500.0, errors=2, inflight=4), eng)
    eng.idx = 70
    both(_point(1, offered=40, good=40, p99_us=900.0, inflight=1), eng)
    assert bar.bar.n == 70 and seen == [0, 1]
    line = str(bar.bar.postfix)
    assert "offered 40/s" in line and "good 40/s" in line and "P99 0.9ms" in line
    bar.close()
