"""Reading /proc: CPU time, resident memory and the descendants of a process (Linux only)."""

from __future__ import annotations

import os
from collections.abc import Iterable

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int, tid: int | None = None) -> list[str] | None:
    """Fields of /proc/PID/stat (of one thread's, /proc/PID/task/TID/stat) after the command
    name (index 0 is field 3, `state`)."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    try:
        with open(path, "rb") as f:
            raw = f.read().decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return raw[raw.rfind(")") + 2:].split()


def cpu_times(pid: int, tid: int | None = None) -> tuple[float, float] | None:
    """utime and stime of one process (or of its thread `tid`), in seconds (None when it is gone)."""
    fields = _stat_fields(pid, tid)
    if fields is None:
        return None
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of one process, in seconds (None when it is gone)."""
    times = cpu_times(pid)
    return None if times is None else times[0] + times[1]


def parent_map() -> dict[int, list[int]]:
    """ppid -> child pids, for every process visible now."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        fields = _stat_fields(int(name))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(name))
    return children


def descendants(pid: int, include_self: bool = True) -> list[int]:
    """`pid` (optionally) and every process below it."""
    children = parent_map()
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found if include_self else found[1:]


def children_of(pid: int) -> list[int]:
    return parent_map().get(pid, [])


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [part.decode(errors="replace") for part in f.read().split(b"\0") if part]
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []


def rss_bytes(pid: int) -> int | None:
    """VmRSS of a process in bytes (None when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


class CpuSnapshot:
    """CPU seconds of a set of processes at one moment."""

    def __init__(self, pids: Iterable[int]) -> None:
        self.values = {pid: value for pid in pids if (value := cpu_seconds(pid)) is not None}

    def subset(self, pids: Iterable[int]) -> CpuSnapshot:
        """The same readings, for `pids` only."""
        part = CpuSnapshot(())
        part.values = {pid: self.values[pid] for pid in pids if pid in self.values}
        return part

    def since(self, earlier: CpuSnapshot) -> float:
        """CPU seconds used between `earlier` and this snapshot (processes born meanwhile count
        from zero; those that exited meanwhile are lost, which the benchmarks avoid)."""
        return sum(value - earlier.values.get(pid, 0.0) for pid, value in self.values.items())


def machine_busy_seconds() -> float:
    """CPU seconds all CPUs spent busy since boot (/proc/stat: all but idle and iowait)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (values + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def all_cpu() -> dict[int, float]:
    """CPU seconds of every process visible now."""
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (value := cpu_seconds(int(name))) is not None:
            out[int(name)] = value
    return out
