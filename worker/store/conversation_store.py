"""The worker's view of the store: every part, on one Redis client and one clock."""

from __future__ import annotations

import time
from collections.abc import Callable

import redis

from worker.store.batches import Batches
from worker.store.claims import ToolClaims
from worker.store.deltas import DeltaConfig, DeltaStreams
from worker.store.history import PhaseHistory
from worker.store.inbox import Inbox
from worker.store.late_copies import LateCopies
from worker.store.outbound import Outbound
from worker.store.schedule import Schedule


class Store:
    def __init__(self, client: redis.Redis, *, outbound_stream: str, outbound_maxlen: int,
                 dead_letter_maxlen: int = 100_000, clock: Callable[[], float] = time.time,
                 deltas: DeltaConfig | None = None) -> None:
        self.redis = client
        self.deltas = DeltaStreams(client, deltas or DeltaConfig())
        self.inbox = Inbox(client, clock)
        self.schedule = Schedule(client, clock)
        self.batches = Batches(client)
        self.tool_claims = ToolClaims(client)
        self.outbound = Outbound(client, stream=outbound_stream, maxlen=outbound_maxlen,
                                 dead_letter_maxlen=dead_letter_maxlen, clock=clock, deltas=self.deltas)
        self.history = PhaseHistory(client)
        self.late_copies = LateCopies(client)

    def close(self) -> None:
        """Disconnect the client's pool (it reconnects if used again)."""
        self.redis.connection_pool.disconnect()
