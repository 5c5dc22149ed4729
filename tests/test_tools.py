"""The tool registry and runner, without the API: validation, errors, timeout, truncation."""

from __future__ import annotations

import json

from tests import sample_tools  # noqa: F401 - registers the sample tools
from worker.backends.base import ToolCall
from worker.tools import REGISTRY, ToolRunner, definitions


def test_definitions_come_from_type_hints_and_docstrings() -> None:
    weather = next(d for d in definitions() if d["function"]["name"] == "get_weather")
    params = weather["function"]["parameters"]
    assert weather["function"]["description"] == "Current weather for a city."
    assert params["required"] == ["city"]
    assert params["properties"]["unit"]["enum"] == ["c", "f"]


def test_runner_runs_calls_concurrently_within_the_timeout() -> None:
    runner = ToolRunner(timeout=0.5)
    calls = [ToolCall("a", "add", '{"a": 1, "b": 2}'), ToolCall("b", "slow_lookup", '{"seconds": 2}'),
             ToolCall("c", "nope", "{}"), ToolCall("d", "add", '{"a": "x"}'),
             ToolCall("e", "explode", "{}")]
    results = {r.call_id: r for r in runner.run(calls)}
    assert (results["a"].outcome, results["a"].output) == ("ok", "3")
    assert results["b"].outcome == "timeout" and results["b"].duration < 1.5
    assert results["c"].tool == "_unknown"
    assert json.loads(results["c"].output)["error"]["type"] == "unknown_tool"
    assert results["d"].outcome == "invalid_arguments"
    assert "RuntimeError: the tool blew up" in json.loads(results["e"].output)["error"]["message"]
    assert set(REGISTRY) >= {"add", "explode", "get_weather", "slow_lookup"}


def test_long_outputs_are_truncated_with_a_marker() -> None:
    (result,) = ToolRunner(timeout=5, max_output_chars=1000).run(
        [ToolCall("a", "big_output", '{"size": 5000}')])
    assert len(result.output) == 1000
    assert result.output.endswith("…[truncated 4000 characters]")


def test_invalid_arguments_are_told_to_the_model_in_short_plain_words() -> None:
    """Each field and what was wrong, without pydantic's type codes, echoed input or links."""
    runner = ToolRunner(timeout=5)
    cases = {
        '{"a": "x"}': "invalid arguments: a: Input should be a valid integer, unable to parse string as an integer;"
                      " b: required",
        '{"a": 1, "b": 2, "c": 3}': "invalid arguments: c: not an argument of this tool",
        "[1, 2]": "invalid arguments: must be a JSON object",
        "{nope": "invalid arguments: not JSON (Expecting property name enclosed in double quotes:"
                 " line 1 column 2 (char 1))",
    }
    try:
        results = runner.run([ToolCall(str(i), "add", args) for i, args in enumerate(cases)])
    finally:
        runner.shutdown()
    for result, expected in zip(results, cases.values(), strict=True):
        error = json.loads(result.output)["error"]
        assert (result.outcome, error["type"], error["message"]) == ("invalid_arguments", "invalid_arguments", expected)
        assert "http" not in result.output and "type=" not in result.output
