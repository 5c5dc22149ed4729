"""Where a streamed run's CPU goes, thread by thread: the streaming scenario's flow (10 s runs,
about 100 deltas each, 20 new conversations a second, one worker process x 8 threads), with
each process of the worker tree and each thread of the Dramatiq worker process in ms of CPU
per completed run, its system part and its wake-ups. A development tool, not a scenario:

    python -m bench.threads [--backend responses] [--seconds 30] [--chunks 100]
                            [--env NAME=VALUE ...] [--py-spy FILE]

The busiest thread is the stream loop's; `--py-spy FILE` records the worker process meanwhile
(raw stacks, threads named) for a profile. CPU figures scale with the host's speed, printed
before and after (`bench.machine.cpu_speed`): compare variants in alternating runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench import procs
from bench.load import Outbound, Sent, make_producer, send_paced
from bench.machine import cpu_speed
from bench.scenarios.common import completed
from bench.scenarios.streaming import CHUNKS, RATE, RUN_SECONDS, _message
from bench.stack import free_port, running_stack
from bench.waits import Deadline


@dataclass(frozen=True)
class ThreadTimes:
    cpu: float  # utime + stime, seconds
    system: float  # stime, seconds
    wakeups: int  # voluntary context switches


def thread_times(pid: int) -> dict[int, ThreadTimes]:
    """Each live thread of `pid` (by thread id)."""
    times: dict[int, ThreadTimes] = {}
    for tid in map(int, os.listdir(f"/proc/{pid}/task")):
        cpu, wakeups = procs.cpu_times(pid, tid), _wakeups(pid, tid)
        if cpu is not None and wakeups is not None:  # else it ended meanwhile
            times[tid] = ThreadTimes(cpu[0] + cpu[1], cpu[1], wakeups)
    return times


def _wakeups(pid: int, tid: int) -> int | None:
    """A thread's voluntary context switches (None when it is gone)."""
    try:
        with open(f"/proc/{pid}/task/{tid}/status") as status:
            return int(status.read().split("\nvoluntary_ctxt_switches:")[1].split()[0])
    except FileNotFoundError:
        return None


def grown(before: ThreadTimes, after: ThreadTimes) -> ThreadTimes:
    return ThreadTimes(after.cpu - before.cpu, after.system - before.system, after.wakeups - before.wakeups)


@dataclass
class Measured:
    runs: int
    speed: tuple[float, float]  # the host's CPU speed before and after
    processes: dict[int, tuple[float, str]]  # pid -> CPU seconds, command line
    threads: dict[int, ThreadTimes]  # the worker process's threads: what each used meanwhile


def measure(args: argparse.Namespace) -> Measured:
    worker_env = {"ASSISTANT_BACKEND": args.backend, **dict(item.split("=", 1) for item in args.env)}
    logs = Path(tempfile.mkdtemp(prefix="bench-threads-"))
    with running_stack(logs, run_seconds=RUN_SECONDS, processes=1, threads=8, metrics_port=free_port(),
                       worker_env=worker_env, emulator_config={"stream_chunks": args.chunks}) as stack:
        outbound, producer = Outbound(stack.redis.client), make_producer(stack.redis.url)
        tree, (worker,) = stack.workers.pids(), stack.workers.worker_pids()
        before = {pid: procs.cpu_seconds(pid) or 0.0 for pid in tree}
        threads_before, speed_before = thread_times(worker), cpu_speed()
        spy = _py_spy(worker, args.py_spy) if args.py_spy else None
        count = send_paced(producer, RATE, args.seconds, lambda i: f"threads-{i}", _message, Sent())
        outbound.wait_length(count, Deadline(RUN_SECONDS * 1.3 + 120, f"{count} replies"), check=stack.check_alive)
        processes = {pid: ((procs.cpu_seconds(pid) or 0.0) - before[pid], " ".join(procs.cmdline(pid)))
                     for pid in tree}
        threads_after, speed_after = thread_times(worker), cpu_speed()
        if spy is not None:
            spy.send_signal(2)  # py-spy writes its file on SIGINT
            spy.wait(60)
        runs = completed(outbound.read_new())
    shutil.rmtree(logs, ignore_errors=True)
    zero = ThreadTimes(0.0, 0.0, 0)
    threads = {tid: grown(threads_before.get(tid, zero), after) for tid, after in threads_after.items()}
    return Measured(runs, (speed_before, speed_after), processes, threads)


def print_table(m: Measured) -> None:
    per_run = 1000.0 / max(1, m.runs)
    print(f"{m.runs} runs completed; host CPU speed {m.speed[0]} / {m.speed[1]} ms (lower is faster)")
    for pid, (cpu, command) in m.processes.items():
        print(f"process {pid:>7} {cpu * per_run:8.2f} ms/run  {command[:70]}")
    print(f"worker tree     {sum(cpu for cpu, _ in m.processes.values()) * per_run:8.2f} ms/run")
    busiest = sorted(m.threads.items(), key=lambda item: item[1].cpu, reverse=True)[:14]
    for tid, used in busiest:
        print(f"  thread {tid:>7} {used.cpu * per_run:8.2f} ms/run  system {used.system * per_run:6.2f}"
              f"  wake-ups/run {used.wakeups / max(1, m.runs):6.1f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.threads", description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="assistants", choices=("assistants", "responses"))
    parser.add_argument("--seconds", type=float, default=30.0, help="how long new conversations come (30)")
    parser.add_argument("--chunks", type=int, default=CHUNKS,
                        help=f"text deltas per reply ({CHUNKS}); 1 leaves the per-run part alone")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="a worker setting")
    parser.add_argument("--py-spy", metavar="FILE", help="record the worker process with py-spy (raw)")
    print_table(measure(parser.parse_args(argv)))


def _py_spy(pid: int, path: str) -> subprocess.Popen[bytes]:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return subprocess.Popen([spy, "record", "-p", str(pid), "-o", path, "-f", "raw", "-r", "200", "--nonblocking",
                             "--threads"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


if __name__ == "__main__":
    main()
