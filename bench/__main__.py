"""`python -m bench` (`make bench`): run the scenarios, print the table, write the results.
`python -m bench compare OLD NEW` (`make bench-compare`): compare two commits (bench/compare.py)."""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import time
import traceback
from pathlib import Path
from types import FrameType
from typing import Any

from bench import machine, report, sides
from bench.context import Context
from bench.figures import rows as figure_rows
from bench.scenarios import SCENARIOS
from bench.stack import ROOT
from bench.waits import BenchTimeout

BACKSTOP_SECONDS = 60  # past a scenario's own deadlines, an alarm interrupts it
NOISY_PERCENT = 10.0  # background CPU (% of one core) above which the run is flagged as noisy


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=(
        "Benchmarks of assistant-worker against the API emulator on a private redis-server. Prints a table "
        "of figures vs targets, writes bench-results/results.json and (full runs only) BENCHMARKS.md."),
        epilog="`python -m bench compare OLD NEW [--repeat 3] [--only cost,saturation] [--quick]` compares two "
               "commits instead (see `python -m bench compare --help`).")
    parser.add_argument("--only", default="", help=f"comma-separated scenarios (default all: {','.join(SCENARIOS)})")
    parser.add_argument("--quick", action="store_true", help="about 5x smaller sizes, a smoke run (never "
                        "writes BENCHMARKS.md)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results", help="results folder (bench-results)")
    parser.add_argument("--markdown", type=Path, default=ROOT / "BENCHMARKS.md", help="the page full runs write")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed, too")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    args.names = names
    return args


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise BenchTimeout("the scenario overran its timeout")


def run_scenario(name: str, ctx: Context) -> dict[str, Any]:
    scenario, timeout = SCENARIOS[name]
    speed_before = machine.cpu_speed()
    started = time.monotonic()
    print(f"[bench] {name}: starting (timeout {timeout:g} s)", file=sys.stderr, flush=True)
    signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout + BACKSTOP_SECONDS)
    try:
        result = scenario(ctx)
    except Exception as exc:  # noqa: BLE001 - any failure is reported, and the next scenario runs
        traceback.print_exc(file=sys.stderr)
        result = {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    result["elapsed_s"] = round(time.monotonic() - started, 1)
    result["cpu_speed_ms"] = {"before": speed_before, "after": machine.cpu_speed()}
    print(f"[bench] {name}: {'FAILED' if 'error' in result else 'done'} in {result['elapsed_s']} s",
          file=sys.stderr, flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["compare"]:
        from bench import compare
        return compare.main(argv[1:])
    args = parse(argv)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # clean up on the way out
    started = time.monotonic()
    about = machine.describe(argv)  # before the scenarios: the code they ran is this commit's
    logs = args.out / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    background = machine.background_load()
    if background["busy_cpu_percent"] > NOISY_PERCENT:
        print(f"[bench] warning: other processes keep {background['busy_cpu_percent']:g} % of a core busy "
              f"before the benchmark starts; the figures will be lower than on a quiet machine:", file=sys.stderr)
        for proc in background["processes"]:
            print(f"[bench]   pid {proc['pid']} {proc['cpu_percent']:g} %: {proc['command']}", file=sys.stderr)
    results: dict[str, Any] = {}
    for name in args.names:
        results[name] = run_scenario(name, Context(quick=args.quick, log_dir=logs / name))
    seconds = time.monotonic() - started
    rows = figure_rows(results)
    about["background_load"] = background
    git_now = machine.describe(argv)["git"]
    if git_now != about["git"]:  # the code changed under the run
        about["git_at_end"] = git_now
    full = not args.quick and args.names == list(SCENARIOS)
    report.write_json(args.out / "results.json", {
        "machine": about, "quick": args.quick, "scenarios": args.names, "elapsed_s": round(seconds, 1),
        "results": results,
        "table": [row.__dict__ for row in rows],
    })
    print(report.table(rows))
    side_by_side = sides.table(results)
    if side_by_side:
        print("\nSide by side (ratios reported, not judged):\n" + side_by_side)
    if full:
        args.markdown.write_text(report.markdown(about, rows, results, seconds))
    failed, missed = report.errors(results), report.misses(rows)
    print(f"\n{len(rows)} figures, {sum(r.status == 'PASS' for r in rows)} targets met, {len(missed)} missed; "
          f"{seconds / 60:.1f} minutes; results in {args.out / 'results.json'}"
          + (f" and {args.markdown.name}" if full else ""))
    for line in failed:
        print(f"FAILED {line}")
    if background["busy_cpu_percent"] > NOISY_PERCENT:
        print(f"NOTE other processes used {background['busy_cpu_percent']:g} % of a core before the run "
              f"(machine.background_load in results.json)")
    return 1 if failed or (args.strict and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
