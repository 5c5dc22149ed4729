"""A server that takes one user message per request (Capabilities.messages_with_run false):
the batch's messages are appended one at a time, each recorded, then the run is created;
nothing is appended twice whatever fails in between."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.fake_backend import FakeBackend
from tests.unit.harness import FakeClock, Harness
from worker.backends.base import Capabilities
from worker.errors import TransientApiError

CID = "single-1"
ONE_AT_A_TIME = Capabilities(needs_assistant=True, thread_with_first_run=True, messages_with_run=False,
                             lists_runs=True, tool_round_starts_run=False)


@pytest.fixture
def single(make_harness: Callable[..., Harness], clock: FakeClock) -> Harness:
    harness = make_harness(FakeBackend(clock, capabilities=ONE_AT_A_TIME))
    harness.send(CID, "hello")  # the first batch makes the thread
    harness.run_until_idle()
    return harness


def send_three(harness: Harness) -> list[str]:
    return [harness.send(CID, text, event_id=f"e-{text}") for text in ("one", "two", "three")]


def thread_of(harness: Harness) -> str:
    return str(harness.entries()[0]["thread_id"])


def test_each_message_goes_alone_then_one_run_answers_them_all(single: Harness) -> None:
    ids = send_three(single)
    single.run_until_idle()
    assert single.backend.user_texts(thread_of(single)) == ["hello", "one", "two", "three"]
    entry = single.entries()[-1]
    assert entry["type"] == "run.completed" and entry["event_ids"] == ids
    assert single.backend.calls.count("start_run") >= 3  # two appends, then the run


def test_progress_is_recorded_after_each_message(single: Harness) -> None:
    send_three(single)
    single.backend.fail_next("start_run", TransientApiError("down", maybe_applied=False), times=1)
    single.service.advance(CID)  # opens the batch; the first append fails before it is sent
    batch = single.batch(CID)
    assert batch is not None and batch.appended_events == 0 and batch.api_failures == 1
    single.clock.advance(30)
    single.service.advance(CID)
    batch = single.batch(CID)
    assert batch is not None and batch.messages_appended and batch.appended_events == 2


def test_an_append_whose_answer_was_lost_is_found_by_its_tag(single: Harness) -> None:
    send_three(single)
    # The first message's append goes through, but its answer never comes back.
    single.backend.fail_next("start_run", TransientApiError("lost", maybe_applied=True), applied=True)
    single.run_until_idle()
    assert single.backend.user_texts(thread_of(single)) == ["hello", "one", "two", "three"]
    assert single.entries()[-1]["type"] == "run.completed"


def test_a_worker_that_died_after_an_append_does_not_append_it_again(single: Harness) -> None:
    send_three(single)
    single.backend.fail_next("start_run", RuntimeError("worker died"), applied=True)
    single.service.advance(CID)  # the append went through; the step ends without recording it
    batch = single.batch(CID)
    assert batch is not None and batch.appended_events == 0
    single.run_until_idle()
    assert single.backend.user_texts(thread_of(single)) == ["hello", "one", "two", "three"]
    assert single.entries()[-1]["type"] == "run.completed"


def test_a_new_conversation_gets_its_thread_then_its_messages_one_at_a_time(
        make_harness: Callable[..., Harness], clock: FakeClock) -> None:
    harness = make_harness(FakeBackend(clock, capabilities=ONE_AT_A_TIME))
    ids = send_three(harness)
    harness.run_until_idle()
    (entry,) = harness.entries()
    assert entry["type"] == "run.completed" and entry["event_ids"] == ids
    assert harness.backend.user_texts(str(entry["thread_id"])) == ["one", "two", "three"]
