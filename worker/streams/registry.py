"""Which processes read run streams, and for which conversations. Each process beats (a key
that expires, and its time in a sorted set); when one stops beating (killed), any other
process's next beat finds it and makes its conversations due at once, so that their streams
are taken over within seconds instead of at each run's safety poll."""

from __future__ import annotations

import time
from collections.abc import Callable

import redis.asyncio

from worker import keys

HEARTBEAT_TTL_SECONDS = 10.0  # a process silent this long has lost its streams
SWEEP_LIMIT = 20  # silent processes looked at per beat


class Registry:
    def __init__(self, client: redis.asyncio.Redis, process_id: str, clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.process_id = process_id
        self.clock = clock

    async def beat(self) -> None:
        pipeline = self.client.pipeline(transaction=False)
        pipeline.set(keys.streamer(self.process_id), "1", px=int(HEARTBEAT_TTL_SECONDS * 1000))
        pipeline.zadd(keys.STREAMERS, {self.process_id: self.clock()})
        await pipeline.execute()

    async def sweep(self) -> int:
        """Make the conversations of processes that stopped beating due now; how many."""
        silent = await self.client.zrangebyscore(keys.STREAMERS, "-inf", self.clock() - HEARTBEAT_TTL_SECONDS,
                                                 start=0, num=SWEEP_LIMIT)
        due = 0
        for raw in silent:
            process_id = raw.decode() if isinstance(raw, bytes) else str(raw)
            if await self.client.exists(keys.streamer(process_id)):
                continue  # its clock is behind ours, but it beats
            due += await self._release(process_id)
        return due

    async def _release(self, process_id: str) -> int:
        members = await self.client.smembers(keys.owned_streams(process_id))
        conversations = [m.decode() if isinstance(m, bytes) else str(m) for m in members]
        now = self.clock()
        pipeline = self.client.pipeline(transaction=False)
        if conversations:
            pipeline.zadd(keys.SCHEDULE, dict.fromkeys(conversations, now))
            pipeline.lpush(keys.WAKE, "1")
            pipeline.ltrim(keys.WAKE, 0, 0)
        pipeline.delete(keys.owned_streams(process_id))
        pipeline.zrem(keys.STREAMERS, process_id)
        await pipeline.execute()
        return len(conversations)

    async def leave(self) -> None:
        """A process that stops (its streams handed over): nothing of it is left."""
        pipeline = self.client.pipeline(transaction=False)
        pipeline.delete(keys.streamer(self.process_id), keys.owned_streams(self.process_id))
        pipeline.zrem(keys.STREAMERS, self.process_id)
        await pipeline.execute()
