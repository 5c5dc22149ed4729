"""The DBOS baseline's part of a scenario: whether it can run here (said once, in one line, when
not), its stack checked by the no-fault correctness run before anything is timed, and the
worker / DBOS ratios."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

from bench.stats import ratio


@cache
def skipped() -> str | None:
    """Why the DBOS baseline does not run (None: it does); printed once per bench run.
    BENCH_DBOS=off leaves it out (bench compare's venvs, without the `bench` extra, skip it too)."""
    from bench.dbos_baseline.database import unavailable

    why = "BENCH_DBOS=off" if os.environ.get("BENCH_DBOS", "").lower() == "off" else unavailable()
    if why is not None:
        print(f"[bench] DBOS baseline skipped: {why}", file=sys.stderr, flush=True)
    return why


@contextmanager
def checked_stack(log_dir: Path, *, run_seconds: float, processes: int, warm_up: str | None = None,
                  emulator_config: dict[str, Any] | None = None) -> Iterator[Any]:
    """A DBOS stack that has passed the no-fault correctness run (its result on `.correctness`);
    `emulator_config` (faults) is applied after that run."""
    from bench.dbos_baseline.check import correctness_run
    from bench.dbos_baseline.stack import running_dbos_stack
    from bench.stack import WARM_UP

    with running_dbos_stack(log_dir, run_seconds=run_seconds, processes=processes,
                            warm_up=warm_up or WARM_UP) as stack:
        # 0.2 s runs for the check: the emulator's run time is a config field
        stack.emulator.configure(run_seconds=0.2)
        stack.correctness = correctness_run(stack)
        stack.emulator.configure(run_seconds=run_seconds, **(emulator_config or {}))
        yield stack


def ratios(worker: dict[str, Any], dbos: dict[str, Any], keys: tuple[str, ...]) -> dict[str, float | None]:
    """worker / DBOS for each of `keys` present in both (reported, not judged)."""
    return {key: ratio(float(worker[key]), float(dbos[key])) for key in keys
            if isinstance(worker.get(key), (int, float)) and isinstance(dbos.get(key), (int, float)) and dbos[key]}
