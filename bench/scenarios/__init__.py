"""The benchmark scenarios, in the order they run: name -> (run(ctx) -> figures, timeout in seconds)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.context import Context
from bench.scenarios import cold_burst, concurrency, cost, faults, overhead, polling, saturation, streaming

Scenario = Callable[[Context], dict[str, Any]]

SCENARIOS: dict[str, tuple[Scenario, float]] = {
    "concurrency": (concurrency.run, concurrency.TIMEOUT),
    "cost": (cost.run, cost.TIMEOUT),
    "saturation": (saturation.run, saturation.TIMEOUT),
    "overhead": (overhead.run, overhead.TIMEOUT),
    "polling": (polling.run, polling.TIMEOUT),
    "streaming": (streaming.run, streaming.TIMEOUT),
    "faults": (faults.run, faults.TIMEOUT),
    "cold_burst": (cold_burst.run, cold_burst.TIMEOUT),
}
