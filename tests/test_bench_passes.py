"""The full bench's passes: judged figures on the medians of the repetitions (the worst for
counts that must hold every time), every value listed; repetitions run the judged parts only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench import __main__ as bench_main, report
from bench.context import Context
from bench.figures import rows


def _cost(value: float) -> dict[str, Any]:
    return {"cost": {"conversations": 1000, "no_tools": {"worker_cpu_ms_per_run": value}}}


def _row(results: dict[str, Any], repetitions: list[dict[str, Any]], label: str) -> Any:
    (row,) = [r for r in rows(results, repetitions) if r.label.startswith(label)]
    return row


def test_a_judged_figure_is_the_median_of_its_passes_each_listed_in_order() -> None:
    row = _row(_cost(11.5), [_cost(9.0), _cost(9.5)], "worker CPU per completed 10 s run, no tools")
    assert row.value == "9.5 ms (median of 11.5 / 9 / 9.5)"
    assert row.status == "PASS"  # 11.5 alone would miss the 10 ms target


def test_one_pass_shows_its_value_alone() -> None:
    row = _row(_cost(11.5), [], "worker CPU per completed 10 s run, no tools")
    assert (row.value, row.status) == ("11.5 ms", "MISS")


def test_a_count_that_must_hold_each_time_is_judged_on_its_worst_pass() -> None:
    def faults(lost: int) -> dict[str, Any]:
        return {"faults": {"worker": {"sent": 600, "lost": lost, "duplicated": 0, "reordered_conversations": 0,
                                      "duplicate_user_messages": 0, "runs_per_message": 1}}}

    row = _row(faults(0), [faults(1), faults(0)], "worker replies lost")
    assert (row.value, row.status) == ("1 (worst of 0 / 1 / 0)", "MISS")


def test_a_repetition_that_failed_or_lacks_the_figure_is_left_out_and_its_failure_reported() -> None:
    failed = {"cost": {"error": "BenchTimeout: no replies"}}
    row = _row(_cost(9.0), [failed, {"saturation": {}}], "worker CPU per completed 10 s run, no tools")
    assert row.value == "9 ms"
    assert report.errors(_cost(9.0), [{}, failed]) == ["cost: BenchTimeout: no replies (repetition 3)"]


def test_figures_without_a_target_come_from_the_first_pass() -> None:
    first = {"cost": {"conversations": 1000, "no_tools": {"worker_cpu_ms_per_run": 9.0,
                                                          "first_burst": {"worker_cpu_ms_per_run": 14.0}}}}
    again = {"cost": {"conversations": 1000, "no_tools": {"worker_cpu_ms_per_run": 9.0,
                                                          "first_burst": {"worker_cpu_ms_per_run": 12.0}}}}
    assert _row(first, [again], "  the first burst").value == "14 ms"


def test_a_full_run_makes_three_passes_and_the_repetitions_run_the_judged_parts(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: list[tuple[str, bool, str]] = []

    def scenario(name: str) -> Any:
        def run(ctx: Context) -> dict[str, Any]:
            seen.append((name, ctx.judged_only, ctx.log_dir.name))
            return {}
        return run

    monkeypatch.setattr(bench_main, "SCENARIOS", {name: (scenario(name), 1.0) for name in ("a", "b")})
    monkeypatch.setattr(bench_main.machine, "cpu_speed", lambda: 100.0)
    args = bench_main.parse([])
    assert (args.full, args.repeat) == (True, 3)
    assert bench_main.parse(["--only", "a"]).repeat == 1 and bench_main.parse(["--quick"]).repeat == 1
    results, repetitions = bench_main.run_passes(args, tmp_path)
    assert seen == [("a", False, "a"), ("b", False, "b"), ("a", True, "a-2"), ("b", True, "b-2"),
                    ("a", True, "a-3"), ("b", True, "b-3")]
    assert list(results) == ["a", "b"] and len(repetitions) == 2
    assert all(r["cpu_speed_ms"] == {"before": 100.0, "after": 100.0} for r in repetitions[0].values())


def test_the_page_gives_the_host_speed_of_each_pass() -> None:
    speed = {"cpu_speed_ms": {"before": 120.0, "after": 130.0}}
    line = report._speed({"cost": speed}, [{"cost": {"cpu_speed_ms": {"before": 150.0, "after": 140.0}}}])
    assert line.endswith("pass 1: cost 120 / 130; pass 2: cost 150 / 140")
