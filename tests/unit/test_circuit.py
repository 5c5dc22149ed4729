"""The API circuit breaker's state machine (worker/circuit.py), on a clock the test moves and
with the calling thread chosen by the test."""

from __future__ import annotations

import pytest

from tests.unit.harness import START, FakeClock
from worker import circuit as circuit_module
from worker.circuit import Circuit, readiness_problems


class Threads:
    """Which thread calls: the test switches it."""

    def __init__(self) -> None:
        self.current = 1

    def __call__(self) -> int:
        return self.current


@pytest.fixture
def threads() -> Threads:
    return Threads()


@pytest.fixture
def changes() -> list[bool]:
    return []


@pytest.fixture
def breaker(clock: FakeClock, threads: Threads, changes: list[bool]) -> Circuit:
    return Circuit(clock, on_change=changes.append, ident=threads)


def fail(breaker: Circuit, times: int, outcome: str = "connection_error") -> None:
    for _ in range(times):
        breaker.record("get_run", outcome)


def test_it_opens_when_8_of_the_last_10_calls_failed_transiently(breaker: Circuit, changes: list[bool]) -> None:
    fail(breaker, 20, "client_error")  # answers: a 4xx is the API there
    fail(breaker, 6)
    breaker.record("get_run", "ok")
    fail(breaker, 1, "rate_limited")
    assert not breaker.is_open and changes == [], "7 failures among the last 10"
    fail(breaker, 1, "server_error")
    assert breaker.is_open and changes == [True]
    assert breaker.last_error == "get_run: server_error"


def test_failures_spread_beyond_the_window_or_a_flaky_api_never_open_it(breaker: Circuit, clock: FakeClock) -> None:
    for _ in range(12):
        fail(breaker, 1, "timeout")
        clock.advance(circuit_module.WINDOW_SECONDS / 7 + 0.1)  # fewer than 8 within any 30 s
    assert not breaker.is_open
    for n in range(500):  # 1 in 5 fails: far from 8 in 10
        breaker.record("get_run", "server_error" if n % 5 == 0 else "ok")
    assert not breaker.is_open


def test_while_open_one_probe_at_a_time_with_backoff_until_the_api_answers(
        breaker: Circuit, clock: FakeClock, threads: Threads) -> None:
    fail(breaker, 8)
    opened = clock()
    held = breaker.admit()
    assert not held.go and held.delay == pytest.approx(1.0), "the first probe 1 s after opening"
    probes: list[float] = []
    for _ in range(7):
        threads.current = 1
        while not (admission := breaker.admit()).go:
            clock.advance(admission.delay)
        assert admission.probe
        probes.append(clock())
        threads.current = 2
        other = breaker.admit()
        assert not other.go, "a second thread waits while the probe is out"
        threads.current = 1
        assert breaker.admit().go, "the probe's own step goes on"
        fail(breaker, 1)  # the probe failed
    spacings = [round(b - a, 6) for a, b in zip([opened, *probes], probes, strict=False)]
    assert spacings == [1.0, 2.0, 4.0, 8.0, 15.0, 15.0, 15.0]
    assert breaker.is_open
    threads.current = 2
    clock.advance(15)
    assert breaker.admit().probe
    breaker.record("get_run", "ok")
    assert not breaker.is_open and breaker.admit().go


def test_a_failure_of_another_thread_while_open_is_not_the_probe_s(
        breaker: Circuit, clock: FakeClock, threads: Threads) -> None:
    fail(breaker, 8)
    clock.advance(1)
    assert breaker.admit().probe
    threads.current = 2
    fail(breaker, 3)  # calls sent before it opened, ending now
    assert not breaker.admit().go
    assert breaker.retry_in() == pytest.approx(1.0), "the probe is still out: one spacing"
    threads.current = 1
    assert breaker.admit().probe, "still the probe's"


def test_any_answer_closes_it_and_the_old_failures_are_forgotten(breaker: Circuit, changes: list[bool],
                                                                 threads: Threads) -> None:
    fail(breaker, 8)
    threads.current = 9
    breaker.record("submit_tool_outputs", "client_error")  # not the probe, but the API answered
    assert not breaker.is_open and changes == [True, False]
    fail(breaker, 7)
    assert not breaker.is_open, "the window starts again after closing"


def test_a_probe_handed_back_or_lost_lets_another_step_probe(
        breaker: Circuit, clock: FakeClock, threads: Threads) -> None:
    fail(breaker, 8)
    clock.advance(1)
    assert breaker.admit().probe
    breaker.release_probe()  # its step made no call
    threads.current = 2
    assert breaker.admit().probe
    threads.current = 3
    breaker.release_probe()  # not its probe: nothing changes
    for _ in range(int(circuit_module.PROBE_LEASE_SECONDS // 10)):
        assert not breaker.admit().go  # held steps keep asking
        clock.advance(10)
    assert breaker.admit().probe, "a probe that never resolved is given up"


def test_an_open_circuit_nobody_asks_about_closes_by_itself(breaker: Circuit, clock: FakeClock,
                                                            changes: list[bool]) -> None:
    fail(breaker, 8)
    clock.advance(circuit_module.IDLE_CLOSE_SECONDS - 1)
    assert breaker.admit().probe  # asked (and probing): still needed
    breaker.release_probe()
    clock.advance(circuit_module.IDLE_CLOSE_SECONDS + 1)
    assert breaker.snapshot()["open_since"] is None and changes == [True, False]


def test_the_snapshot_and_readyz_say_since_when_and_the_last_error(breaker: Circuit, clock: FakeClock) -> None:
    fail(breaker, 8)
    for _ in range(3):
        clock.advance(14)
        breaker.admit()
        fail(breaker, 1)  # a probe failed
    state = breaker.snapshot()
    assert state["open_since"] == START
    closed = {"open_since": None, "last_error": None, "last_ok_at": START, "refused": None}
    (problem,) = readiness_problems([state, closed], clock())
    assert problem.startswith("the API circuit is open since 2027-01-15T08:00:00Z (42 s, 1 of 2 worker processes)")
    assert problem.endswith("last probe error: get_run: connection_error")
    assert readiness_problems([closed], clock()) == []


def test_a_refused_key_is_reported_until_any_process_s_call_succeeds(breaker: Circuit, clock: FakeClock) -> None:
    breaker.record("get_run", "ok")
    clock.advance(1)
    breaker.refused("invalid_api_key", 401)
    breaker.record("get_run", "client_error")  # the refusal itself: an answer, not a success
    (problem,) = readiness_problems([breaker.snapshot()], clock())
    assert problem.startswith("OPENAI_API_KEY is refused by the API (HTTP 401 invalid_api_key)")
    later = {"open_since": None, "last_ok_at": clock() + 1, "refused": None}
    assert readiness_problems([breaker.snapshot(), later], clock()) == [], "another process's success"
    clock.advance(1)
    breaker.record("get_run", "ok")
    assert readiness_problems([breaker.snapshot()], clock()) == []
