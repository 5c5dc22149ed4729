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
FULL_REPEAT = 3  # passes of a full run: a shared host's speed changes from minute to minute


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
    parser.add_argument("--repeat", type=int, default=None, metavar="N", help=(
        f"passes: after the first (every figure), N-1 repetitions of the parts behind judged figures, "
        f"interleaved (each scenario in turn); targets are judged on the medians (default {FULL_REPEAT} for a "
        f"full run, 1 for --only or --quick)"))
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    if args.repeat is not None and args.repeat < 1:
        parser.error("--repeat takes 1 or more")
    args.names = names
    args.full = not args.quick and names == list(SCENARIOS)
    if args.repeat is None:
        args.repeat = FULL_REPEAT if args.full else 1
    return args


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise BenchTimeout("the scenario overran its timeout")


def run_scenario(name: str, ctx: Context, title: str | None = None) -> dict[str, Any]:
    scenario, timeout = SCENARIOS[name]
    title = title or name
    speed_before = machine.cpu_speed()
    started = time.monotonic()
    print(f"[bench] {title}: starting (timeout {timeout:g} s)", file=sys.stderr, flush=True)
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
    print(f"[bench] {title}: {'FAILED' if 'error' in result else 'done'} in {result['elapsed_s']} s",
          file=sys.stderr, flush=True)
    return result


def run_passes(args: argparse.Namespace, logs: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The first pass (every scenario, every figure), then the repetitions of the judged
    parts, each going through the scenarios in turn: a slow spell of the host falls on one
    repetition of several scenarios, not on every repetition of one."""
    results = {name: run_scenario(name, Context(quick=args.quick, log_dir=logs / name)) for name in args.names}
    repetitions = [
        {name: run_scenario(name, Context(quick=args.quick, log_dir=logs / f"{name}-{number}", judged_only=True),
                            f"{name} (repetition {number} of {args.repeat})") for name in args.names}
        for number in range(2, args.repeat + 1)]
    return results, repetitions


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
    results, repetitions = run_passes(args, logs)
    seconds = time.monotonic() - started
    rows = figure_rows(results, repetitions)
    about["background_load"] = background
    git_now = machine.describe(argv)["git"]
    if git_now != about["git"]:  # the code changed under the run
        about["git_at_end"] = git_now
    report.write_json(args.out / "results.json", {
        "machine": about, "quick": args.quick, "scenarios": args.names, "elapsed_s": round(seconds, 1),
        "results": results, "repetitions": repetitions,
        "table": [row.__dict__ for row in rows],
    })
    print(report.table(rows))
    side_by_side = sides.table(results)
    if side_by_side:
        print("\nSide by side (ratios reported, not judged):\n" + side_by_side)
    if args.full:
        args.markdown.write_text(report.markdown(about, rows, results, seconds, repetitions))
    failed, missed = report.errors(results, repetitions), report.misses(rows)
    print(f"\n{len(rows)} figures, {sum(r.status == 'PASS' for r in rows)} targets met, {len(missed)} missed; "
          f"{seconds / 60:.1f} minutes; results in {args.out / 'results.json'}"
          + (f" and {args.markdown.name}" if args.full else ""))
    for line in failed:
        print(f"FAILED {line}")
    if background["busy_cpu_percent"] > NOISY_PERCENT:
        print(f"NOTE other processes used {background['busy_cpu_percent']:g} % of a core before the run "
              f"(machine.background_load in results.json)")
    return 1 if failed or (args.strict and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
