"""The side-by-side tables (issue 16): the worker, the SDK guide's blocking loop and the DBOS
baseline on the same scenario, each system's store CPU (Redis; PostgreSQL and Redis for DBOS)
beside its worker CPU, and the ratio worker / DBOS. The ratios are reported, not judged."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.figures import _fmt, _label, _path

Results = dict[str, Any]
Get = Callable[[Results], Any] | None

HEADERS = ("scenario", "figure", "worker", "blocking baseline", "DBOS", "worker / DBOS")


@dataclass(frozen=True)
class Side:
    scenario: str
    label: str
    worker: Get
    blocking: Get
    dbos: Get
    ratio: bool = True  # show worker / DBOS


def _sum(*getters: Callable[[Results], Any]) -> Callable[[Results], Any]:
    return lambda r: round(sum(float(g(r)) for g in getters), 3)


def _ms_per_run(*keys: str) -> Callable[[Results], Any]:
    """CPU seconds at `keys` of the concurrency burst, per reply, in ms."""
    return lambda r: round(1000 * float(_path("concurrency", *keys)(r)) / r["concurrency"]["conversations"], 2)


def _cost(variant: str) -> list[Side]:
    worker, dbos = ("cost", variant), ("cost", "dbos", variant)
    return [
        Side("cost", f"{variant}: worker CPU per completed 10 s run, ms"
             + (" (blocking: its loop's, in the concurrency scenario)" if variant == "no_tools" else ""),
             _path(*worker, "worker_cpu_ms_per_run"),
             _path("concurrency", "baseline", "cpu_ms_per_run") if variant == "no_tools" else None,
             _path(*dbos, "worker_cpu_ms_per_run")),
        Side("cost", f"{variant}: store CPU per run (Redis; DBOS: PostgreSQL + Redis), ms",
             _path(*worker, "redis_cpu_ms_per_run"), None, _path(*dbos, "store_cpu_ms_per_run")),
        Side("cost", f"{variant}:   of which PostgreSQL, ms", None, None, _path(*dbos, "postgres_cpu_ms_per_run"),
             ratio=False),
        Side("cost", f"{variant}: worker + store CPU per run, ms",
             _sum(_path(*worker, "worker_cpu_ms_per_run"), _path(*worker, "redis_cpu_ms_per_run")), None,
             _path(*dbos, "total_cpu_ms_per_run")),
        Side("cost", f"{variant}: API calls / polls per run",
             lambda r: f"{_fmt(r['cost'][variant]['api']['calls_per_run'])} / "
                       f"{_fmt(r['cost'][variant]['api']['polls_per_run'])}", None,
             lambda r: f"{_fmt(r['cost']['dbos'][variant]['api']['calls_per_run'])} / "
                       f"{_fmt(r['cost']['dbos'][variant]['api']['polls_per_run'])}", ratio=False),
    ]


def _faults(name: str, label: str, key: str) -> Side:
    return Side("faults", f"{label} (of {{faults[worker][sent]}}; blocking: of {{faults[blocking_baseline][sent]}})",
                _path("faults", "worker", key), _path("faults", "blocking_baseline", key) if name else None,
                _path("faults", "dbos", key), ratio=False)


SIDES: list[Side] = [
    Side("concurrency", "replies/s ({concurrency[conversations]:,} conversations at once, 10 s runs, 1 process; "
         "blocking: {concurrency[baseline][messages]} messages on 8 threads)",
         _path("concurrency", "replies_per_s"), _path("concurrency", "baseline", "replies_per_s"),
         _path("concurrency", "dbos", "replies_per_s")),
    Side("concurrency", "first send -> last reply, s", _path("concurrency", "wall_s"), None,
         _path("concurrency", "dbos", "wall_s")),
    Side("concurrency", "worker CPU per reply over the burst, ms (blocking: its loop's, in this process)",
         _ms_per_run("cpu_s", "worker"),
         _path("concurrency", "baseline", "cpu_ms_per_run"), _ms_per_run("dbos", "worker_cpu_s")),
    Side("concurrency", "store CPU per reply (Redis; DBOS: PostgreSQL + Redis), ms", _ms_per_run("cpu_s", "redis"),
         None, _ms_per_run("dbos", "store_cpu_s")),
    Side("concurrency", "worker RSS, max, MB", _path("concurrency", "worker_rss_mb_max"), None,
         _path("concurrency", "dbos", "rss_mb_max")),
    *_cost("no_tools"),
    *_cost("one_tool"),
    Side("saturation", "peak replies/s (run time 0, 2 processes; blocking: {saturation[blocking_baseline][messages]} "
         "messages on 16 threads)", _path("saturation", "peak_replies_per_s"),
         _path("saturation", "blocking_baseline", "replies_per_s"), _path("saturation", "dbos", "peak_replies_per_s")),
    Side("saturation", "worker CPU at the peak step, % of one core", _path("saturation", "worker_cpu_percent"), None,
         _path("saturation", "dbos", "worker_cpu_percent")),
    Side("saturation", "store CPU at the peak step (Redis; DBOS: PostgreSQL + Redis), %",
         _path("saturation", "store_cpu_percent"), None, _path("saturation", "dbos", "store_cpu_percent")),
    Side("saturation", "worker / store CPU per reply at the peak step, ms (blocking: its loop's)",
         lambda r: f"{_fmt(r['saturation']['worker_cpu_ms_per_reply'])} / "
                   f"{_fmt(r['saturation']['store_cpu_ms_per_reply'])}",
         _path("saturation", "blocking_baseline", "cpu_ms_per_run"),
         lambda r: f"{_fmt(r['saturation']['dbos']['worker_cpu_ms_per_reply'])} / "
                   f"{_fmt(r['saturation']['dbos']['store_cpu_ms_per_reply'])}", ratio=False),
    _faults("blocking", "replies lost", "lost"),
    _faults("", "replies duplicated", "duplicated"),
    _faults("", "conversations answered out of order", "reordered_conversations"),
    _faults("blocking", "user messages appended twice", "duplicate_user_messages"),
    _faults("", "runs per message", "runs_per_message"),
]


def _value(get: Get, results: Results) -> Any:
    if get is None:
        return None
    try:
        return get(results)
    except (KeyError, TypeError, IndexError, ValueError, ZeroDivisionError):
        return None


def rows(results: Results) -> list[tuple[str, ...]]:
    """The rows of the scenarios in `results`: scenario, label, worker, blocking, DBOS, ratio
    ("-": not measured; "skipped" when the DBOS baseline did not run)."""
    out = []
    for side in SIDES:
        if side.scenario not in results or "error" in results[side.scenario]:
            continue
        worker, blocking, dbos = (_value(g, results) for g in (side.worker, side.blocking, side.dbos))
        skipped = "skipped" in (results[side.scenario].get("dbos") or {})
        ratio = (round(worker / dbos, 2) if side.ratio and isinstance(worker, (int, float))
                 and isinstance(dbos, (int, float)) and dbos else None)
        out.append((side.scenario, _label(side.label, results), _cell(worker), _cell(blocking),
                    "skipped" if skipped else _cell(dbos), _fmt(ratio) if ratio is not None else "-"))
    return out


def _cell(value: Any) -> str:
    return "-" if value is None else _fmt(value)


def table(results: Results) -> str:
    """The plain-text table (empty when no scenario has side-by-side figures)."""
    cells = [HEADERS, *rows(results)]
    if len(cells) == 1:
        return ""
    widths = [max(len(row[i]) for row in cells) for i in range(len(HEADERS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown(results: Results) -> list[str]:
    """The page's section (no lines when no scenario has side-by-side figures)."""
    body = rows(results)
    if not body:
        return []
    return ["", "## Side by side: the worker, the SDK guide's blocking loop and DBOS", "",
            "The DBOS baseline (`bench/dbos_baseline/`) is what a DBOS user would write: one async workflow per",
            "message on a queue partitioned by conversation (`partition_concurrency=1`), each API call a step",
            "(DBOS's retries on, the SDK's at their default), `DBOS.sleep_async(1)` between polls (the SDK's",
            "`create_and_poll` interval), the event id as the workflow id, one executor id per process, in a",
            "scratch PostgreSQL database. It passes a no-fault correctness run before each timed part. Its",
            "store CPU is the whole PostgreSQL server's (every process below the postmaster) plus Redis's",
            "(its outbound entries and its conversation -> thread table). Ratios worker / DBOS are reported,",
            "not judged; `-`: not measured. The blocking baseline is the SDK guide's loop (`bench/baseline.py`)",
            "in the bench's process: its CPU is that process's over the loop, after one warm-up message.", "",
            "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS),
            *("| " + " | ".join(row) + " |" for row in body)]
