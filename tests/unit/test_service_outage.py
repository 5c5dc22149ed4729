"""The service through an API outage (the fake backend `down`) with the circuit breaker fed
by the fake's call outcomes, as a worker process's is: batches are held, not failed; one
probe at a time; `api_unavailable` after API_OUTAGE_HOLD_SECONDS; held time is not run
time."""

from __future__ import annotations

from collections.abc import Callable

from tests.unit.harness import Harness
from worker.circuit import readiness_problems
from worker.errors import PermanentApiError

CONVERSATIONS = [f"o{n}" for n in range(10)]


def run_for(harness: Harness, seconds: float) -> None:
    """Step whatever comes due for `seconds` of the test's clock."""
    until = harness.clock() + seconds
    while True:
        harness.run_tools()
        due = harness.due()
        if not due:
            upcoming = harness.next_due()
            if upcoming is None or upcoming > until:
                harness.clock.now = until
                return
            harness.clock.now = max(harness.clock.now, upcoming)
            continue
        for cid in due:
            harness.service.advance(cid)


def calls_log(harness: Harness) -> list[tuple[float, str]]:
    """Every API call's time and outcome, from now on."""
    seen: list[tuple[float, str]] = []
    feed = harness.circuit.record

    def observe(operation: str, outcome: str) -> None:
        seen.append((harness.clock(), outcome))
        feed(operation, outcome)

    harness.backend.observe = observe
    return seen


def start_runs(harness: Harness, text: str = "sleep:20") -> list[str]:
    ids = [harness.send(cid, text) for cid in CONVERSATIONS]
    for cid in CONVERSATIONS:
        harness.service.advance(cid)
    assert all(harness.batch(cid) and harness.batch(cid).run_id for cid in CONVERSATIONS)  # type: ignore[union-attr]  # checked first
    return ids


def test_an_outage_is_ridden_out_with_failures_frozen_and_one_probe_at_a_time(harness: Harness) -> None:
    """api_max_attempts is 4 here: without the breaker every batch would fail within 4 s."""
    ids = start_runs(harness)
    seen = calls_log(harness)
    harness.backend.down = True
    run_for(harness, 5)
    assert harness.circuit.is_open and harness.entries() == []
    frozen = {cid: harness.batch(cid).api_failures for cid in CONVERSATIONS}  # type: ignore[union-attr]  # open batches
    assert all(failures < 4 for failures in frozen.values())
    opened = harness.circuit.opened_at
    assert opened is not None
    run_for(harness, 120)
    assert harness.entries() == [], "nobody gave up"
    assert {cid: harness.batch(cid).api_failures for cid in CONVERSATIONS} == frozen  # type: ignore[union-attr]  # still open
    probes = [at for at, _ in seen if at > opened]
    spacings = [b - a for a, b in zip([opened, *probes], probes, strict=False)]
    schedule = [1.0, 2.0, 4.0, 8.0] + [15.0] * (len(spacings) - 4)
    assert len(spacings) >= 8, spacings
    # One call per probe: each after the spacing, within the held steps' jitter of it.
    assert all(due <= s <= due * 1.3 for s, due in zip(spacings, schedule, strict=True)), spacings
    assert all(harness.batch(cid).held_at is not None for cid in CONVERSATIONS)  # type: ignore[union-attr]  # held
    harness.backend.down = False
    harness.run_until_idle()
    entries = harness.entries()
    assert sorted(e for entry in entries for e in entry["event_ids"]) == sorted(ids)
    assert {entry["type"] for entry in entries} == {"run.completed"}
    assert not harness.circuit.is_open


def test_events_held_past_the_outage_hold_are_answered_api_unavailable(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(api_outage_hold_seconds=100.0)
    ids = start_runs(harness)
    harness.backend.down = True
    run_for(harness, 5)
    assert harness.circuit.is_open
    late = harness.send("o0", "sent during the outage")  # waits behind o0's batch
    fresh = harness.send("n1", "a new conversation")  # a new batch, held before its run starts
    run_for(harness, 90)
    assert harness.entries() == []
    harness.run_until_idle()  # the API stays down
    entries = harness.entries()
    answered = sorted(e for entry in entries for e in entry["event_ids"])
    assert answered == sorted([*ids, late, fresh]), "each once"
    assert {entry["error"]["code"] for entry in entries} == {"api_unavailable"}
    assert {entry["type"] for entry in entries} == {"run.failed"}
    assert "API_OUTAGE_HOLD_SECONDS" in entries[0]["error"]["message"]
    assert all(harness.batch(cid) is None for cid in [*CONVERSATIONS, "n1"]), "released"


def test_held_time_does_not_count_toward_the_run_timeout(harness: Harness) -> None:
    """RUN_TIMEOUT_SECONDS is 60 here; the run takes 100 s, 70 of them in an outage."""
    ids = start_runs(harness, "sleep:100")
    run_for(harness, 10)
    harness.backend.down = True
    run_for(harness, 70)
    assert harness.circuit.is_open
    harness.backend.down = False
    harness.run_until_idle()
    entries = harness.entries()
    assert sorted(e for entry in entries for e in entry["event_ids"]) == sorted(ids)
    assert {entry["type"] for entry in entries} == {"run.completed"}


def test_a_hold_before_the_run_starts_does_not_lengthen_its_timeout(harness: Harness) -> None:
    start_runs(harness, "hello")  # quick runs: they feed the breaker
    harness.backend.down = True
    run_for(harness, 5)
    assert harness.circuit.is_open
    late = harness.send("n0", "sleep:200")  # opened and held in STARTING
    run_for(harness, 100)
    harness.backend.down = False
    harness.run_until_idle()
    (entry,) = [e for e in harness.entries() if e["event_ids"] == [late]]
    assert entry["type"] == "run.cancelled" and entry["error"]["code"] == "timeout"
    assert 60_000 <= entry["timings"]["run_ms"] < 70_000, "timed out 60 s after its start"


def test_a_cancel_during_an_outage_is_answered_at_once(harness: Harness) -> None:
    start_runs(harness)
    harness.backend.down = True
    run_for(harness, 5)
    assert harness.circuit.is_open
    calls = len(harness.backend.calls)
    harness.store.inbox.request_cancel("o3")
    harness.service.advance("o3")
    (entry,) = harness.entries()
    assert entry["type"] == "run.cancelled" and entry["messages"] == []
    assert harness.backend.calls[calls:] == [], "no API call while the circuit is open"
    run_for(harness, 10)  # its run's stop waits at most CANCEL_WAIT_SECONDS (5 s here)
    assert harness.batch("o3") is None


def test_tool_outputs_are_kept_while_the_circuit_is_open_and_submitted_after(harness: Harness) -> None:
    start_runs(harness, 'call:add{"a": 1, "b": 2}')
    harness.clock.advance(5)
    for cid in CONVERSATIONS:
        harness.service.advance(cid)  # requires_action: the tools are dispatched
    assert len(harness.dispatched) == len(CONVERSATIONS)
    harness.backend.down = True
    run_for(harness, 5)
    assert harness.circuit.is_open
    submitted = harness.backend.calls.count("submit_tool_outputs")
    harness.run_tools()
    assert harness.backend.calls.count("submit_tool_outputs") == submitted, "not sent into the outage"
    harness.backend.down = False
    harness.run_until_idle()
    entries = harness.entries()
    assert len(entries) == len(CONVERSATIONS) and {e["type"] for e in entries} == {"run.completed"}
    assert all(e["messages"][0]["text"].startswith("Tool results: add") for e in entries)


def test_a_refused_key_is_reported_until_a_call_succeeds(harness: Harness) -> None:
    refused = PermanentApiError("Incorrect API key provided", code="invalid_api_key", status=401)
    harness.backend.fail_next("start_run", refused)
    first = harness.send("k1", "hello")
    harness.run_until_idle()
    (entry,) = harness.entries()
    assert entry["event_ids"] == [first] and entry["error"]["code"] == "invalid_api_key"
    (problem,) = readiness_problems([harness.circuit.snapshot()], harness.clock())
    assert problem.startswith("OPENAI_API_KEY is refused by the API (HTTP 401 invalid_api_key)")
    harness.clock.advance(1)
    harness.send("k2", "hello")
    harness.run_until_idle()
    assert readiness_problems([harness.circuit.snapshot()], harness.clock()) == []
