"""The process's runtime: one service per process, however many threads ask at once."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from tests.fake_backend import FakeBackend
from tests.unit.harness import FakeClock, unit_settings
from worker import runtime as runtime_module
from worker.runtime import build_runtime


def test_threads_asking_together_share_one_service_and_one_backend(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker threads' first messages come together: a second service built meanwhile
    would be dropped with its API connections open (seen as sockets the GC closed)."""
    made: list[FakeBackend] = []
    building = threading.Event()

    def make_backend(*args: Any) -> FakeBackend:
        made.append(FakeBackend(FakeClock()))
        building.wait(0.2)  # hold the first builder while the others ask
        return made[-1]

    monkeypatch.setattr(runtime_module, "make_backend", make_backend)
    runtime = build_runtime(unit_settings(redis_url=redis_url))
    start, services = threading.Barrier(8), []

    def ask() -> None:
        start.wait()
        services.append(runtime.service())

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    try:
        assert len(services) == 8 and len({id(s) for s in services}) == 1
        assert len(made) == 1
    finally:
        runtime.close()
        runtime.broker.close()
    assert runtime.service() is not services[0]  # a use after close builds afresh
    runtime.close()
