"""Every phase against every backend outcome it can meet, as a table: the transition the
phase returns, and what it changed on the batch.

Each row starts a batch in its phase (in Redis, as a step would find it), lets the fake
backend answer the phase's call with the row's outcome, runs the phase's handler once
through the service (which turns API errors into their transition), and checks the result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.unit.harness import START, Harness
from worker.backends.base import Busy, RunState, Started, Submitted, ThreadOpened, ToolCall, Unseen
from worker.batch import Batch, Phase
from worker.conversation import tool_round
from worker.conversation.service import HANDLERS
from worker.conversation.transitions import (
    Answer,
    Checkpoint,
    DispatchTools,
    Finish,
    Idle,
    Later,
    Open,
    Polled,
    Step,
    Transition,
    Wait,
)
from worker.errors import (
    InvalidRequestError,
    PermanentApiError,
    RequestRefusedError,
    RouteNotFoundError,
    ThreadNotFoundError,
    TransientApiError,
)
from worker.events import InboundEvent

CID = "conv-t"
CALL = ToolCall("call_1", "add", '{"a": 1, "b": 2}')


def run(status: str, **fields: Any) -> RunState:
    return RunState(id=fields.pop("id", "run_1"), status=status, **fields)


@dataclass(frozen=True)
class Row:
    name: str
    phase: Phase | None  # None: no batch open (opening)
    method: str  # the backend call the outcome answers ('' when none is made)
    outcome: Any  # a value it returns, or an exception it raises
    expect: type
    check: Callable[[Transition], bool] = lambda t: True
    batch: dict[str, Any] = field(default_factory=dict)  # batch fields beside the phase's own
    step: dict[str, Any] = field(default_factory=dict)
    also: dict[str, Any] = field(default_factory=dict)  # replies of the calls that follow
    settings: dict[str, Any] = field(default_factory=dict)


def batch_of(t: Transition) -> Batch:
    assert not isinstance(t, Idle)
    return t.batch


def entry_type(t: Transition) -> str | None:
    assert isinstance(t, Answer | Finish)
    return t.entry.type if t.entry else None


def error_code(t: Transition) -> str | None:
    assert isinstance(t, Answer | Finish) and t.entry is not None and t.entry.error is not None
    return t.entry.error.code


TRANSIENT = TransientApiError("503 (injected)", status=503)
TOO_LONG = InvalidRequestError("Invalid 'additional_messages[0].content': string too long.",
                               code="string_above_max_length", status=400)
LOST = ThreadNotFoundError("No thread found with id 'thread_1'.", thread_id="thread_1")


def started_again(t: Transition) -> bool:
    """The batch starts again from nothing on a new thread, not counted as an API failure."""
    b = batch_of(t)
    return (b.phase is Phase.STARTING and b.thread_id is None and b.run_id is None and not b.messages_appended
            and b.threads_lost == 1 and b.api_failures == 0 and b.tools_key is None and not b.unconfirmed)
LOST_CREATE = TransientApiError("500 (injected)", status=500, maybe_applied=True)
ROWS = [
    # --- STARTING: create or adopt the run ---------------------------------------------
    Row("created, running", Phase.STARTING, "start_run", Started(run("queued"), "thread_1"), Wait,
        lambda t: batch_of(t).phase is Phase.RUNNING and batch_of(t).run_id == "run_1"),
    Row("created, ended at once", Phase.STARTING, "start_run", Started(run("completed"), "thread_1"), Checkpoint,
        lambda t: isinstance(t, Checkpoint) and t.known_run is not None and t.known_run.terminal),
    Row("created, tools at once", Phase.STARTING, "start_run",
        Started(run("requires_action", tool_calls=[CALL]), "thread_1"), Checkpoint),
    Row("created, unconfirmed", Phase.STARTING, "start_run",
        Started(run("completed", confirmed=False), "thread_1"), Wait, lambda t: batch_of(t).unconfirmed),
    Row("adopted after a lost answer", Phase.STARTING, "start_run",
        Started(run("in_progress"), "thread_1", adopted=True), Wait,
        lambda t: batch_of(t).messages_appended and batch_of(t).api_failures == 0, batch={"api_failures": 1}),
    Row("created with its thread", Phase.STARTING, "start_run", Started(run("queued"), "thread_new"), Wait,
        lambda t: batch_of(t).thread_id == "thread_new", batch={"thread_id": None}),
    Row("thread opened", Phase.STARTING, "start_run", ThreadOpened("thread_new"), Checkpoint,
        lambda t: batch_of(t).thread_id == "thread_new" and batch_of(t).phase is Phase.STARTING
        and isinstance(t, Checkpoint) and t.create_now and batch_of(t).create_sent_at == START,
        batch={"thread_id": None, "create_sent_at": START - 9}),
    Row("an earlier create may run unseen", Phase.STARTING, "start_run", Unseen(), Wait,
        lambda t: batch_of(t).busy_waits == 1 and not batch_of(t).created_again,
        batch={"create_sent_at": START - 5, "api_failures": 1}),
    Row("unseen past its wait: create again", Phase.STARTING, "start_run", Unseen(), Checkpoint,
        lambda t: isinstance(t, Checkpoint) and t.create_now and batch_of(t).created_again
        and batch_of(t).create_sent_at == START, batch={"create_sent_at": START - 31, "api_failures": 1}),
    Row("create lost: waited for from now", Phase.STARTING, "start_run", LOST_CREATE, Wait,
        lambda t: batch_of(t).create_sent_at == START and batch_of(t).api_failures == 1,
        batch={"create_sent_at": START - 100}),
    Row("create refused unapplied: nothing to wait for", Phase.STARTING, "start_run", TRANSIENT, Wait,
        lambda t: batch_of(t).create_sent_at is None, step={"fresh": True}),
    Row("a look failed while waiting", Phase.STARTING, "start_run", TRANSIENT, Wait,
        lambda t: batch_of(t).create_sent_at == START - 5, batch={"create_sent_at": START - 5, "api_failures": 1}),
    Row("no intent time: recorded first", Phase.STARTING, "", None, Checkpoint,
        lambda t: isinstance(t, Checkpoint) and t.create_now and batch_of(t).create_sent_at == START,
        batch={"create_sent_at": None}),
    Row("busy, not listable", Phase.STARTING, "start_run", Busy(None), Wait,
        lambda t: batch_of(t).busy_waits == 1),
    Row("busy past the run timeout", Phase.STARTING, "start_run", Busy(None), Finish,
        lambda t: entry_type(t) == "run.failed" and error_code(t) == "api_error", batch={"created_at": START - 999}),
    Row("busy with a foreign run", Phase.STARTING, "start_run", Busy(run("in_progress", id="run_x")), Wait,
        lambda t: batch_of(t).api_failures == 1),
    Row("refused (unknown assistant)", Phase.STARTING, "start_run",
        InvalidRequestError("No assistant found", code="invalid_event"), Finish,
        lambda t: entry_type(t) == "event.rejected"),
    Row("refused (the event's content)", Phase.STARTING, "start_run", TOO_LONG, Finish,
        lambda t: entry_type(t) == "event.rejected" and error_code(t) == "string_above_max_length"
        and t.entry is not None and t.entry.error is not None and t.entry.error.message == str(TOO_LONG)),
    Row("the thread lost", Phase.STARTING, "start_run", LOST, Checkpoint, started_again),
    Row("the thread lost again", Phase.STARTING, "start_run", LOST, Finish,
        lambda t: entry_type(t) == "run.failed" and error_code(t) == "thread_not_found", batch={"threads_lost": 1}),
    Row("another thread not found", Phase.STARTING, "start_run",
        ThreadNotFoundError("No thread found with id 'thread_9'.", thread_id="thread_9"), Wait,
        lambda t: batch_of(t).api_failures == 1 and batch_of(t).thread_id == "thread_1"),
    Row("a thread not found before it has one", Phase.STARTING, "start_run", LOST, Wait,
        lambda t: batch_of(t).api_failures == 1, batch={"thread_id": None}),
    Row("no such route", Phase.STARTING, "start_run", RouteNotFoundError("Invalid URL (POST /v1/threads/x/runs)"),
        Finish, lambda t: entry_type(t) == "run.failed" and error_code(t) == "route_not_found"),
    Row("a field of the worker's refused", Phase.STARTING, "start_run",
        RequestRefusedError("Invalid 'tools[0].name'", code="invalid_value", status=400), Finish,
        lambda t: entry_type(t) == "run.failed" and error_code(t) == "invalid_value"),
    Row("API error", Phase.STARTING, "start_run", TRANSIENT, Wait, lambda t: batch_of(t).api_failures == 1),
    Row("API error, budget spent", Phase.STARTING, "start_run", TRANSIENT, Finish,
        lambda t: entry_type(t) == "run.failed" and error_code(t) == "api_error", batch={"api_failures": 3}),
    Row("permanent API error", Phase.STARTING, "start_run", PermanentApiError("404", code="not_found"), Wait,
        lambda t: batch_of(t).api_failures == 1),
    Row("the key refused", Phase.STARTING, "start_run",
        PermanentApiError("Incorrect API key", code="invalid_api_key", status=401), Finish,
        lambda t: entry_type(t) == "run.failed" and error_code(t) == "invalid_api_key"),
    Row("the key refused while running", Phase.RUNNING, "get_run",
        PermanentApiError("no access", code="permission_denied", status=403), Answer,
        lambda t: error_code(t) == "permission_denied" and batch_of(t).phase is Phase.STOPPING),
    Row("intent not recorded yet", Phase.STARTING, "", None, Checkpoint,
        lambda t: batch_of(t).create_sent == 1, batch={"run_attempt": 1, "create_sent": 0}),
    Row("no assistant", Phase.STARTING, "", None, Finish, lambda t: entry_type(t) == "event.rejected",
        settings={"assistant_id": None}),
    # --- RUNNING: follow the run ---------------------------------------------------------
    Row("queued", Phase.RUNNING, "get_run", run("queued"), Polled),
    Row("in progress", Phase.RUNNING, "get_run", run("in_progress"), Polled),
    Row("in progress after a failure", Phase.RUNNING, "get_run", run("in_progress"), Wait,
        lambda t: batch_of(t).api_failures == 0, batch={"api_failures": 2}),
    Row("requires action", Phase.RUNNING, "get_run", run("requires_action", tool_calls=[CALL]), DispatchTools,
        lambda t: batch_of(t).tools_key == "run_1:call_1" and not batch_of(t).tools_redispatched),
    Row("requires action, dispatched", Phase.RUNNING, "get_run", run("requires_action", tool_calls=[CALL]), Later,
        lambda t: isinstance(t, Later) and t.due == pytest.approx(START + 11.0),
        batch={"tools_key": "run_1:call_1", "tools_at": START - 1}),
    Row("requires action, window passed", Phase.RUNNING, "get_run", run("requires_action", tool_calls=[CALL]),
        DispatchTools, lambda t: batch_of(t).tools_redispatched,
        batch={"tools_key": "run_1:call_1", "tools_at": START - 60}),
    Row("completed", Phase.RUNNING, "get_run", run("completed"), Finish, lambda t: entry_type(t) == "run.completed"),
    Row("failed, retryable", Phase.RUNNING, "get_run",
        run("failed", error={"code": "server_error", "message": "x"}), Wait,
        lambda t: batch_of(t).phase is Phase.STARTING and batch_of(t).run_attempt == 1 and batch_of(t).run_id is None),
    Row("failed, retries spent", Phase.RUNNING, "get_run",
        run("failed", error={"code": "server_error", "message": "x"}), Finish,
        lambda t: entry_type(t) == "run.failed", batch={"run_attempt": 2}),
    Row("failed for good", Phase.RUNNING, "get_run", run("failed", error={"code": "invalid_prompt", "message": "x"}),
        Finish, lambda t: error_code(t) == "invalid_prompt"),
    Row("cancelled elsewhere", Phase.RUNNING, "get_run", run("cancelled"), Finish,
        lambda t: entry_type(t) == "run.cancelled"),
    Row("expired", Phase.RUNNING, "get_run", run("expired"), Finish, lambda t: entry_type(t) == "run.expired"),
    Row("incomplete", Phase.RUNNING, "get_run", run("incomplete"), Finish, lambda t: entry_type(t) == "run.incomplete"),
    Row("went on under another id", Phase.RUNNING, "get_run", run("in_progress", id="run_2"), Wait,
        lambda t: batch_of(t).run_id == "run_2"),
    Row("past the run timeout", Phase.RUNNING, "get_run", run("in_progress"), Answer,
        lambda t: error_code(t) == "timeout" and batch_of(t).phase is Phase.STOPPING,
        batch={"run_started_at": START - 999}),
    Row("unconfirmed, confirmed now", Phase.RUNNING, "confirm_run", run("in_progress"), Wait,
        lambda t: not batch_of(t).unconfirmed, batch={"unconfirmed": True}),
    Row("poll failed", Phase.RUNNING, "get_run", TRANSIENT, Wait, lambda t: batch_of(t).api_failures == 1),
    Row("the thread lost while running", Phase.RUNNING, "confirm_run", LOST, Checkpoint, started_again,
        batch={"tools_key": "run_1:call_1", "tools_at": START, "unconfirmed": True, "api_failures": 1}),
    Row("the thread lost with the reply", Phase.RUNNING, "get_run", run("completed"), Checkpoint, started_again,
        also={"run_messages": LOST}),
    # --- STOPPING: answered, stop the run ------------------------------------------------
    Row("answered: ask to stop", Phase.STOPPING, "cancel_run", None, Wait, lambda t: batch_of(t).stop_requested,
        batch={"stop_requested": False}),
    Row("answered: stop refused", Phase.STOPPING, "cancel_run", TRANSIENT, Wait,
        lambda t: batch_of(t).stop_requested, batch={"stop_requested": False}),
    Row("stopped", Phase.STOPPING, "get_run", run("cancelled"), Finish, lambda t: entry_type(t) is None),
    Row("still running", Phase.STOPPING, "get_run", run("in_progress"), Wait),
    Row("still running past the wait", Phase.STOPPING, "get_run", run("in_progress"), Finish,
        batch={"cancel_deadline": START - 1}),
    Row("no run known: found one", Phase.STOPPING, "find_run", run("in_progress", id="run_9"), Wait,
        lambda t: batch_of(t).run_id == "run_9", batch={"run_id": None},
        also={"cancel_run": None, "get_run": run("cancelling", id="run_9")}),
    Row("no run known: none", Phase.STOPPING, "find_run", None, Finish, batch={"run_id": None}),
    Row("no thread", Phase.STOPPING, "", None, Finish, batch={"run_id": None, "thread_id": None}),
    Row("stop check failed", Phase.STOPPING, "get_run", TRANSIENT, Wait, lambda t: batch_of(t).api_failures == 1),
    Row("the thread lost while stopping", Phase.STOPPING, "get_run", LOST, Finish,
        lambda t: entry_type(t) is None and batch_of(t).run_id is None),
    Row("stop check failing for good", Phase.STOPPING, "get_run", TRANSIENT, Finish,
        lambda t: entry_type(t) is None, batch={"api_failures": 3}),
    Row("stopped, unconfirmed: the copy kept", Phase.STOPPING, "get_run", run("cancelled"), Finish,
        lambda t: batch_of(t).run_id == "items:msg_1", batch={"unconfirmed": True},
        also={"confirm_run": run("completed", id="items:msg_1")}),
    Row("stopped, unconfirmed: confirm failed", Phase.STOPPING, "get_run", run("cancelled"), Finish,
        lambda t: batch_of(t).run_id == "run_1", batch={"unconfirmed": True},
        also={"confirm_run": None}),
]


def make_batch(phase: Phase, **fields: Any) -> Batch:
    event = InboundEvent(event_id="e1", conversation_id=CID, content="hello", sent_at=START)
    base: dict[str, Any] = {"created_at": START, "create_sent": 0, "create_sent_at": START, "thread_id": "thread_1"}
    if phase is not Phase.STARTING:
        base |= {"run_id": "run_1", "messages_appended": True, "run_started_at": START, "phase_started_at": START}
    if phase is Phase.STOPPING:
        base |= {"published": True, "cancel_deadline": START + 5, "stop_requested": True}
    return Batch.new("b1", CID, [event], phase=phase, **(base | fields))


@pytest.mark.parametrize("row", ROWS, ids=[f"{r.phase.name if r.phase else 'OPEN'}: {r.name}" for r in ROWS])
def test_a_phase_meets_a_backend_outcome(make_harness: Callable[..., Harness], row: Row) -> None:
    harness = make_harness(**row.settings)
    batch = make_batch(row.phase, **row.batch) if row.phase else None
    if isinstance(row.outcome, Exception):
        harness.backend.fail_next(row.method, row.outcome)
    elif row.method:
        harness.backend.reply_next(row.method, row.outcome)
    for method, reply in ({"run_messages": []} | row.also).items():
        if reply is None and method == "confirm_run":
            harness.backend.fail_next(method, TRANSIENT)
        elif isinstance(reply, Exception):
            harness.backend.fail_next(method, reply)
        else:
            harness.backend.reply_next(method, reply)
    assert batch is not None
    transition = harness.service._handle(Step(1, **row.step), batch)
    assert type(transition) is row.expect, transition
    assert row.check(transition), transition
    if row.method:
        assert row.method in harness.backend.calls


def test_every_phase_has_rows_and_a_handler() -> None:
    assert {r.phase for r in ROWS} >= set(Phase) and set(HANDLERS) == set(Phase)


# --- opening (no batch) and the cancel request ---------------------------------------------
def test_opening_an_empty_inbox_is_idle(harness: Harness) -> None:
    from worker.conversation import opening

    assert isinstance(opening.open_next(harness.service.ctx, CID), Idle)


def test_opening_takes_the_events_of_one_batch_key_and_rejects_a_bad_head(harness: Harness) -> None:
    from worker.conversation import opening

    harness.redis.rpush("aw:inbox:" + CID, b"not json")
    harness.send(CID, "one")
    harness.send(CID, "two")
    harness.send(CID, "three", instructions="other")
    transition = opening.open_next(harness.service.ctx, CID)
    assert isinstance(transition, Open) and transition.taken == 2
    assert [e.content for e in transition.batch.events] == ["one", "two"]
    assert [e["type"] for e in harness.entries()] == ["event.rejected"]


def test_a_cancel_request_answers_a_batch_in_any_unanswered_phase(harness: Harness) -> None:
    for phase in (Phase.STARTING, Phase.RUNNING):
        transition = harness.service._first_transition(Step(1), make_batch(phase), cancel_at=START + 1)
        assert isinstance(transition, Answer) and error_code(transition) == "cancelled"
    stopping = make_batch(Phase.STOPPING)
    harness.backend.reply_next("get_run", run("cancelled"))
    assert isinstance(harness.service._first_transition(Step(1), stopping, cancel_at=START + 1), Finish)


def test_a_kept_submission_is_submitted_without_running_the_tools(harness: Harness) -> None:
    batch = make_batch(Phase.RUNNING)
    key = tool_round.tools_key("run_1", [CALL])
    harness.store.tool_claims.keep_outputs(CID, key, [{"tool_call_id": "call_1", "output": "3"}], 60)
    harness.backend.reply_next("get_run", run("requires_action", tool_calls=[CALL]))
    harness.backend.reply_next("submit_tool_outputs", Submitted("run_1"))
    transition = harness.service._handle(Step(1), batch)
    assert isinstance(transition, Wait) and transition.batch.phase_started_at == START
    assert harness.store.tool_claims.kept_outputs(CID, key) is None
