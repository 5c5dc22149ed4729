"""The conversation service end to end in one process: real Redis, the fake backend, a
clock the test moves. Each test walks a path of the state machine and checks what the
chat app sees (outbound entries) and what the API saw (the fake's threads and calls)."""

from __future__ import annotations

from collections.abc import Callable

from tests.fake_backend import FakeBackend
from tests.unit.harness import FakeClock, Harness
from worker.backends.base import Capabilities
from worker.batch import Phase
from worker.errors import PermanentApiError, TransientApiError

LOST = TransientApiError("answer lost (injected)", status=500, maybe_applied=True)


def test_a_message_is_answered_once_and_the_conversation_retires(harness: Harness) -> None:
    event = harness.send("c1", "hello")
    harness.run_until_idle()
    (entry,) = harness.entries()
    assert entry["type"] == "run.completed" and entry["event_ids"] == [event]
    assert entry["messages"][0]["text"] == "You said: hello"
    assert harness.batch("c1") is None and not harness.lease_held("c1")
    assert harness.backend.calls.count("start_run") == 1


def test_events_waiting_behind_a_batch_open_the_next_in_the_same_step(harness: Harness) -> None:
    harness.send("c1", "first")
    harness.service.advance("c1")  # opens, creates the run
    second = harness.send("c1", "second")
    harness.clock.advance(5)
    harness.service.advance("c1")  # the first run ended: published, and the next batch opens
    batch = harness.batch("c1")
    assert batch is not None and batch.event_ids == [second] and batch.phase is Phase.RUNNING
    harness.run_until_idle()
    assert [e["messages"][0]["text"] for e in harness.entries()] == ["You said: first", "You said: second"]


def test_a_tool_round_runs_once_and_its_outputs_reach_the_run(harness: Harness) -> None:
    harness.send("c1", 'call:add{"a": 1, "b": 2}')
    harness.service.advance("c1")
    harness.clock.advance(5)
    harness.service.advance("c1")  # requires_action: dispatched
    assert len(harness.dispatched) == 1
    duplicate = harness.dispatched[0]
    harness.run_tools()
    harness.service.run_tools(*duplicate)  # a duplicated delivery runs nothing
    assert harness.backend.calls.count("submit_tool_outputs") == 1
    harness.run_until_idle()
    (entry,) = harness.entries()
    assert entry["type"] == "run.completed" and entry["messages"][0]["text"].startswith("Tool results: add")


def test_a_lost_create_answer_is_adopted_not_repeated(make_harness: Callable[..., Harness], clock: FakeClock) -> None:
    backend = FakeBackend(clock)
    harness = make_harness(backend)
    harness.send("c1", "hello")
    harness.service.advance("c1")  # thread and run in one call: thread unknown, so a new thread
    harness.send("c1", "again")
    harness.run_until_idle()
    thread = harness.entries()[0]["thread_id"]
    backend.fail_next("start_run", LOST, applied=True)
    harness.run_until_idle()
    assert [e["type"] for e in harness.entries()] == ["run.completed"] * 2
    assert backend.user_texts(thread) == ["hello", "again"]


def test_a_lost_first_create_gets_a_new_thread_and_answers_from_it(make_harness: Callable[..., Harness],
                                                                  clock: FakeClock) -> None:
    backend = FakeBackend(clock)
    harness = make_harness(backend)
    backend.fail_next("start_run", LOST, applied=True)
    harness.send("c1", "my first words")
    harness.run_until_idle()
    (entry,) = harness.entries()
    assert entry["type"] == "run.completed"
    assert backend.user_texts(entry["thread_id"]) == ["my first words"]
    assert len(backend.threads) == 2  # the lost one is never used again


def test_the_api_failing_past_its_budget_answers_run_failed(harness: Harness) -> None:
    harness.backend.fail_next("start_run", TransientApiError("503", status=503), times=10)
    event = harness.send("c1", "hello")
    harness.run_until_idle()
    (entry,) = harness.entries()
    assert entry["type"] == "run.failed" and entry["event_ids"] == [event]
    assert entry["error"]["code"] == "api_error" and "4 times" in entry["error"]["message"]


def test_an_unknown_assistant_is_rejected_and_dead_lettered(harness: Harness) -> None:
    harness.send("c1", "hello", assistant_id="asst_nobody")
    harness.run_until_idle()
    (entry,) = harness.entries()
    assert entry["type"] == "event.rejected" and entry["error"]["code"] == "invalid_event"
    assert harness.redis.xlen("aw:deadletter") == 1


def test_a_cancel_answers_at_once_and_the_run_is_stopped(harness: Harness) -> None:
    harness.send("c1", "sleep:60")
    harness.service.advance("c1")
    harness.store.inbox.request_cancel("c1")
    harness.service.advance("c1")
    (entry,) = harness.entries()
    assert entry["type"] == "run.cancelled" and entry["error"]["code"] == "cancelled"
    batch = harness.batch("c1")
    assert batch is not None and batch.phase is Phase.STOPPING and batch.published
    assert harness.backend.calls.count("cancel_run") == 1
    harness.run_until_idle()
    assert harness.batch("c1") is None and len(harness.entries()) == 1


def test_a_run_past_its_timeout_is_answered_timeout(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(run_timeout_seconds=10.0)
    harness.send("c1", "sleep:60")
    harness.run_until_idle()
    (entry,) = harness.entries()
    assert entry["type"] == "run.cancelled" and entry["error"]["code"] == "timeout"


def test_a_retryable_run_failure_starts_the_run_again_without_the_messages(harness: Harness) -> None:
    harness.send("c1", "fail:server_error")
    harness.run_until_idle()
    entries = harness.entries()
    assert len(entries) == 1 and entries[0]["type"] == "run.failed"
    thread = entries[0]["thread_id"]
    assert harness.backend.user_texts(thread) == ["fail:server_error"]  # appended once
    assert len(harness.backend.threads[thread].runs) == 1 + harness.settings.run_retry_limit


def test_a_step_that_keeps_crashing_answers_internal_error(harness: Harness) -> None:
    harness.backend.fail_next("get_run", RuntimeError("a strange answer"), times=10)
    harness.send("c1", "hello")
    harness.run_until_idle()
    (entry,) = harness.entries()
    assert entry["type"] == "run.failed" and entry["error"]["code"] == "internal_error"
    assert harness.batch("c1") is None and not harness.lease_held("c1")


def test_a_foreign_run_on_the_thread_is_waited_for_then_cancelled(harness: Harness) -> None:
    harness.send("c1", "hello")
    harness.run_until_idle()
    thread = harness.entries()[0]["thread_id"]
    foreign = harness.backend.add_foreign_run(thread)
    harness.send("c1", "mine")
    harness.run_until_idle()
    assert harness.backend.runs[foreign].status == "cancelled"
    assert harness.entries()[-1]["messages"][0]["text"].endswith("\nmine")  # our run answered it


def test_a_server_without_thread_and_run_records_the_thread_first(make_harness: Callable[..., Harness],
                                                                  clock: FakeClock) -> None:
    caps = Capabilities(needs_assistant=False, thread_with_first_run=False, messages_with_run=True,
                        lists_runs=True, tool_round_starts_run=False)
    harness = make_harness(FakeBackend(clock, capabilities=caps))
    harness.send("c1", "hello")
    harness.service.advance("c1")
    batch = harness.batch("c1")
    assert batch is not None and batch.thread_id is not None and batch.phase is Phase.RUNNING
    assert harness.redis.hget("aw:conv:c1", "thread_id") == batch.thread_id.encode()


def test_a_failed_tool_submission_is_submitted_again_without_running_the_tools(harness: Harness) -> None:
    harness.send("c1", 'call:add{"a": 2, "b": 2}')
    harness.service.advance("c1")
    harness.clock.advance(5)
    harness.service.advance("c1")
    harness.backend.fail_next("submit_tool_outputs", PermanentApiError("refused", code="server_error"))
    harness.run_tools()
    harness.run_until_idle()
    assert harness.backend.calls.count("submit_tool_outputs") == 2
    (entry,) = harness.entries()
    assert entry["type"] == "run.completed"


def test_a_refused_key_is_final_at_once_with_the_api_s_code_and_a_dead_letter(harness: Harness) -> None:
    refused = PermanentApiError("Incorrect API key provided: sk-ab****", code="invalid_api_key", status=401)
    harness.backend.fail_next("start_run", refused, times=10)
    event = harness.send("c1", "hello")
    harness.run_until_idle()
    (entry,) = harness.entries()
    assert entry["type"] == "run.failed" and entry["event_ids"] == [event]
    assert entry["error"]["code"] == "invalid_api_key" and "OPENAI_API_KEY" in entry["error"]["message"]
    assert harness.backend.calls.count("start_run") == 1, "not retried: no retry of the same key can pass"
    ((_, letter),) = harness.redis.xrange("aw:deadletter")
    assert b"invalid_api_key" in letter[b"reason"] and event.encode() in letter[b"raw"]
