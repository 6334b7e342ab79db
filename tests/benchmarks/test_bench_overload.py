"""bench_overload's reading of SIPp and of the injector: what was really offered within a
step, the users of several SIPp processes kept apart, the steps the injector limited
(issue 13)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.bench_overload import (
    SIPP_DIR,
    Step,
    _created_within,
    _injector_bound,
    _injector_offered,
    _register_scenarios,
    _sipp_bound,
)

HEAD = ["StartTime", "LastResetTime", "CurrentTime", "ElapsedTime(C)", "TotalCallCreated"]


def _row(start: float, now: float, created: int) -> list[str]:
    stamp = "2026-12-05\t12:00:00.000000\t{:.6f}"
    return [stamp.format(start), stamp.format(start), stamp.format(now), "00:00:01",
            str(created)]


def test_calls_created_after_the_window_are_not_offered_within_it() -> None:
    """A SIPp behind its schedule (10,000 calls asked for 1 s, sent over 2 s) offered what it
    had created when the window ended, interpolated between its per-second rows."""
    rows = [HEAD, _row(100.0, 100.5, 2_000), _row(100.0, 101.5, 7_000),
            _row(100.0, 102.0, 10_000)]
    assert _created_within(rows, 1.0) == 4_500
    assert _created_within(rows, 0.25) == 1_000  # before the first row: from 0 at the start
    assert _created_within(rows, 5.0) == 10_000  # ended earlier: all of it


def test_no_rows_or_a_changed_format_read_as_nothing_offered() -> None:
    assert _created_within([], 1.0) == 0
    assert _created_within([HEAD], 1.0) == 0
    assert _created_within([["Other"], ["x"]], 1.0) == 0


def test_one_sipp_reads_the_reference_scenario_in_place(tmp_path: Path) -> None:
    assert _register_scenarios(1, tmp_path) == [SIPP_DIR / "register.xml"]
    assert not list(tmp_path.iterdir())


def test_several_sipps_register_users_of_their_own(tmp_path: Path) -> None:
    """``[call_number]`` counts from 1 in each SIPp: without a mark of its own each would
    register the same AORs, binding updates instead of a new user per REGISTER."""
    paths = _register_scenarios(3, tmp_path)
    texts = [p.read_text() for p in paths]
    for i, text in enumerate(texts):
        assert f"sip:u[call_number]p{i}@" in text
        assert "u[call_number]@" not in text
    reference = (SIPP_DIR / "register.xml").read_text()
    assert texts[0].replace("u[call_number]p0", "u[call_number]") == reference


def test_the_injector_offered_what_it_started_within_the_step() -> None:
    """By wall second of its start, not by the second its schedule made it due: an injector
    behind its schedule offered less within the step than the schedule says."""
    run = {"started_per_s": [60_000, 41_000, 30_000, 2_000]}
    kind = {"offered_per_s": [60_000, 60_000, 60_000, 0]}
    assert _injector_offered(run, kind, 3) == 131_000
    assert _injector_offered({}, kind, 3) == 180_000  # an older report: by the schedule


def test_a_step_the_injector_limited_carries_its_reasons() -> None:
    run = {"generator": {"bound": ["CPU at 90%+ of a core in 6 of 6 offered s",
                                   "55631 events not sent"]}}
    assert _injector_bound(run) == ("CPU at 90%+ of a core in 6 of 6 offered s; "
                                    "55631 events not sent")
    assert _injector_bound({"generator": {"bound": []}}) == ""
    assert _injector_bound({}) == ""  # an older report: no verdict
    step = Step("ours", "register", "10x storm", 46_608, 604, 4_168, 15_811, 6.4, 0, None,
                None, 0, 0.196, bound=_injector_bound(run))
    assert step.line().endswith(" GENERATOR-BOUND")


def test_sipp_at_its_cores_limit_bounds_the_step() -> None:
    """SIPp's processes at 90% or more of their core read the answers late: the step says
    so, as it does of the injector; under that, nothing."""
    assert _sipp_bound(0.97) == "SIPp at 97% of core 0: answers read late"
    assert _sipp_bound(0.89) == ""
    assert _sipp_bound(0.95, 12) == ("SIPp at 95% of core 0: answers read late; 12 datagrams "
                                     "dropped on SIPp's sockets")
    assert _sipp_bound(0.5, 3) == "3 datagrams dropped on SIPp's sockets"
