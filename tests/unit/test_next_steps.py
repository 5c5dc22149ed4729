"""The step after a stored stream state, run in the process that read it
(worker/streams/next_steps.py): claims bounded by the room, a failed or unstarted step
left to the scheduler (its conversation due now)."""

from __future__ import annotations

import threading
import time

from worker.streams.next_steps import NextSteps


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.advanced: list[tuple[str, float]] = []
        self.released: list[str] = []
        self.gate = threading.Event()
        self.gate.set()
        self.done = threading.Semaphore(0)
        self.entered = threading.Semaphore(0)

    def advance(self, cid: str, claimed: float) -> None:
        self.entered.release()
        self.gate.wait(10)
        self.advanced.append((cid, claimed))
        self.done.release()
        if self.fail:
            raise RuntimeError("Redis went away")

    def release(self, cid: str) -> None:
        self.released.append(cid)


def steps_of(recorder: Recorder, threads: int = 1) -> NextSteps:
    return NextSteps(recorder.advance, recorder.release, threads=threads, lease_seconds=45.0, clock=lambda: 100.0)


def test_a_reserved_claim_runs_its_step_with_that_claim() -> None:
    recorder = Recorder()
    steps = steps_of(recorder)
    claim = steps.reserve()
    assert claim == 145.0  # the scheduler's claim: LEASE_SECONDS ahead
    steps.start("c1", claim)
    assert recorder.done.acquire(timeout=10)
    steps.close()
    assert recorder.advanced == [("c1", 145.0)] and recorder.released == []


def test_a_claim_a_thread_beyond_which_the_scheduler_takes_them_and_a_cancelled_one_frees_its_place() -> None:
    recorder = Recorder()
    recorder.gate.clear()  # the steps wait: their threads stay busy
    steps = steps_of(recorder, threads=2)
    claims = [steps.reserve() for _ in range(2)]
    assert all(claims) and steps.reserve() == 0.0
    steps.cancel()  # a write refused: not started
    claim = steps.reserve()
    assert claim != 0.0
    steps.start("c1", claim)
    assert recorder.entered.acquire(timeout=10)
    assert steps.reserve() == 0.0  # one running, one reserved
    recorder.gate.set()
    deadline = time.monotonic() + 10
    while steps.reserve() == 0.0:  # c1's thread is free again once its step returned
        assert time.monotonic() < deadline, "a thread whose step ended stayed taken"
        time.sleep(0.01)
    steps.close()


def test_a_failed_step_and_the_steps_stopping_leaves_unstarted_are_let_go() -> None:
    recorder = Recorder(fail=True)
    steps = steps_of(recorder)
    steps.start("c1", steps.reserve())
    assert recorder.done.acquire(timeout=10)
    recorder.fail, recorder.advanced = False, []
    recorder.gate.clear()
    assert recorder.entered.acquire(timeout=10)  # c1's
    steps.start("c2", steps.reserve())  # runs, and waits at the gate
    assert recorder.entered.acquire(timeout=10)
    steps.start("c3", 145.0)  # queued behind it on the one thread (as the loop would, its claim made)
    closing = threading.Thread(target=steps.close)
    closing.start()
    recorder.gate.set()
    closing.join(10)
    assert not closing.is_alive()
    assert steps.reserve() == 0.0  # stopped: no more claims
    assert [cid for cid, _ in recorder.advanced] == ["c2"]
    assert sorted(recorder.released) == ["c1", "c3"]  # the failed one, and the one not started
