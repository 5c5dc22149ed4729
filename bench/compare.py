"""`python -m bench compare OLD NEW`: the figures of two commits, measured in interleaved
repetitions (old, new, old, new, ...) and compared on medians normalised by the host's speed.

Each commit runs its own bench (`<venv>/bin/python -m bench --only ... --out DIR` in a detached
`git worktree` of that commit, with a venv of its own), so that whatever the commit's emulator,
worker and scenarios are, they are driven by that commit's code; the figures are read from the
results.json it writes. Venvs are cached in `.bench-cache/<commit>/venv` (gitignored); the
worktrees (`.bench-cache/<commit>/tree`, a fixed path because the editable install points at it)
are removed on the way out.

Normalisation. Shared hosts change speed from hour to hour, so each repetition's figures are
scaled by the host-speed reference (`bench.machine.cpu_speed`: CPU ms of a fixed pure-Python
workload, lower is faster) measured in that same repetition: the mean of the reference before
and after the scenario the figure comes from (`cpu_speed_ms` in results.json). A CPU cost grows
with the reference time, a rate shrinks with it, so both are brought to a host on which the
reference takes NOMINAL_MS:

    CPU-like figure (ms per run):  value x NOMINAL_MS / reference_ms
    rate (replies/s):              value x reference_ms / NOMINAL_MS

When the two commits' `cpu_speed` differ (or a commit's results have no reference), the
reference this driver measures itself just before and after each repetition is used instead,
for both commits. The median over the repetitions of each commit is compared: ratio = new / old.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import machine, report
from bench.figures import Target
from bench.scenarios import SCENARIOS
from bench.stack import ROOT

NOMINAL_MS = 100.0  # normalised figures are "on a host where the reference workload takes 100 ms"
DEFAULT_SCENARIOS = ("cost", "saturation")
CACHE = ROOT / ".bench-cache"
NOISY_PERCENT = 10.0  # as bench.__main__: background CPU above which a run is flagged as noisy
SETUP_SECONDS = 600  # on top of the scenarios' own timeouts, for one bench run's start and end


@dataclass(frozen=True)
class Compared:
    """One figure compared between the commits; `target` applies to the ratio new / old."""

    key: str
    label: str
    scenario: str
    path: tuple[str, ...]  # inside results.json's results[scenario]
    kind: str  # "cpu" (scales with the reference time) or "rate" (scales with its inverse)
    unit: str = ""
    target: Target | None = None
    capped: tuple[str, str] | None = None  # (key, value) in results[scenario]: the figure is only a lower bound


CPU_TARGET = Target("<=", 1.10)
RATE_TARGET = Target(">=", 0.90)

COMPARED: list[Compared] = [
    Compared("cost.no_tools", "cost: worker CPU per completed run, no tools", "cost",
             ("no_tools", "worker_cpu_ms_per_run"), "cpu", "ms", CPU_TARGET),
    Compared("cost.one_tool", "cost: worker CPU per completed run, one tool call", "cost",
             ("one_tool", "worker_cpu_ms_per_run"), "cpu", "ms", CPU_TARGET),
    Compared("cost.no_tools.first_burst", "cost: worker CPU per run, no tools, first burst after the start", "cost",
             ("no_tools", "first_burst", "worker_cpu_ms_per_run"), "cpu", "ms"),
    Compared("cost.no_tools.restarted", "cost: worker CPU per run, no tools, restarted worker", "cost",
             ("no_tools", "restarted", "worker_cpu_ms_per_run"), "cpu", "ms"),
    Compared("cost.no_tools.redis", "cost: Redis CPU per run, no tools", "cost",
             ("no_tools", "redis_cpu_ms_per_run"), "cpu", "ms"),
    Compared("streaming.assistants", "streaming: worker CPU per run, deltas included (Assistants)", "streaming",
             ("assistants", "worker_cpu_ms_per_run"), "cpu", "ms"),
    Compared("streaming.responses", "streaming: worker CPU per run, deltas included (Responses)", "streaming",
             ("responses", "worker_cpu_ms_per_run"), "cpu", "ms"),
    Compared("saturation.peak", "saturation: peak replies/s (run time 0, 2 processes x 8 threads)", "saturation",
             ("peak_replies_per_s",), "rate", "/s", RATE_TARGET, capped=("stop_reason", "all rates sent")),
]


# ---- the pure part: figures of one repetition, medians, ratios, the table ----------------------


def _mean_reference(speed: Any) -> float | None:
    if not isinstance(speed, dict):
        return None
    values = [v for v in (speed.get("before"), speed.get("after")) if isinstance(v, (int, float)) and v > 0]
    return sum(values) / len(values) if values else None


def normalise(value: float, kind: str, reference_ms: float) -> float:
    """`value` as it would be on a host where the reference workload takes NOMINAL_MS."""
    if kind == "cpu":
        return value * NOMINAL_MS / reference_ms
    if kind == "rate":
        return value * reference_ms / NOMINAL_MS
    raise ValueError(f"unknown kind {kind!r}")


def repetition_figures(document: dict[str, Any], driver_reference_ms: float | None,
                       use_scenario_reference: bool = True,
                       compared: Sequence[Compared] = COMPARED) -> dict[str, dict[str, Any]]:
    """The compared figures of one bench run (its results.json `document`): raw value, the
    reference it is normalised by (and where that came from) and the normalised value; None
    values for a figure the run does not have (scenario not run, failed, key missing)."""
    results = document.get("results") or {}
    out: dict[str, dict[str, Any]] = {}
    for figure in compared:
        body = results.get(figure.scenario)
        entry: dict[str, Any] = {"raw": None, "reference_ms": None, "reference": None, "normalised": None}
        out[figure.key] = entry
        if not isinstance(body, dict):
            entry["missing"] = "scenario not run"
            continue
        if "error" in body:
            entry["missing"] = f"scenario failed: {body['error']}"
            continue
        value: Any = body
        for key in figure.path:
            value = value.get(key) if isinstance(value, dict) else None
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            entry["missing"] = "no such figure"
            continue
        entry["raw"] = value
        if figure.capped is not None and body.get(figure.capped[0]) == figure.capped[1]:
            entry["lower_bound"] = f"{figure.capped[0]}: {figure.capped[1]}"
        reference, source = None, None
        if use_scenario_reference:
            reference, source = _mean_reference(body.get("cpu_speed_ms")), "scenario"
        if reference is None and driver_reference_ms:
            reference, source = driver_reference_ms, "driver"
        if reference is None:
            entry["missing"] = "no host-speed reference"
            continue
        entry["reference_ms"] = round(reference, 2)
        entry["reference"] = source
        entry["normalised"] = round(normalise(value, figure.kind, reference), 4)
    return out


@dataclass
class Comparison:
    key: str
    label: str
    unit: str
    old: list[float] = field(default_factory=list)  # normalised values, in repetition order
    new: list[float] = field(default_factory=list)
    old_median: float | None = None
    new_median: float | None = None
    ratio: float | None = None
    target: str = ""
    met: bool | None = None  # None: no target


def compare(repetitions: Sequence[dict[str, Any]],
            compared: Sequence[Compared] = COMPARED) -> list[Comparison]:
    """Medians of each commit's normalised figures and their ratio, from the repetitions
    ({"side": "old" | "new", "figures": repetition_figures(...)}, in any order); a figure no
    repetition of either side has is left out."""
    rows = []
    for figure in compared:
        row = Comparison(figure.key, figure.label, figure.unit)
        for rep in repetitions:
            value = (rep.get("figures") or {}).get(figure.key, {}).get("normalised")
            if value is not None:
                getattr(row, rep["side"]).append(value)
        if not row.old and not row.new:
            continue
        row.old_median = statistics.median(row.old) if row.old else None
        row.new_median = statistics.median(row.new) if row.new else None
        if row.old_median and row.new_median is not None:
            row.ratio = round(row.new_median / row.old_median, 3)
        if figure.target is not None:
            row.target = f"{figure.target.op} {figure.target.threshold:.2f}"
            row.met = row.ratio is not None and figure.target.met(row.ratio)
        rows.append(row)
    return rows


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


HEADERS = ("figure", "old median", "new median", "new/old", "target", "met?")


def _cells(row: Comparison) -> tuple[str, ...]:
    def value(v: float | None) -> str:
        return f"{_number(v)} {row.unit}".strip() if v is not None else "n/a"

    met = "" if row.met is None else "yes" if row.met else "NO"
    return (row.label, value(row.old_median), value(row.new_median),
            f"{row.ratio:.3f}" if row.ratio is not None else "n/a", row.target, met)


def table(rows: Sequence[Comparison]) -> str:
    cells = [HEADERS] + [_cells(r) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADERS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(rows: Sequence[Comparison]) -> str:
    out = ["| " + " | ".join(HEADERS) + " |", "|---|---|---|---|---|---|"]
    for row in rows:
        cells = list(_cells(row))
        if cells[5] == "NO":
            cells[5] = "**NO**"
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


# ---- the driver: worktrees, venvs, the interleaved runs ---------------------------------------


def _git(*args: str, cwd: Path = ROOT) -> str:
    done = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def _log(message: str) -> None:
    print(f"[compare] {message}", file=sys.stderr, flush=True)


@dataclass
class Checkout:
    """A commit's worktree and venv under the cache."""

    commit: str
    cache: Path
    subject: str = ""
    created: bool = False  # this run added the worktree (and removes it)

    @property
    def tree(self) -> Path:
        return self.cache / self.commit / "tree"

    @property
    def venv(self) -> Path:
        return self.cache / self.commit / "venv"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def add_worktree(self) -> None:
        if self.tree.exists():  # left by a run that was killed: start from a clean one
            self.remove_worktree()
            shutil.rmtree(self.tree, ignore_errors=True)
        self.tree.parent.mkdir(parents=True, exist_ok=True)
        # --force: the path may still be registered from a killed run whose folder is gone
        _git("worktree", "add", "--force", "--detach", str(self.tree), self.commit)
        self.created = True

    def remove_worktree(self) -> None:
        with contextlib.suppress(RuntimeError):
            _git("worktree", "remove", "--force", str(self.tree))
        self.created = False

    def ensure_venv(self) -> None:
        """`python -m venv` + `pip install -e .` of the worktree, once per commit (a marker
        file says the install finished; the editable install points at the fixed tree path)."""
        marker = self.venv / ".bench-installed"
        if marker.exists() and self.python.exists():
            _log(f"{self.commit[:10]}: reusing the venv {self.venv}")
            return
        _log(f"{self.commit[:10]}: creating the venv {self.venv} (pip install -e .)")
        shutil.rmtree(self.venv, ignore_errors=True)
        log = self.cache / self.commit / "install.log"
        with open(log, "w") as out:
            for command in ([sys.executable, "-m", "venv", str(self.venv)],
                            [str(self.python), "-m", "pip", "install", "--quiet", "-e", str(self.tree)]):
                if subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, cwd=self.tree,
                                  check=False).returncode != 0:
                    raise RuntimeError(f"{' '.join(command)} failed (log: {log})")
        marker.write_text(self.commit + "\n")

    def reference_code(self) -> str | None:
        """The body of this commit's `bench.machine.cpu_speed` (docstring left out), to check
        that both commits measure the same reference."""
        try:
            module = ast.parse((self.tree / "bench" / "machine.py").read_text())
        except (OSError, SyntaxError):
            return None
        for node in module.body:
            if isinstance(node, ast.FunctionDef) and node.name == "cpu_speed":
                body = node.body
                if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
                    body = body[1:]
                return "\n".join(ast.dump(statement) for statement in body)
        return None


def _child_env(checkout: Checkout, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of one side's bench: ours without the Python paths, its venv first on
    PATH, and that side's overrides (`--env`, `--old-env`), which its bench hands on to the
    worker processes it starts (bench/stack.py's Workers copy the environment)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(extra or {})
    env["VIRTUAL_ENV"] = str(checkout.venv)
    env["PATH"] = os.pathsep.join([str(checkout.venv / "bin"), env.get("PATH", "")])
    return env


def run_bench(checkout: Checkout, scenarios: Sequence[str], quick: bool, out: Path, prefix: str,
              timeout: float, env: dict[str, str] | None = None) -> tuple[int | None, dict[str, Any] | None]:
    """One `python -m bench` of that commit, in its worktree, results in `out`: its exit code
    (None when it overran `timeout` and was stopped) and its results.json. Its output goes to
    out/bench.log, its [bench] lines are echoed with `prefix`; `env` is added to its environment."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    command = [str(checkout.python), "-m", "bench", "--only", ",".join(scenarios), "--out", str(out),
               "--markdown", str(out / "BENCHMARKS.md")] + (["--quick"] if quick else [])
    with open(out / "bench.log", "w") as log:
        settings = "".join(f"{key}={value} " for key, value in (env or {}).items())
        log.write(f"$ (cd {checkout.tree} && {settings}{' '.join(command)})\n")
        log.flush()
        proc = subprocess.Popen(command, cwd=checkout.tree, env=_child_env(checkout, env), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)

        def copy() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                log.flush()
                if line.startswith("[bench]"):
                    _log(f"{prefix} {line[len('[bench]'):].strip()}")

        reader = threading.Thread(target=copy, name="bench-output", daemon=True)
        reader.start()
        code: int | None
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _log(f"{prefix}: overran {timeout:g} s, stopping it")
            _stop(proc)
            code = None
        except BaseException:  # Ctrl-C, SIGTERM: stop it (it stops its services) and go
            _stop(proc)
            raise
        finally:
            reader.join(10)
    results = out / "results.json"
    return code, json.loads(results.read_text()) if code is not None and results.exists() else None


def _stop(proc: subprocess.Popen[str]) -> None:
    """SIGTERM (the bench stops its services on the way out), SIGKILL after 30 s."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(10)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench compare", description=(
        "Compare two commits: N interleaved repetitions of each commit's own bench (old, new, old, new, ...), "
        "each in a worktree and venv of that commit; medians normalised by the host-speed reference of each "
        "repetition. Prints the table, writes compare.json and compare.md to --out."))
    parser.add_argument("old", help="the old commit (any git revision)")
    parser.add_argument("new", help="the new commit (any git revision)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of each commit (3)")
    parser.add_argument("--only", default=",".join(DEFAULT_SCENARIOS),
                        help=f"comma-separated scenarios (default {','.join(DEFAULT_SCENARIOS)}; the compared "
                             "figures come from these two)")
    parser.add_argument("--quick", action="store_true", help="each run is a --quick one (a smoke test)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results" / "compare",
                        help="results folder (bench-results/compare)")
    parser.add_argument("--cache", type=Path, default=CACHE, help="where venvs are kept (.bench-cache)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed, too")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting for the NEW side's runs (repeatable), e.g. --env STREAMING=off: added to "
                             "its bench's environment, which the worker processes it starts inherit")
    parser.add_argument("--old-env", action="append", default=[], metavar="KEY=VALUE",
                        help="the same for the OLD side's runs")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    try:
        args.envs = {"old": env_overrides(args.old_env), "new": env_overrides(args.env)}
    except ValueError as exc:
        parser.error(str(exc))
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown or not names:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    args.names = names
    return args


def env_overrides(items: Sequence[str]) -> dict[str, str]:
    """`KEY=VALUE` items (`--env`) as a dict, the last of a key winning."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not key.replace("_", "").isalnum() or key[0].isdigit():
            raise ValueError(f"--env takes KEY=VALUE (a variable name, then =), got {item!r}")
        out[key] = value
    return out


def main(argv: list[str]) -> int:
    args = parse(argv)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # clean up on the way out
    sides = {"old": _git("rev-parse", "--verify", f"{args.old}^{{commit}}"),
             "new": _git("rev-parse", "--verify", f"{args.new}^{{commit}}")}
    cache = args.cache.resolve()
    checkouts = {commit: Checkout(commit, cache, _git("log", "-1", "--format=%s", commit))
                 for commit in dict.fromkeys(sides.values())}
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    timeout = sum(SCENARIOS[n][1] + 60 for n in args.names) + SETUP_SECONDS
    about = machine.describe(["compare", *argv])
    about["background_load"] = machine.background_load()
    started = time.monotonic()
    repetitions: list[dict[str, Any]] = []
    try:
        for checkout in checkouts.values():
            checkout.add_worktree()
            checkout.ensure_venv()
        codes = {c.commit: c.reference_code() for c in checkouts.values()}
        same_reference = len(set(codes.values())) == 1 and None not in codes.values()
        if not same_reference:
            _log("the commits' bench.machine.cpu_speed differ (or one has none): normalising by the reference "
                 "this driver measures around each repetition")
        order = [side for _ in range(args.repeat) for side in ("old", "new")]
        for index, side in enumerate(order):
            checkout = checkouts[sides[side]]
            number = index // 2 + 1
            prefix = f"{side} {number}/{args.repeat} ({checkout.commit[:10]})"
            _log(f"{prefix}: python -m bench --only {','.join(args.names)}{' --quick' if args.quick else ''}")
            before = machine.cpu_speed()
            code, document = run_bench(checkout, args.names, args.quick, out / "runs" / f"{index + 1:02d}-{side}",
                                       prefix, timeout, args.envs[side])
            after = machine.cpu_speed()
            driver_reference = (before + after) / 2
            rep = {"index": index + 1, "side": side, "repetition": number, "commit": checkout.commit,
                   "env": args.envs[side],
                   "exit_code": code, "driver_cpu_speed_ms": {"before": before, "after": after},
                   "results": str(out / "runs" / f"{index + 1:02d}-{side}" / "results.json"),
                   "background_cpu_percent": _background(document),
                   "figures": repetition_figures(document or {}, driver_reference, same_reference)}
            if document is None:
                why = f"timed out after {timeout:g} s" if code is None else f"exit code {code}"
                rep["error"] = f"no results ({why}; log {Path(rep['results']).parent / 'bench.log'})"
                _log(f"{prefix}: {rep['error']}")
            repetitions.append(rep)
    finally:
        for checkout in checkouts.values():
            if checkout.created:
                checkout.remove_worktree()
    rows = compare(repetitions)
    seconds = time.monotonic() - started
    document = {
        "machine": about, "old": _side(checkouts[sides["old"]]), "new": _side(checkouts[sides["new"]]),
        "repeat": args.repeat, "quick": args.quick, "scenarios": args.names, "env": args.envs,
        "nominal_reference_ms": NOMINAL_MS,
        "reference": "scenario" if same_reference else "driver", "elapsed_s": round(seconds, 1),
        "comparisons": [asdict(r) for r in rows], "repetitions": repetitions,
    }
    report.write_json(out / "compare.json", document)
    (out / "compare.md").write_text(markdown(document, rows))
    print(f"old {sides['old'][:10]} {checkouts[sides['old']].subject[:70]}")
    print(f"new {sides['new'][:10]} {checkouts[sides['new']].subject[:70]}")
    for side in ("old", "new"):
        if args.envs[side]:
            print(f"{side} side's environment: {_env_text(args.envs[side])}")
    print(f"{args.repeat} interleaved repetition(s) each{' (--quick)' if args.quick else ''}; medians of figures "
          f"normalised to a host where the reference workload takes {NOMINAL_MS:g} ms\n")
    print(table(rows) if rows else f"no compared figure comes from {', '.join(args.names)}")
    failed = [r for r in repetitions if "error" in r or r["exit_code"] != 0]
    missed = [r for r in rows if r.met is False]
    print(f"\n{sum(r.met is True for r in rows)} targets met, {len(missed)} missed; {seconds / 60:.1f} minutes; "
          f"{out / 'compare.json'} and compare.md")
    noisy = [f"{r['side']} {r['repetition']}: {r['background_cpu_percent']:g} %" for r in repetitions
             if (r.get("background_cpu_percent") or 0) > NOISY_PERCENT]
    if noisy:
        print(f"NOTE other processes kept a core partly busy before some runs ({', '.join(noisy)}): "
              "the normalisation corrects for the host's speed, not for contention; compare on a quiet machine")
    capped = sorted({f"{rep['side']} {rep['repetition']} ({key})" for rep in repetitions
                     for key, fig in rep["figures"].items() if fig.get("lower_bound")})
    if capped:
        print(f"NOTE a figure only reached the top of its scenario's load in {', '.join(capped)}: there it is a "
              "lower bound, not the saturation point, and its ratio is only indicative")
    for rep in failed:
        print(f"FAILED {rep['side']} repetition {rep['repetition']}: "
              f"{rep.get('error') or 'exit code ' + str(rep['exit_code'])} ({rep['results']})")
    return 1 if failed or not rows or (args.strict and missed) else 0


def _background(document: dict[str, Any] | None) -> float | None:
    """What other processes used (% of one core) just before that bench run, as it measured."""
    load = ((document or {}).get("machine") or {}).get("background_load") or {}
    value = load.get("busy_cpu_percent")
    return value if isinstance(value, (int, float)) else None


def _side(checkout: Checkout) -> dict[str, str]:
    return {"commit": checkout.commit, "subject": checkout.subject}


def _env_text(env: dict[str, str]) -> str:
    return " ".join(f"{key}={value}" for key, value in env.items())


def markdown(document: dict[str, Any], rows: Sequence[Comparison]) -> str:
    about = document["machine"]
    old, new = document["old"], document["new"]
    reference = ("the mean of `cpu_speed_ms` before and after the figure's scenario, in that run's results.json"
                 if document["reference"] == "scenario" else
                 "the mean of the driver's own `bench.machine.cpu_speed` just before and after each run (the "
                 "commits' own references differ)")
    envs = document.get("env") or {}

    def settings(side: str) -> str:
        return f" (with `{_env_text(envs[side])}`)" if envs.get(side) else ""

    out = [
        "# Benchmark comparison",
        "",
        f"- **Old**: `{old['commit'][:10]}` {old['subject']}{settings('old')}",
        f"- **New**: `{new['commit'][:10]}` {new['subject']}{settings('new')}",
        f"- **Date**: {about['date']}; **command**: `{about['command']}` ({document['elapsed_s'] / 60:.1f} minutes)",
        (f"- **Machine**: {about['nproc']} CPUs ({about['cpu_model']}), {about['memory_gb']} GB RAM; background "
        f"load before: {about['background_load']['busy_cpu_percent']:g} % of one core"),
        (f"- **Runs**: {document['repeat']} of each commit, interleaved (old, new, old, new, ...), "
        f"`--only {','.join(document['scenarios'])}`{' `--quick`' if document['quick'] else ''}; each runs "
        "that commit's own `python -m bench` in a worktree and venv of that commit"),
        (f"- **Normalisation**: each run's figures scaled to a host where the reference workload "
        f"(`bench.machine.cpu_speed`) takes {NOMINAL_MS:g} ms: CPU figures x {NOMINAL_MS:g} / reference ms, rates "
        f"x reference ms / {NOMINAL_MS:g}; reference = {reference}. Medians per commit; ratio = new / old."),
        "",
        markdown_table(rows),
        "",
        "## Repetitions",
        "",
        "Background: % of one core other processes used just before the run, as the bench measured it.",
        "",
        "| # | commit | background | figure | raw | reference ms | normalised |",
        "|---|---|---|---|---|---|---|",
    ]
    labels = {figure.key: figure.label for figure in COMPARED}
    for rep in document["repetitions"]:
        background = rep.get("background_cpu_percent")
        for key, fig in rep["figures"].items():
            if fig.get("missing") == "scenario not run" and "error" not in rep:
                continue
            raw = _number(fig["raw"]) if fig["raw"] is not None else rep.get("error") or fig.get("missing", "n/a")
            if fig.get("lower_bound"):
                raw += f" (lower bound, {fig['lower_bound']})"
            out.append(f"| {rep['index']} | {rep['side']} `{rep['commit'][:10]}` | "
                       f"{'' if background is None else f'{background:g} %'} | {labels.get(key, key)} | {raw} | "
                       f"{_number(fig['reference_ms']) if fig['reference_ms'] is not None else ''} | "
                       f"{_number(fig['normalised']) if fig['normalised'] is not None else ''} |")
    return "\n".join(out) + "\n"
