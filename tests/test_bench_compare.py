"""The pure part of `python -m bench compare`: figures of a results.json, normalisation by the
host-speed reference, medians and the ratio table (no benchmark is run)."""

from __future__ import annotations

from typing import Any

import pytest

from bench import compare as cmp


def _results(cpu_no_tools: float | None, cpu_one_tool: float, peak: float, speed: tuple[float, float],
             saturation_speed: tuple[float, float] | None = None) -> dict[str, Any]:
    """A results.json document shaped like the bench's (only the keys the comparison reads)."""
    no_tools: dict[str, Any] = {"first_burst": {"worker_cpu_ms_per_run": 2 * (cpu_no_tools or 0)},
                                "restarted": {"worker_cpu_ms_per_run": cpu_no_tools},
                                "redis_cpu_ms_per_run": 1.0}
    if cpu_no_tools is not None:
        no_tools["worker_cpu_ms_per_run"] = cpu_no_tools
    before, after = saturation_speed or speed
    return {"results": {
        "cost": {"no_tools": no_tools, "one_tool": {"worker_cpu_ms_per_run": cpu_one_tool},
                 "cpu_speed_ms": {"before": speed[0], "after": speed[1]}},
        "saturation": {"peak_replies_per_s": peak, "cpu_speed_ms": {"before": before, "after": after}},
    }}


def test_cpu_figures_scale_with_the_reference_time_and_rates_with_its_inverse() -> None:
    assert cmp.normalise(5.0, "cpu", 125.0) == pytest.approx(4.0)  # a slow host: less CPU on the nominal one
    assert cmp.normalise(200.0, "rate", 125.0) == pytest.approx(250.0)  # ... and more replies/s
    assert cmp.normalise(5.0, "cpu", cmp.NOMINAL_MS) == 5.0
    with pytest.raises(ValueError):
        cmp.normalise(1.0, "bytes", 100.0)


def test_a_repetition_is_normalised_by_the_reference_around_its_own_scenario() -> None:
    document = _results(5.0, 8.0, 150.0, speed=(90.0, 110.0), saturation_speed=(200.0, 200.0))
    figures = cmp.repetition_figures(document, driver_reference_ms=50.0)
    assert figures["cost.no_tools"] == {"raw": 5.0, "reference_ms": 100.0, "reference": "scenario",
                                        "normalised": 5.0}
    assert figures["cost.one_tool"]["normalised"] == 8.0
    assert figures["saturation.peak"]["reference_ms"] == 200.0
    assert figures["saturation.peak"]["normalised"] == 300.0


def test_a_saturation_peak_at_the_top_send_rate_is_marked_as_a_lower_bound() -> None:
    document = _results(5.0, 8.0, 508.0, speed=(100.0, 100.0))
    assert "lower_bound" not in cmp.repetition_figures(document, None)["saturation.peak"]
    document["results"]["saturation"]["stop_reason"] = "all rates sent"
    figure = cmp.repetition_figures(document, None)["saturation.peak"]
    assert figure["lower_bound"] == "stop_reason: all rates sent" and figure["normalised"] == 508.0


def test_the_drivers_reference_stands_in_when_the_scenarios_cannot_be_used() -> None:
    document = _results(5.0, 8.0, 150.0, speed=(90.0, 110.0))
    forced = cmp.repetition_figures(document, driver_reference_ms=50.0, use_scenario_reference=False)
    assert forced["cost.no_tools"]["reference"] == "driver"
    assert forced["cost.no_tools"]["normalised"] == 10.0
    del document["results"]["saturation"]["cpu_speed_ms"]  # an older bench without a reference
    fallback = cmp.repetition_figures(document, driver_reference_ms=50.0)
    assert fallback["saturation.peak"]["reference"] == "driver"
    assert fallback["saturation.peak"]["normalised"] == 75.0
    assert fallback["cost.no_tools"]["reference"] == "scenario"


def test_missing_and_failed_figures_are_none_with_the_reason() -> None:
    document = _results(None, 8.0, 150.0, speed=(100.0, 100.0))
    document["results"]["saturation"] = {"error": "BenchTimeout: too slow", "cpu_speed_ms": {"before": 1, "after": 1}}
    figures = cmp.repetition_figures(document, driver_reference_ms=None)
    assert figures["cost.no_tools"]["normalised"] is None and figures["cost.no_tools"]["missing"] == "no such figure"
    assert figures["saturation.peak"]["missing"].startswith("scenario failed: BenchTimeout")
    assert cmp.repetition_figures({}, None)["cost.one_tool"]["missing"] == "scenario not run"


def _repetitions(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Interleaved: old, new, old, new, ..."""
    reps = []
    for o, n in zip(old, new, strict=True):
        reps.append({"side": "old", "figures": cmp.repetition_figures(o, None)})
        reps.append({"side": "new", "figures": cmp.repetition_figures(n, None)})
    return reps


def test_medians_of_normalised_figures_ratios_and_targets() -> None:
    # The old commit: 5 ms per run and 200/s on a host at 100 ms; one repetition on a host twice
    # as slow (twice the CPU, half the rate) normalises to the same figures.
    old = [_results(5.0, 8.0, 200.0, (100, 100)), _results(10.0, 16.0, 100.0, (200, 200)),
           _results(6.0, 8.0, 180.0, (100, 100))]
    # The new one: 5.25 ms (1.05x, met), 9.6 ms with a tool (1.20x, missed), 170/s (0.85x, missed).
    new = [_results(5.25, 9.6, 170.0, (100, 100)), _results(4.0, 10.0, 300.0, (80, 80)),
           _results(5.5, 9.6, 150.0, (100, 100))]
    rows = {row.key: row for row in cmp.compare(_repetitions(old, new))}
    no_tools = rows["cost.no_tools"]
    assert no_tools.old == [5.0, 5.0, 6.0] and no_tools.new == [5.25, 5.0, 5.5]
    assert (no_tools.old_median, no_tools.new_median, no_tools.ratio) == (5.0, 5.25, 1.05)
    assert no_tools.target == "<= 1.10" and no_tools.met is True
    one_tool = rows["cost.one_tool"]
    assert (one_tool.old_median, one_tool.new_median, one_tool.ratio, one_tool.met) == (8.0, 9.6, 1.2, False)
    peak = rows["saturation.peak"]
    assert peak.old == [200.0, 200.0, 180.0] and peak.new == [170.0, 240.0, 150.0]
    assert (peak.old_median, peak.new_median, peak.ratio) == (200.0, 170.0, 0.85)
    assert peak.target == ">= 0.90" and peak.met is False
    assert rows["cost.no_tools.first_burst"].met is None and rows["cost.no_tools.first_burst"].target == ""


def test_a_side_without_the_figure_gives_no_ratio_and_misses_its_target() -> None:
    old = [_results(5.0, 8.0, 200.0, (100, 100))]
    new = [{"results": {"cost": {"error": "RuntimeError: boom"}}}]
    rows = {row.key: row for row in cmp.compare(_repetitions(old, new))}
    assert rows["cost.no_tools"].new_median is None and rows["cost.no_tools"].ratio is None
    assert rows["cost.no_tools"].met is False
    assert "n/a" in cmp.table(list(rows.values()))
    assert cmp.compare([{"side": "old", "figures": cmp.repetition_figures({}, None)}]) == []


def test_the_table_has_the_columns_of_the_comparison() -> None:
    old = [_results(5.0, 8.0, 200.0, (100, 100))]
    new = [_results(5.25, 9.6, 170.0, (100, 100))]
    rows = cmp.compare(_repetitions(old, new))
    text = cmp.table(rows).splitlines()
    assert text[0].split() == ["figure", "old", "median", "new", "median", "new/old", "target", "met?"]
    line = next(line for line in text if line.startswith("cost: worker CPU per completed run, no tools"))
    assert line.split()[-8:] == ["5.00", "ms", "5.25", "ms", "1.050", "<=", "1.10", "yes"]
    assert next(line for line in text if line.startswith("saturation")).endswith("NO")
    markdown = cmp.markdown_table(rows)
    assert markdown.splitlines()[0] == "| figure | old median | new median | new/old | target | met? |"
    assert "| 170.0 /s | 0.850 | >= 0.90 | **NO** |" in markdown


def test_env_overrides_go_to_one_side_and_on_to_its_bench_environment(tmp_path: Any) -> None:
    args = cmp.parse(["old", "new", "--env", "STREAMING=off", "--env", "DELTAS=on", "--env", "DELTAS=off",
                      "--old-env", "LOG_LEVEL=INFO"])
    assert args.envs == {"old": {"LOG_LEVEL": "INFO"}, "new": {"STREAMING": "off", "DELTAS": "off"}}
    assert cmp.parse(["old", "new"]).envs == {"old": {}, "new": {}}
    assert cmp.env_overrides(["A_1=x=y", "EMPTY="]) == {"A_1": "x=y", "EMPTY": ""}
    checkout = cmp.Checkout("abc", tmp_path)
    env = cmp._child_env(checkout, {"STREAMING": "off", "VIRTUAL_ENV": "elsewhere"})
    assert env["STREAMING"] == "off"
    assert env["VIRTUAL_ENV"] == str(checkout.venv)  # the side's venv wins over an override
    assert cmp._child_env(checkout).get("STREAMING") == cmp.os.environ.get("STREAMING")  # the other side's


@pytest.mark.parametrize("item", ["STREAMING", "=off", "1X=2", "A-B=1"])
def test_an_env_override_that_is_not_key_equals_value_is_a_usage_error(item: str) -> None:
    with pytest.raises(ValueError, match="KEY=VALUE"):
        cmp.env_overrides([item])
    with pytest.raises(SystemExit):
        cmp.parse(["old", "new", "--env", item])
