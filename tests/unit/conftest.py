"""Fixtures of the unit tests: real Redis (flushed per test), the fake backend, a clock."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from tests.fake_backend import FakeBackend
from tests.unit.harness import FakeClock, Harness, unit_settings


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_harness(redis_client: redis.Redis, clock: FakeClock) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(backend: FakeBackend | None = None, **settings: Any) -> Harness:
        harness = Harness(redis_client, clock, backend or FakeBackend(clock), unit_settings(**settings))
        made.append(harness)
        return harness

    yield make
    for harness in made:
        harness.close()


@pytest.fixture
def harness(make_harness: Callable[..., Harness]) -> Harness:
    return make_harness()
