"""The baseline under test: a private redis-server, the emulator, a scratch PostgreSQL database
and `python -m bench.dbos_baseline` with N processes; CPU marks that count the PostgreSQL
server beside them (the baseline's store, as Redis is the worker's)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from bench import procs
from bench.dbos_baseline.database import scratch_database, server_pids
from bench.dbos_baseline.names import READY
from bench.dbos_baseline.producer import DbosProducer
from bench.stack import OUTBOUND, ROOT, WARM_UP, CpuMark, Emulator, RedisServer, Service, start_services
from bench.waits import Deadline


class DbosWorkers(Service):
    name = "dbos-baseline"

    def __init__(self, log_dir: Path, redis_url: str, base_url: str, database_url: str, processes: int) -> None:
        self.processes = processes
        env = {**os.environ, "REDIS_URL": redis_url, "OUTBOUND_STREAM": OUTBOUND, "OPENAI_BASE_URL": base_url,
               "OPENAI_API_KEY": "sk-bench", "ASSISTANT_ID": "asst_default", "DBOS_DATABASE_URL": database_url,
               "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        super().__init__([sys.executable, "-m", "bench.dbos_baseline", "--processes", str(processes)],
                         log_dir / "dbos.log", env)

    def start(self, redis_client: redis.Redis, timeout: float = 60.0) -> None:
        """Start, then wait until every process listens to the queue."""
        redis_client.delete(*[f"{READY}bench-dbos-{i}" for i in range(self.processes)])
        super().start()
        deadline = Deadline(timeout, f"{self.processes} DBOS process(es) to launch")
        while sum(redis_client.exists(f"{READY}bench-dbos-{i}") for i in range(self.processes)) < self.processes:
            self.check_alive()
            deadline.sleep(0.1)

    def restart(self, redis_client: redis.Redis) -> None:
        """New processes under the same executor ids (they recover what the old ones left)."""
        Service.stop(self)
        self.start(redis_client)


@dataclass
class DbosStack:
    redis: RedisServer
    emulator: Emulator
    workers: DbosWorkers
    database_url: str
    postgres_pids: list[int]
    producer: DbosProducer
    correctness: dict[str, Any] | None = None  # the no-fault correctness run's audit, once run

    def check_alive(self) -> None:
        for service in (self.redis, self.emulator, self.workers):
            service.check_alive()

    def warm_up(self, text: str = WARM_UP, timeout: float = 60.0) -> None:
        """One message through the whole path; its reply is left out of every figure."""
        before = self.redis.client.xlen(OUTBOUND)
        self.producer.send_user_message("bench-warm-up", text)
        deadline = Deadline(timeout, "the DBOS warm-up message's reply")
        while self.redis.client.xlen(OUTBOUND) <= before:
            self.check_alive()
            deadline.sleep(0.02)

    def cpu_mark(self) -> CpuMark:
        """As Stack.cpu_mark, with `postgres`: the whole PostgreSQL server's processes (backends
        born meanwhile count from zero), and the worker's group the baseline's process tree."""
        pids = self.workers.pids()
        tree = procs.CpuSnapshot(pids)
        server = procs.descendants(self.postgres_pids[0]) if self.postgres_pids else []
        return CpuMark(time.time(), {
            "worker": tree,
            "redis": procs.CpuSnapshot([self.redis.pid]),
            "emulator": procs.CpuSnapshot([self.emulator.pid]),
            "bench": procs.CpuSnapshot([os.getpid()]),
            "postgres": procs.CpuSnapshot(server),
        }, procs.machine_busy_seconds(), tree.subset(pids[1:]))


@contextmanager
def running_dbos_stack(log_dir: Path, *, run_seconds: float, processes: int = 1, warm_up: str | None = WARM_UP,
                       emulator_config: dict[str, Any] | None = None) -> Iterator[DbosStack]:
    """A fresh redis-server, emulator, scratch database and baseline, warmed up by one message;
    all stopped (the database dropped) on the way out, even on failure."""
    with ExitStack() as stack:
        server, emulator = start_services(stack, log_dir, run_seconds, emulator_config)
        database_url = stack.enter_context(scratch_database())
        workers = DbosWorkers(log_dir, server.url, emulator.base_url, database_url, processes)
        stack.callback(workers.stop)
        workers.start(server.client)
        producer = DbosProducer(database_url)
        stack.callback(producer.close)
        ready = DbosStack(server, emulator, workers, database_url, server_pids(database_url), producer)
        if warm_up:
            ready.warm_up(warm_up)
        yield ready
