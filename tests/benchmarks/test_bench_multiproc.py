"""bench_multiproc's reading of a step (issue 16): where the CPU runs out (``cpu_bound``), and
which steps count as kept, with and without ``--tolerance`` (a few 503s of a stall of the loop,
not a collapse).  ``step`` is replaced: no server, no SIPp."""

from __future__ import annotations

import pytest

from benchmarks import bench_multiproc
from benchmarks.bench_multiproc import Result


def _result(per_s: float, failed: int, quota_used: float = 0.9) -> Result:
    return Result(per_s=per_s, cpu_us=100.0, supervisor_us=0.0, busiest=0.5, received=0.5,
                  new=0.5, retransmissions=0, refused=failed, dropped=failed, system=0.2,
                  faults=0.5, switches=0.1, failed=failed, throttled=0,
                  supervisor_cores=0.0, generator_cores=0.1, starved=0.0, load=1.0,
                  quota_used=quota_used)


def test_the_cpu_bound_rate_is_where_the_busiest_worker_would_use_its_whole_quota() -> None:
    assert _result(900.0, 0, quota_used=0.9).cpu_bound == pytest.approx(1000.0)
    assert _result(900.0, 0, quota_used=0.0).cpu_bound == 0.0  # nothing measured


@pytest.fixture
def fake_step(monkeypatch: pytest.MonkeyPatch) -> dict[int, int]:
    """Failures per offered rate, read by a ``step`` that serves every rate offered."""
    failures: dict[int, int] = {}

    def step(kind: str, processes: int, share: float, rate: int, duration: float,
             *args: object) -> Result:
        return _result(float(rate), failures.get(rate, 0))

    monkeypatch.setattr(bench_multiproc, "step", step)
    return failures


def _summary(capsys: pytest.CaptureFixture[str], tolerance: float) -> str:
    bench_multiproc._run("register", "1", 0.1, "100,200,300,400", 10.0, ["replica"], None,
                         10_000, "private", tolerance)
    return next(ln for ln in capsys.readouterr().out.splitlines() if "=>" in ln)


def test_without_tolerance_the_first_failure_ends_the_steps(
        fake_step: dict[int, int], capsys: pytest.CaptureFixture[str]) -> None:
    fake_step[300] = 3
    line = _summary(capsys, 0.0)
    assert ": 200 REGISTER/s" in line
    assert "0 failed" not in line  # the strict figure is the figure


def test_a_few_failures_within_the_tolerance_keep_the_step_and_the_strict_one_is_named(
        fake_step: dict[int, int], capsys: pytest.CaptureFixture[str]) -> None:
    # 3,000 calls at 300/s for 10 s: 0.5% is 15 failed; 4,000 at 400/s: 20.
    fake_step[300] = 3
    fake_step[400] = 21
    line = _summary(capsys, 0.005)
    assert ": 300 REGISTER/s" in line
    assert "(0 failed: 200)" in line


def test_a_failure_below_a_clean_step_still_ends_the_strict_figure_there(
        fake_step: dict[int, int], capsys: pytest.CaptureFixture[str]) -> None:
    fake_step[100] = 1
    line = _summary(capsys, 0.005)
    assert ": 400 REGISTER/s" in line
    assert "(0 failed: no step)" in line
