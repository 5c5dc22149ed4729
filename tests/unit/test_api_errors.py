"""Permanent API errors, each with its outcome: how an HTTP answer is classified
(api.translate), and what the conversation does with each kind on real Redis with the fake
backend: the event's fault is rejected with the API's code, a lost thread is forgotten and
the batch starts again on a new one, a missing route and a refused field are final at once."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fake_backend import FakeBackend
from tests.unit.harness import FakeClock, Harness
from worker import keys
from worker.backends.api import translate
from worker.batch import Phase
from worker.errors import (
    InvalidRequestError,
    PermanentApiError,
    RequestRefusedError,
    RouteNotFoundError,
    ThreadBusyError,
    ThreadNotFoundError,
    TransientApiError,
)

CID = "conv-e"


def error(message: str, *, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error body."""
    return {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}


TOO_LONG = ("Invalid 'additional_messages[0].content': string too long. Expected a string with maximum length "
            "256000, but got a string with length 256001 instead.")
CASES: list[tuple[str, int, Any, type, str | None]] = [
    # name, status, body, the error's class, its code (None: not checked)
    ("content too long", 400, error(TOO_LONG, code="string_above_max_length", param="additional_messages[0].content"),
     InvalidRequestError, "string_above_max_length"),
    ("a bad attachment, no code", 400, error("Invalid 'attachments[0].file_id'.", param="attachments[0].file_id"),
     InvalidRequestError, "invalid_request"),
    ("unprocessable", 422, error("Your input exceeds the context window.", code="context_length_exceeded"),
     InvalidRequestError, "context_length_exceeded"),
    ("a busy thread", 400, error("Thread thread_1 already has an active run run_1."), ThreadBusyError, None),
    ("a locked conversation", 400, error("Another response is in progress.", code="conversation_locked",
                                         param="conversation"), ThreadBusyError, None),
    ("a busy thread, loose", 409, error("Can't add messages to t while a run r is active."), ThreadBusyError, None),
    ("our tool definitions", 400, error("Invalid 'tools[0].name'.", code="invalid_value", param="tools[0].name"),
     RequestRefusedError, "invalid_value"),
    ("a field the server does not take", 400, error("Unrecognized request argument supplied: x"),
     RequestRefusedError, "invalid_request"),
    ("the thread's metadata", 400, error("Invalid 'thread.metadata'.", param="thread.metadata"),
     RequestRefusedError, "invalid_request"),
    ("an unknown assistant, 400", 400, error("No assistant found with id 'asst_x'.", param="assistant_id"),
     InvalidRequestError, "invalid_event"),
    ("an unknown assistant, 404", 404, error("No assistant found with id 'asst_x'."),
     InvalidRequestError, "invalid_event"),
    ("a lost thread", 404, error("No thread found with id 'thread_1'.", param="thread_id"),
     ThreadNotFoundError, "thread_not_found"),
    ("a lost conversation", 404, error("No conversation found with id 'conv_1'.", param="conversation"),
     ThreadNotFoundError, "thread_not_found"),
    ("a lost conversation, another wording", 404, error("Conversation not found.", code="not_found"),
     ThreadNotFoundError, "thread_not_found"),
    ("an item of a conversation", 404, error("Item with id 'msg_1' not found in conversation 'conv_1'."),
     PermanentApiError, "not_found"),
    ("an unknown run", 404, error("No run found with id 'run_1'."), PermanentApiError, "not_found"),
    ("an unknown model", 404, error("The model `x` does not exist.", code="model_not_found"),
     PermanentApiError, "model_not_found"),
    ("an unknown route", 404, error("Invalid URL (POST /v1/threads/runs)"), RouteNotFoundError, "route_not_found"),
    ("a 404 that is not the API's", 404, "<html>Not Found</html>", RouteNotFoundError, "route_not_found"),
    ("a framework's 404", 404, {"detail": "Not Found"}, RouteNotFoundError, "route_not_found"),
    ("a method not allowed", 405, error("Method Not Allowed"), RouteNotFoundError, "route_not_found"),
    ("the key refused", 401, error("Incorrect API key provided", code="invalid_api_key"),
     PermanentApiError, "invalid_api_key"),
    ("a server error", 500, error("boom"), TransientApiError, None),
]


@pytest.mark.parametrize(("status", "body", "kind", "code"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_an_http_error_is_classified_by_whose_fault_it_is(status: int, body: Any, kind: type,
                                                          code: str | None) -> None:
    exc = translate(status, body, {}, is_post=True)
    assert type(exc) is kind, exc
    if code is not None:
        assert isinstance(exc, PermanentApiError) and exc.code == code and exc.status == status
    final = kind in (RouteNotFoundError, RequestRefusedError) or status == 401
    assert isinstance(exc, TransientApiError) or exc.final == final  # type: ignore[attr-defined]  # Permanent here


def test_the_sdk_s_unwrapped_error_body_is_the_api_s_too() -> None:
    """The SDK keeps only the object inside `error`: still the API's answer, not a route's."""
    inner = error("No thread found with id 'thread_1'.")["error"]
    assert isinstance(translate(404, inner, {}, is_post=True), ThreadNotFoundError)
    assert isinstance(translate(404, {"detail": "Not Found"}, {}, is_post=True), RouteNotFoundError)


@pytest.mark.parametrize(("param", "index"), [("additional_messages[2].content", 2), ("thread.messages[0].content", 0),
                                               ("input[3].content", 3), ("instructions", None), (None, None)])
def test_a_refusal_names_the_message_the_api_named(param: str | None, index: int | None) -> None:
    exc = translate(400, error("string too long", code="string_above_max_length", param=param), {}, is_post=True)
    assert isinstance(exc, InvalidRequestError) and exc.event_index == index


def test_a_lost_thread_names_the_thread_the_api_named() -> None:
    named = translate(404, error("No thread found with id 'thread_1'."), {}, is_post=False)
    unnamed = translate(404, error("Conversation not found."), {}, is_post=False)
    assert isinstance(named, ThreadNotFoundError) and named.thread_id == "thread_1"
    assert isinstance(unnamed, ThreadNotFoundError) and unnamed.thread_id is None


# --- the outcomes, on the service ----------------------------------------------------------
def dead_letters(harness: Harness) -> list[dict[bytes, bytes]]:
    return [fields for _, fields in harness.redis.xrange(keys.DEAD_LETTERS)]


def test_a_message_the_api_finds_too_long_is_rejected_with_its_code(make_harness: Any, clock: FakeClock) -> None:
    harness: Harness = make_harness(FakeBackend(clock, max_content_chars=20))
    long = harness.send(CID, "x" * 21)
    harness.run_until_idle()
    short = harness.send(CID, "fits")
    harness.run_until_idle()
    rejected, answered = harness.entries()
    assert rejected["type"] == "event.rejected" and rejected["event_ids"] == [long]
    assert rejected["error"]["code"] == "string_above_max_length"
    assert "string too long" in rejected["error"]["message"]
    (letter,) = dead_letters(harness)
    assert b"string_above_max_length" in letter[b"reason"] and long.encode() in letter[b"raw"]
    assert answered["type"] == "run.completed" and answered["event_ids"] == [short]
    assert harness.backend.calls.count("start_run") == 2, "rejected at once, not retried"


def test_only_the_refused_event_of_a_batch_is_rejected(make_harness: Any, clock: FakeClock) -> None:
    harness: Harness = make_harness(FakeBackend(clock, max_content_chars=20))
    ids = [harness.send(CID, text, metadata={"n": str(n)}) for n, text in enumerate(("one", "y" * 21, "three"))]
    harness.run_until_idle()
    rejected, answered = harness.entries()
    assert rejected["type"] == "event.rejected" and rejected["event_ids"] == [ids[1]]
    assert rejected["error"]["code"] == "string_above_max_length" and rejected["metadata"] == {"n": "1"}
    assert answered["type"] == "run.completed" and answered["event_ids"] == [ids[0], ids[2]]
    assert harness.backend.user_texts(answered["thread_id"]) == ["one", "three"]
    (letter,) = dead_letters(harness)
    assert ids[1].encode() in letter[b"raw"] and ids[0].encode() not in letter[b"raw"]


def test_a_thread_lost_between_batches_is_replaced(make_harness: Any, capsys: pytest.CaptureFixture[str]) -> None:
    harness: Harness = make_harness(log_level="WARNING")
    harness.send(CID, "hello")
    harness.run_until_idle()
    old = harness.store.batches.thread_id(CID)
    assert old is not None
    harness.backend.lose_thread(old)
    again = harness.send(CID, "still there?")
    harness.run_until_idle()
    first, second = harness.entries()
    new = harness.store.batches.thread_id(CID)
    assert first["thread_id"] == old
    assert second["type"] == "run.completed" and second["event_ids"] == [again]
    assert second["thread_id"] == new != old
    assert harness.backend.user_texts(new or "") == ["still there?"]
    assert "thread lost on the server" in capsys.readouterr().err
    assert dead_letters(harness) == []


def test_a_thread_lost_while_its_run_works_starts_again_on_a_new_thread(harness: Harness) -> None:
    event_id = harness.send(CID, "sleep:5 take your time")
    harness.service.advance(CID)
    batch = harness.batch(CID)
    assert batch is not None and batch.phase is Phase.RUNNING and batch.thread_id
    harness.backend.lose_thread(batch.thread_id)
    harness.run_until_idle()
    (entry,) = harness.entries()
    assert entry["type"] == "run.completed" and entry["event_ids"] == [event_id]
    assert entry["thread_id"] != batch.thread_id
    assert harness.backend.user_texts(entry["thread_id"]) == ["sleep:5 take your time"]
    assert harness.store.batches.thread_id(CID) == entry["thread_id"]


def test_a_thread_lost_again_under_the_same_batch_is_final(harness: Harness) -> None:
    event_id = harness.send(CID, "sleep:5 again")
    harness.service.advance(CID)
    for _ in range(2):  # the first thread, then the one the batch started on instead
        batch = harness.batch(CID)
        assert batch is not None and batch.thread_id
        harness.backend.lose_thread(batch.thread_id)
        harness.clock.advance(1)
        harness.service.advance(CID)
    (entry,) = harness.entries()
    assert entry["type"] == "run.failed" and entry["event_ids"] == [event_id]
    assert entry["error"]["code"] == "thread_not_found"
    (letter,) = dead_letters(harness)
    assert b"lost the conversation's thread again" in letter[b"reason"]
    assert harness.batch(CID) is None and harness.store.batches.thread_id(CID) is None


def test_a_thread_lost_while_the_run_is_stopped_releases_the_batch(harness: Harness) -> None:
    harness.send(CID, "sleep:30 long")
    harness.service.advance(CID)
    harness.store.inbox.request_cancel(CID)
    harness.service.advance(CID)  # answered run.cancelled, asked the API to stop the run
    batch = harness.batch(CID)
    assert batch is not None and batch.phase is Phase.STOPPING and batch.thread_id
    harness.backend.lose_thread(batch.thread_id)
    harness.run_until_idle()
    assert [e["type"] for e in harness.entries()] == ["run.cancelled"]
    assert harness.batch(CID) is None and harness.store.batches.thread_id(CID) is None
    assert harness.store.batches.last_run_id(CID) is None
    later = harness.send(CID, "hello again")
    harness.run_until_idle()
    assert harness.entries()[-1]["event_ids"] == [later] and harness.entries()[-1]["type"] == "run.completed"


def test_a_missing_route_is_final_at_once(harness: Harness) -> None:
    harness.backend.fail_next("start_run", RouteNotFoundError("Invalid URL (POST /v1/threads/runs)"))
    event_id = harness.send(CID, "hello")
    harness.run_until_idle()
    (entry,) = harness.entries()
    assert entry["type"] == "run.failed" and entry["event_ids"] == [event_id]
    assert entry["error"]["code"] == "route_not_found" and "Invalid URL" in entry["error"]["message"]
    assert harness.backend.calls == ["start_run"], "no retries"
    (letter,) = dead_letters(harness)
    assert b"route_not_found" in letter[b"reason"]
