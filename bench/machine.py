"""A description of the machine and the software the figures came from."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from importlib import metadata
from typing import Any

from bench import procs
from bench.stack import ROOT

PACKAGES = ("assistant-worker", "dramatiq", "redis", "openai", "pydantic", "httpx")


def describe(argv: list[str]) -> dict[str, Any]:
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": command_line(argv),
        "nproc": _nproc(),
        "cpu_model": _cpu_model(),
        "memory_gb": _memory_gb(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "redis_server": _output(["redis-server", "--version"]) if shutil.which("redis-server") else None,
        "packages": {name: _version(name) for name in PACKAGES},
        "git": {"commit": _output(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]),
                "dirty": bool(_output(["git", "-C", str(ROOT), "status", "--porcelain"]))},
    }


def background_load(seconds: float = 3.0) -> dict[str, Any]:
    """What the rest of the machine uses while the benchmark runs nothing: busy CPU (% of one core)
    and the processes using more than 5 % of a core, to judge how noisy the figures are."""
    me = os.getpid()
    busy, before, start = procs.machine_busy_seconds(), procs.all_cpu(), time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - start
    after = procs.all_cpu()
    mine = after.get(me, 0.0) - before.get(me, 0.0)
    total = procs.machine_busy_seconds() - busy - mine
    hogs = sorted(((value - before.get(pid, 0.0), pid) for pid, value in after.items() if pid != me),
                  reverse=True)
    return {
        "seconds": round(wall, 1),
        "busy_cpu_percent": round(100 * total / wall, 1),
        "processes": [{"pid": pid, "cpu_percent": round(100 * used / wall, 1),
                       "command": " ".join(" ".join(procs.cmdline(pid)).split())[:120]}
                      for used, pid in hogs if used / wall > 0.05],
    }


def cpu_speed(repeats: int = 5) -> float:
    """CPU ms of a fixed pure-Python workload (median of `repeats`; lower is faster). Shared
    hosts change speed from hour to hour: this says how fast the machine was around a run,
    so that CPU figures of two runs can be compared."""
    times = []
    for _ in range(repeats):
        start = time.process_time()
        table: dict[int, str] = {}
        for n in range(50_000):
            table[n % 1000] = json.dumps({"n": n})
        times.append(1000.0 * (time.process_time() - start))
    return round(statistics.median(times), 1)


def command_line(argv: list[str]) -> str:
    python = os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(str(ROOT)) else sys.executable
    return shlex.join([python, "-m", "bench", *argv])


def _nproc() -> int | None:
    out = _output(["nproc"])
    return int(out) if out and out.isdigit() else os.cpu_count()


def _cpu_model() -> str | None:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or None


def _memory_gb() -> float | None:
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    return None


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _output(command: list[str]) -> str | None:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
