"""End to end, each permanent API error an emulator can produce, with its outcome: a real
Dramatiq worker, the real SDK over HTTP, the emulator answering as OpenAI does."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from emulator import EmulatorConfig
from tests import threads
from tests.emulator_fixtures import openai_client
from tests.stack import BACKENDS, Stack, running_stack
from worker import keys

MAX_CONTENT_CHARS = 200  # the emulator plays a server with a lower limit than the producer's

pytestmark = pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")


@pytest.fixture(params=BACKENDS)
def stack(request: pytest.FixtureRequest, redis_url: str) -> Iterator[Stack]:
    config = EmulatorConfig(run_seconds=0.2, max_content_chars=MAX_CONTENT_CHARS)
    with running_stack(redis_url, config, assistant_backend=request.param, log_level="WARNING") as s:
        yield s


def lose(stack: Stack, thread_id: str) -> None:
    """Someone deletes the conversation's thread (conversation) on the server."""
    client = openai_client(stack.emulator)
    try:
        if stack.backend == "assistants":
            client.beta.threads.delete(thread_id)
        else:
            client.conversations.delete(thread_id)
    finally:
        client.close()


def test_a_message_the_api_finds_too_long_is_rejected_with_its_code(stack: Stack) -> None:
    first = stack.send("long-1", "hello")
    stack.wait_answered([first])
    long = stack.send("long-1", "x" * (MAX_CONTENT_CHARS + 1))
    after = stack.send("long-1", "still here")
    rejected, answered = stack.wait_answered([long, after])
    assert rejected["type"] == "event.rejected" and rejected["event_ids"] == [long]
    assert rejected["error"]["code"] == "string_above_max_length"
    assert "string too long" in rejected["error"]["message"]
    letters = stack.redis.xrange(keys.DEAD_LETTERS)
    assert [long.encode() in fields[b"raw"] for _, fields in letters] == [True]
    assert b"string_above_max_length" in letters[0][1][b"reason"]
    assert answered["type"] == "run.completed" and answered["event_ids"] == [after]
    assert threads.user_texts(stack.emulator.base_url, stack.backend, answered["thread_id"]) == \
        ["hello", "still here"]


def test_a_thread_deleted_on_the_server_is_replaced_by_a_new_one(stack: Stack,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    (first,) = stack.wait_answered([stack.send("lost-1", "hello")])
    lose(stack, first["thread_id"])
    again = stack.send("lost-1", "are you there?")
    (second,) = stack.wait_answered([again])
    assert second["type"] == "run.completed" and second["event_ids"] == [again]
    assert second["thread_id"] and second["thread_id"] != first["thread_id"]
    assert threads.user_texts(stack.emulator.base_url, stack.backend, second["thread_id"]) == ["are you there?"]
    assert stack.runtime.store.batches.thread_id("lost-1") == second["thread_id"]
    warned = [r for r in caplog.records if r.levelname == "WARNING" and "thread lost on the server" in str(r.msg)]
    assert len(warned) == 1 and first["thread_id"] in str(warned[0].msg)
    assert stack.redis.xlen(keys.DEAD_LETTERS) == 0
    stack.wait_idle()
    assert len(stack.answered()[again]) == 1


def test_a_thread_deleted_while_its_run_works(stack: Stack) -> None:
    """Assistants: the run goes with the thread, so the batch starts again on a new thread.
    Responses: the response outlives its conversation and its answer is published; the
    next message starts a new conversation."""
    event_id = stack.send("lost-2", "sleep:1 think about it")
    stack.wait_until_run_started("lost-2")
    batch = stack.runtime.store.batches.load("lost-2")
    assert batch is not None and batch.thread_id
    lose(stack, batch.thread_id)
    (entry,) = stack.wait_answered([event_id])
    assert entry["type"] == "run.completed" and "think about it" in entry["messages"][0]["text"]
    if stack.backend == "assistants":
        assert entry["thread_id"] != batch.thread_id
        assert threads.user_texts(stack.emulator.base_url, "assistants", entry["thread_id"]) == \
            ["sleep:1 think about it"]
    else:
        assert entry["thread_id"] == batch.thread_id
        with openai_client(stack.emulator) as client, pytest.raises(openai.NotFoundError):
            client.conversations.retrieve(batch.thread_id)
        (later,) = stack.wait_answered([stack.send("lost-2", "and now?")])
        assert later["type"] == "run.completed" and later["thread_id"] != batch.thread_id
