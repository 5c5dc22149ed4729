"""The stream loop's pace: a busy loop's rounds start at least ROUND_SECONDS apart, the
pause comes after what a round's chunks woke, and an idle loop never pauses."""

from __future__ import annotations

import asyncio
import threading

from worker.streams.loop import Pacer, StreamLoop


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 6))
        self.now += seconds


def test_a_pause_sleeps_what_is_left_of_the_round_and_a_late_round_not_at_all() -> None:
    clock = Clock()
    pacer = Pacer(0.005, clock, clock.sleep)
    pacer.pause()  # the first round: none before it
    clock.now += 0.002  # a round of 2 ms
    pacer.pause()
    clock.now += 0.007  # a round longer than the pace
    pacer.pause()
    clock.now += 0.001
    pacer.pause()
    assert clock.slept == [0.003, 0.004]


def test_a_round_that_read_chunks_pauses_once_after_what_it_woke() -> None:
    order: list[str] = []
    paused = threading.Event()

    def sleep(seconds: float) -> None:
        order.append("paused")
        paused.set()

    clock = Clock()
    pacer = Pacer(0.005, clock, sleep)
    pacer.pause()  # a round starts now (no sleep: none came before)
    loop = StreamLoop(pacer)
    loop.start()
    try:
        async def a_round() -> None:
            clock.now += 0.001  # the round is young: the pause will sleep
            for _ in range(3):  # three chunks in one round: one pause
                loop.pace()
            asyncio.get_running_loop().call_soon(order.append, "woken")  # a writer's send, woken by them

        loop.call(a_round(), timeout=5)
        assert paused.wait(5)
        loop.call(asyncio.sleep(0.01), timeout=5)  # a few rounds more: no chunk, no pause
        assert order == ["woken", "paused"]
    finally:
        loop.stop()
