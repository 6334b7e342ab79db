"""The in-process benches' measured loop: cProfile on request, its report by call count."""

from __future__ import annotations

import pytest

from benchmarks.inprocess import print_profile, start


def test_a_profiled_loop_reports_its_functions_by_call_count(
        capsys: pytest.CaptureFixture[str]) -> None:
    def counted() -> int:
        return 1

    prof = start(profile=True)
    assert prof is not None
    total = sum(counted() for _ in range(1234))
    print_profile(prof, "cumulative", 10)
    out = capsys.readouterr().out
    assert total == 1234
    assert "1234" in out and "counted" in out
    assert "Ordered by: call count" in out and "Ordered by: cumulative time" in out
