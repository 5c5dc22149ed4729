"""The figures the table shows, each read from the results, and the targets some must meet."""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

Results = dict[str, Any]


@dataclass(frozen=True)
class Target:
    op: str  # "<=" or ">="
    threshold: float

    def met(self, value: float) -> bool:
        return value <= self.threshold if self.op == "<=" else value >= self.threshold


@dataclass(frozen=True)
class Figure:
    scenario: str
    label: str
    get: Callable[[Results], Any]  # the value (a number, or a str for composite figures)
    unit: str = ""
    target: Target | None = None
    # Judged on the worst of the repetitions, not their median: a count that must hold each time.
    worst: bool = False


@dataclass(frozen=True)
class Row:
    scenario: str
    label: str
    value: str
    target: str
    status: str  # PASS, MISS, ERROR or "" (no target)


def _path(*keys: str) -> Callable[[Results], Any]:
    def get(results: Results) -> Any:
        value: Any = results
        for key in keys:
            value = value[key]
        return value
    return get


def _join(*getters: Callable[[Results], Any], sep: str = " / ") -> Callable[[Results], str]:
    return lambda r: sep.join(_fmt(g(r)) for g in getters)


def _cpu(r: Results) -> str:
    cpu = r["saturation"]["peak_cpu_percent"]
    return (f"worker {_fmt(cpu['worker'])} / Redis {_fmt(cpu['redis'])} / emulator {_fmt(cpu['emulator'])}"
            f" / load gen {_fmt(cpu['bench'])} / other processes {_fmt(cpu.get('others'))}")


def _poll(duration: str, *keys: str) -> Callable[[Results], Any]:
    return _path("polling", "rows", duration, *keys)


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:g}" if abs(value) >= 10 else f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


FIGURES: list[Figure] = [
    Figure("concurrency", "replies/s ({concurrency[conversations]:,} conversations at once, 10 s runs, "
           "1 process x 8 threads)",
           _path("concurrency", "replies_per_s"), "/s"),
    Figure("concurrency", "first send -> last of the replies", _path("concurrency", "wall_s"), "s",
           Target("<=", 60)),
    Figure("concurrency", "peak runs in flight", _path("concurrency", "peak_in_flight")),
    Figure("concurrency", "baseline replies/s (SDK guide, create_and_poll, {concurrency[baseline][messages]} "
           "messages on 8 threads)",
           _path("concurrency", "baseline", "replies_per_s"), "/s"),
    Figure("concurrency", "throughput vs the baseline", _path("concurrency", "speedup_vs_baseline"), "x",
           Target(">=", 50)),
    Figure("memory", "worker RSS per process (max over the run)", _path("concurrency", "worker_rss_mb_max"), "MB",
           Target("<=", 150)),
    Figure("memory", "Redis bytes per in-flight run", _path("concurrency", "redis_bytes_per_in_flight_run"), "B",
           Target("<=", 2048)),
    Figure("cost", "worker CPU per completed 10 s run, no tools ({cost[conversations]:,} at once)",
           _path("cost", "no_tools", "worker_cpu_ms_per_run"), "ms", Target("<=", 10)),
    Figure("cost", "  the first burst after the worker's start (no run history yet)",
           _path("cost", "no_tools", "first_burst", "worker_cpu_ms_per_run"), "ms"),
    Figure("cost", "  a restarted worker (new processes seeded with the shared run history)",
           _path("cost", "no_tools", "restarted", "worker_cpu_ms_per_run"), "ms"),
    Figure("cost", "  of which in the Dramatiq worker process",
           _path("cost", "no_tools", "worker_dramatiq_processes_cpu_ms_per_run"), "ms"),
    Figure("cost", "worker CPU per completed 10 s run, one tool call (first burst)",
           _join(_path("cost", "one_tool", "worker_cpu_ms_per_run"),
                 _path("cost", "one_tool", "first_burst", "worker_cpu_ms_per_run"))),
    Figure("cost", "Redis / emulator CPU per run, no tools (ms)",
           _join(_path("cost", "no_tools", "redis_cpu_ms_per_run"),
                 _path("cost", "no_tools", "emulator_cpu_ms_per_run"))),
    Figure("cost", "Redis / emulator CPU per run, one tool call (ms)",
           _join(_path("cost", "one_tool", "redis_cpu_ms_per_run"),
                 _path("cost", "one_tool", "emulator_cpu_ms_per_run"))),
    Figure("cost", "polls / other calls / tool submissions per run, no tools",
           _join(_path("cost", "no_tools", "api", "polls_per_run"),
                 _path("cost", "no_tools", "api", "other_calls_per_run"),
                 _path("cost", "no_tools", "api", "tool_submissions_per_run"))),
    Figure("cost", "  polls per run in the first burst / on the restarted worker",
           _join(_path("cost", "no_tools", "first_burst", "api", "polls_per_run"),
                 _path("cost", "no_tools", "restarted", "api", "polls_per_run"))),
    Figure("cost", "polls / other calls / tool submissions per run, one tool call",
           _join(_path("cost", "one_tool", "api", "polls_per_run"),
                 _path("cost", "one_tool", "api", "other_calls_per_run"),
                 _path("cost", "one_tool", "api", "tool_submissions_per_run"))),
    Figure("saturation", "peak replies/s (run time 0, 2 processes x 8 threads)",
           _path("saturation", "peak_replies_per_s"), "/s", Target(">=", 150)),
    Figure("saturation", "CPU at the peak step, % of one core", _cpu),
    Figure("overhead", "reply latency p50 / p95 / p99 (1 s runs, 20/s for {overhead[seconds]:g} s), ms",
           _join(_path("overhead", "latency_ms", "p50"), _path("overhead", "latency_ms", "p95"),
                 _path("overhead", "latency_ms", "p99"))),
    Figure("overhead", "processing overhead p50", _path("overhead", "processing_ms", "p50"), "ms", Target("<=", 20)),
    Figure("overhead", "processing overhead p95", _path("overhead", "processing_ms", "p95"), "ms"),
    Figure("overhead", "processing overhead p99", _path("overhead", "processing_ms", "p99"), "ms", Target("<=", 100)),
    Figure("overhead", "detection lag p50 / p95 / p99 (1 s runs), ms",
           _join(_path("overhead", "detection_lag_ms", "p50"), _path("overhead", "detection_lag_ms", "p95"),
                 _path("overhead", "detection_lag_ms", "p99"))),
]
for _d in ("1s", "10s", "60s"):
    FIGURES.append(Figure("polling", f"{_d} runs: API calls / polls per run",
                          _join(_poll(_d, "api", "calls_per_run"), _poll(_d, "api", "polls_per_run"))))
    FIGURES.append(Figure("polling", f"{_d} runs: detection lag p50 / p95, ms",
                          _join(_poll(_d, "detection_lag_ms", "p50"), _poll(_d, "detection_lag_ms", "p95"))))
    if _d == "10s":
        FIGURES += [
            Figure("polling", "polls per 10 s run", _poll(_d, "api", "polls_per_run"), "", Target("<=", 8)),
            Figure("polling", "API calls per 10 s run besides polls and tool submissions",
                   _poll(_d, "api", "other_calls_per_run"), "", Target("<=", 3)),
            Figure("polling", "detection lag p95, 10 s runs", _poll(_d, "detection_lag_ms", "p95"), "ms",
                   Target("<=", 1000)),
        ]



def _stream(*keys: str) -> Callable[[Results], Any]:
    return _path("streaming", *keys)


def _streaming_figures(backend: str, name: str, targets: bool) -> list[Figure]:
    """The flow's figures of one backend; the targets on the Assistants row."""
    def target(op: str, threshold: float) -> Target | None:
        return Target(op, threshold) if targets else None

    return [
        Figure("streaming", f"{name}: end lag p50 / p95 (10 s runs, {{streaming[rate]:g}}/s for "
               f"{{streaming[seconds]:g}} s, peak {{streaming[{backend}][peak_in_flight]}} in flight), ms",
               _join(_stream(backend, "end_lag_ms", "p50"), _stream(backend, "end_lag_ms", "p95"))),
        Figure("streaming", f"{name}: end lag p95 (terminal event sent -> run.ended in Redis)",
               _stream(backend, "end_lag_ms", "p95"), "ms", target("<=", 50)),
        Figure("streaming", f"{name}: polls per run (worker's assistant_run_polls_total / emulator's get calls)",
               _join(_stream(backend, "polls_per_run"), _stream(backend, "emulator_polls_per_run"))),
        Figure("streaming", f"{name}: polls per run", _stream(backend, "polls_per_run"), "", target("<=", 0.5)),
        Figure("streaming", f"{name}: run ends seen by the stream / by a poll (worker's counters)",
               _join(_stream(backend, "ends_by_stream"), _stream(backend, "ends_by_poll"))),
        Figure("streaming", f"{name}: delta latency p50 / p99 (chunk sent -> its entry in Redis), ms",
               _join(_stream(backend, "delta_latency_ms", "p50"), _stream(backend, "delta_latency_ms", "p99"))),
        Figure("streaming", f"{name}: delta latency p99", _stream(backend, "delta_latency_ms", "p99"), "ms",
               target("<=", 20)),
        Figure("streaming", f"{name}: worker CPU per completed run, deltas included",
               _stream(backend, "worker_cpu_ms_per_run"), "ms", target("<=", 12)),
        Figure("streaming", f"{name}: replies run.completed / all replies",
               _join(_stream(backend, "completed"), _stream(backend, "replies"))),
        Figure("streaming", f"{name}: messages whose concatenated deltas differ from the reply text "
               f"(of {{streaming[{backend}][text_checked]:,}})",
               _stream(backend, "text_mismatches"), "", Target("<=", 0), worst=True),
    ]


FIGURES += [
    Figure("faults", "worker replies lost + duplicated + conversations out of order (2 % lost responses, 3 % 429, "
           "3 % 500; {faults[worker][sent]:,} messages)",
           lambda r: sum(r["faults"]["worker"][k] for k in ("lost", "duplicated", "reordered_conversations")),
           "", Target("<=", 0), worst=True),
    Figure("faults", "worker user messages appended twice / runs per message",
           _join(_path("faults", "worker", "duplicate_user_messages"), _path("faults", "worker", "runs_per_message"))),
]
FIGURES += [
    Figure("cold_burst", "worker CPU per completed 2 s run, a worker just started, {cold_burst[conversations]:,} "
           "new conversations at once, STREAMING=off", _path("cold_burst", "streaming_off", "worker_cpu_ms_per_run"),
           "ms", Target("<=", 8)),
    Figure("cold_burst", "  the same, STREAMING=auto (runs followed by their streams)",
           _path("cold_burst", "streaming_auto", "worker_cpu_ms_per_run"), "ms", Target("<=", 8)),
    Figure("cold_burst", "  first send -> last reply, off / auto",
           _join(_path("cold_burst", "streaming_off", "wall_s"), _path("cold_burst", "streaming_auto", "wall_s")), "s"),
]
FIGURES += _streaming_figures("assistants", "Assistants", True)
FIGURES += _streaming_figures("responses", "Responses", False)
FIGURES += [
    Figure("streaming", "Redis per delta stream after one 100-delta reply (MEMORY USAGE, median) / at the "
           "1,000-entry cap", _join(_stream("assistants", "redis", "delta_stream_bytes", "p50"),
                                    _stream("assistants", "redis", "at_cap", "bytes")), "B"),
    Figure("streaming", "Redis used_memory kept per conversation after its reply (delta stream included)",
           _stream("assistants", "redis", "used_memory_growth_per_conversation"), "B"),
    Figure("streaming", "worker RSS with {streaming[memory][streams_open]:,} streams open (300 s runs, "
           "1 process)", _stream("memory", "worker_rss_mb_max"), "MB", Target("<=", 250)),
]


def rows(results: Results, repetitions: Sequence[Results] = ()) -> list[Row]:
    """Every figure that can be read from `results` (a failed scenario's figures show ERROR).
    A figure with a target is judged on the median of its values in `results` and in the
    `repetitions` that measured it (the worst of them for a `worst` figure); its cell lists
    each value, in the order they were measured."""
    out = []
    for figure in FIGURES:
        source = _source(figure)
        if source not in results:
            continue
        target = f"{figure.target.op} {_fmt(figure.target.threshold)} {figure.unit}".strip() if figure.target else ""
        if "error" in results[source]:
            out.append(Row(figure.scenario, _label(figure.label, results), "error", target,
                           "ERROR" if figure.target else ""))
            continue
        values = [_value(figure, results)]
        if figure.target is not None:
            values += [_value(figure, r) for r in repetitions if source in r and "error" not in r[source]]
        value, text = _judged(figure, values)
        status = ""
        if figure.target is not None:
            status = "MISS" if not isinstance(value, (int, float)) else "PASS" if figure.target.met(value) else "MISS"
        out.append(Row(figure.scenario, _label(figure.label, results), text, target, status))
    return out


def _source(figure: Figure) -> str:
    return "concurrency" if figure.scenario == "memory" else figure.scenario


def _value(figure: Figure, results: Results) -> Any:
    try:
        return figure.get(results)
    except (KeyError, TypeError, IndexError):
        return None


def _judged(figure: Figure, values: list[Any]) -> tuple[Any, str]:
    """The value judged and the cell's text: the first pass's value alone, or the median (or
    the worst) of the repetitions' numbers followed by each of them."""
    numbers = [v for v in values if isinstance(v, (int, float))]
    if len(numbers) < 2 or figure.target is None:
        value = values[0]
        return value, f"{_fmt(value)} {figure.unit}".strip() if value is not None else "n/a"
    worst = max(numbers) if figure.target.op == "<=" else min(numbers)
    value = worst if figure.worst else statistics.median(numbers)
    each = " / ".join(_fmt(v) for v in numbers)
    return value, f"{_fmt(value)} {figure.unit}".strip() + f" ({'worst' if figure.worst else 'median'} of {each})"


def _label(label: str, results: Results) -> str:
    """The label with its {scenario[key]} fields filled in from the results (N when missing)."""
    try:
        return label.format(**results)
    except (KeyError, IndexError, ValueError, TypeError):
        return re.sub(r"\{[^}]*\}", "N", label)
