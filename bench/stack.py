"""Starting and stopping the processes under test: a private redis-server, the API emulator and
`assistant-worker run` (the Procfile's worker line), each in its own process group, and the CPU
accounting of each group."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import redis

from bench import procs
from bench.waits import Deadline

ROOT = Path(__file__).resolve().parent.parent
OUTBOUND = "assistant:outbound"
WARM_UP = "warm-up sleep:0.05"  # a 50 ms run
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class Service:
    """One child process in its own process group; stop() ends the whole group."""

    name = "service"

    def __init__(self, command: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.command = command
        self.log_path = log_path
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - the process's log, open until stop()
        self.proc = subprocess.Popen(self.command, stdout=self._log, stderr=subprocess.STDOUT, env=self.env,
                                     cwd=ROOT, start_new_session=True)

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with code {self.proc.returncode} (log: {self.log_path})")

    def pids(self) -> list[int]:
        return procs.descendants(self.pid) if self.proc is not None and self.proc.poll() is None else []

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM to the group, SIGKILL after `grace` seconds (and to any child that left it)."""
        if self.proc is None:
            return
        stragglers = [(pid, procs.cmdline(pid)) for pid in self.pids()]
        _signal_group(self.proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(grace)
        _signal_group(self.proc.pid, signal.SIGKILL)
        for pid, command in stragglers:
            if command and procs.cmdline(pid) == command:  # still the same process
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        if self._log is not None:
            self._log.close()
        self.proc = None


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


class RedisServer(Service):
    name = "redis-server"

    def __init__(self, log_dir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (make redis-server installs it)")
        self.port = free_port()
        self.workdir = tempfile.mkdtemp(prefix="bench-redis-")
        super().__init__([binary, "--port", str(self.port), "--bind", HOST, "--save", "", "--appendonly", "no",
                          "--dir", self.workdir], log_dir / "redis.log")
        self.url = f"redis://{HOST}:{self.port}/0"
        self.client = redis.Redis(host=HOST, port=self.port)

    def start(self) -> None:
        super().start()
        deadline = Deadline(15, "redis-server to answer PING")
        while True:
            self.check_alive()
            with contextlib.suppress(redis.exceptions.ConnectionError):
                if self.client.ping():
                    return
            deadline.sleep(0.02)

    def used_memory(self) -> int:
        return int(self.client.info("memory")["used_memory"])

    def stop(self, grace: float = 10.0) -> None:
        self.client.close()
        super().stop(grace)
        shutil.rmtree(self.workdir, ignore_errors=True)


class Emulator(Service):
    """`assistant-emulator --port P --run-seconds X --jitter J --no-poll-hint`."""

    name = "emulator"

    def __init__(self, log_dir: Path, run_seconds: float, jitter: float = 0.3) -> None:
        self.port = free_port()
        self.run_seconds = run_seconds
        env = {k: v for k, v in os.environ.items() if not k.startswith("EMULATOR_")}  # no stray faults
        script = Path(sys.executable).parent / "assistant-emulator"
        command = [str(script)] if script.exists() else [sys.executable, "-m", "emulator"]
        super().__init__([*command, "--port", str(self.port), "--run-seconds", str(run_seconds),
                          "--jitter", str(jitter), "--no-poll-hint"], log_dir / "emulator.log", env)
        self.base_url = f"http://{HOST}:{self.port}/v1"

    def start(self) -> None:
        super().start()
        deadline = Deadline(15, "the emulator to answer /_emulator/health")
        while True:
            self.check_alive()
            with contextlib.suppress(OSError):
                if self.admin("health").get("ok"):
                    return
            deadline.sleep(0.05)

    def admin(self, view: str) -> Any:
        with urllib.request.urlopen(f"http://{HOST}:{self.port}/_emulator/{view}", timeout=60) as resp:
            return json.loads(resp.read())

    def stats(self) -> dict[str, Any]:
        return self.admin("stats")

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Change config fields at runtime (POST /_emulator/config); the new config."""
        request = urllib.request.Request(f"http://{HOST}:{self.port}/_emulator/config", method="POST",
                                         data=json.dumps(changes).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as resp:
            config: dict[str, Any] = json.loads(resp.read())
        return config

    def runs(self) -> list[dict[str, Any]]:
        return self.admin("runs")


class Workers(Service):
    """`assistant-worker run` with WORKER_PROCESSES x WORKER_THREADS against `redis_url` and the emulator."""

    name = "assistant-worker"

    def __init__(self, log_dir: Path, redis_url: str, base_url: str, processes: int, threads: int,
                 tool_modules: str = "", metrics_port: int = 0, env: dict[str, str] | None = None) -> None:
        self.processes = processes
        self.metrics_port = metrics_port
        env = {**os.environ,
               "REDIS_URL": redis_url, "OPENAI_BASE_URL": base_url, "OPENAI_API_KEY": "sk-bench",
               "ASSISTANT_ID": "asst_default", "WORKER_PROCESSES": str(processes),
               "WORKER_THREADS": str(threads), "METRICS_PORT": str(metrics_port), "LOG_LEVEL": "WARNING",
               "WORKER_TOOL_MODULES": tool_modules, "WORKER_SHUTDOWN_SECONDS": "3",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               **(env or {})}
        self.metrics_dir = tempfile.mkdtemp(prefix="bench-prom-")
        env["PROMETHEUS_MULTIPROC_DIR"] = self.metrics_dir
        script = Path(sys.executable).parent / "assistant-worker"
        command = [str(script), "run"] if script.exists() else [sys.executable, "-m", "worker.cli", "run"]
        super().__init__(command, log_dir / "worker.log", env)

    def start(self, redis_client: redis.Redis, timeout: float = 60.0) -> None:
        """Start, then wait until every Dramatiq process has fetched from the broker once."""
        super().start()
        deadline = Deadline(timeout, f"{self.processes} worker process(es) to reach the broker")
        while True:
            self.check_alive()
            if redis_client.zcard("dramatiq:__heartbeats__") >= self.processes \
                    and len(self.worker_pids()) >= self.processes:
                return
            deadline.sleep(0.1)

    def restart(self, redis_client: redis.Redis) -> None:
        """New processes, as a deploy or a scale-out brings (Redis and the emulator stay)."""
        Service.stop(self)
        redis_client.delete("dramatiq:__heartbeats__")  # start() waits for the new ones
        self.start(redis_client)

    def worker_pids(self) -> list[int]:
        """The Dramatiq worker processes (children of the `python -m dramatiq` master)."""
        masters = [pid for pid in self.pids() if "dramatiq" in procs.cmdline(pid)]
        return [child for master in masters for child in procs.children_of(master)]

    def metrics(self) -> dict[str, float]:
        """The samples of the worker's /metrics (METRICS_PORT must be set): `name{label="v",...}` -> value."""
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(f"http://{HOST}:{self.metrics_port}/metrics", timeout=30) as resp:
            text = resp.read().decode()
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                out[f"{sample.name}{{{labels}}}" if labels else sample.name] = float(sample.value)
        return out

    def stop(self, grace: float = 10.0) -> None:
        super().stop(grace)
        shutil.rmtree(self.metrics_dir, ignore_errors=True)


@dataclass
class CpuMark:
    """CPU seconds of each group at one moment, and when."""

    at: float
    groups: dict[str, procs.CpuSnapshot]  # disjoint: worker (tree), redis, emulator, bench
    machine: float  # busy CPU seconds of the whole machine
    dramatiq_workers: procs.CpuSnapshot  # the part of the worker tree that runs the actors

    def since(self, earlier: CpuMark) -> dict[str, float]:
        """CPU seconds of each group between the two marks, the part of the worker's in its Dramatiq
        worker processes (`worker_dramatiq_processes`; the rest is the supervisors), what other
        processes on the machine used meanwhile (`others`), and the wall seconds (`wall`)."""
        used = {name: snap.since(earlier.groups[name]) for name, snap in self.groups.items()}
        others = max(0.0, self.machine - earlier.machine - sum(used.values()))
        return {**used, "worker_dramatiq_processes": self.dramatiq_workers.since(earlier.dramatiq_workers),
                "others": others, "wall": self.at - earlier.at}


@dataclass
class Stack:
    redis: RedisServer
    emulator: Emulator
    workers: Workers

    def check_alive(self) -> None:
        for service in (self.redis, self.emulator, self.workers):
            service.check_alive()

    def warm_up(self, text: str, timeout: float = 60.0) -> None:
        """One message through the whole path (imports, connections, the first run), so that the
        figures that follow are steady-state ones; its reply is left out of every figure."""
        from producers import Producer  # the producers import the worker's settings
        from worker.settings import Settings

        producer = Producer(Settings(redis_url=self.redis.url))
        before = self.redis.client.xlen(OUTBOUND)
        producer.send_user_message("bench-warm-up", text)
        deadline = Deadline(timeout, "the warm-up message's reply")
        while self.redis.client.xlen(OUTBOUND) <= before:
            self.check_alive()
            deadline.sleep(0.02)
        producer.redis.close()

    def cpu_mark(self) -> CpuMark:
        dramatiq_workers = self.workers.worker_pids()
        tree = procs.CpuSnapshot(self.workers.pids())
        return CpuMark(time.time(), {
            "worker": tree,
            "redis": procs.CpuSnapshot([self.redis.pid]),
            "emulator": procs.CpuSnapshot([self.emulator.pid]),
            "bench": procs.CpuSnapshot([os.getpid()]),
        }, procs.machine_busy_seconds(), tree.subset(dramatiq_workers))


@contextmanager
def running_emulator(log_dir: Path, run_seconds: float) -> Iterator[Emulator]:
    emulator = Emulator(log_dir, run_seconds)
    try:
        emulator.start()
        yield emulator
    finally:
        emulator.stop()


def start_services(stack: ExitStack, log_dir: Path, run_seconds: float,
                   emulator_config: dict[str, Any] | None = None) -> tuple[RedisServer, Emulator]:
    """A fresh redis-server and emulator (its config fields set), stopped when `stack` closes."""
    server = RedisServer(log_dir)
    stack.callback(server.stop)
    server.start()
    emulator = stack.enter_context(running_emulator(log_dir, run_seconds))
    if emulator_config:
        emulator.configure(**emulator_config)
    return server, emulator


@contextmanager
def running_stack(log_dir: Path, *, run_seconds: float, processes: int = 1, threads: int = 8,
                  tool_modules: str = "", warm_up: str | None = WARM_UP,
                  metrics_port: int = 0, worker_env: dict[str, str] | None = None,
                  emulator_config: dict[str, Any] | None = None) -> Iterator[Stack]:
    """A fresh redis-server, emulator and worker, warmed up by one message (`warm_up`, None for
    none); all stopped on the way out, even on failure. `worker_env`: settings of the worker
    (added to its environment); `emulator_config`: config fields set before the worker starts."""
    with ExitStack() as stack:
        server, emulator = start_services(stack, log_dir, run_seconds, emulator_config)
        workers = Workers(log_dir, server.url, emulator.base_url, processes, threads, tool_modules,
                          metrics_port, worker_env)
        stack.callback(workers.stop)
        workers.start(server.client)
        ready = Stack(server, emulator, workers)
        if warm_up:
            ready.warm_up(warm_up)
        yield ready
