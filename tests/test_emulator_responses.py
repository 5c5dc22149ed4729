"""The emulator's Responses API (background mode) and Conversations API, driven by the real `openai` SDK.

Covers conversations and their items, the time-driven response lifecycle, the tool-call round trip
(a completed response of function calls, then a new response with the outputs), the conversation
lock, cancel, failed / incomplete outcomes, faults, the loose flavour and the strict flavour's
schema (every 200 body validated against the OpenAPI spec). Tests that must catch a response in a
given state use a manual clock, the others wait on conditions with deadlines.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest

from emulator import EmulatorConfig, EmulatorServer
from tests.emulator_fixtures import admin, emulator, make_emulator, openai_client, wait_until  # noqa: F401 - pytest fixtures
from tests.test_emulator_schema import SpecSchemas, raw, schemas  # noqa: F401 - `schemas` is a fixture

MakeEmulator = Callable[..., EmulatorServer]
FINAL = {"completed", "failed", "cancelled", "incomplete"}
WEATHER_TOOL = {"type": "function", "name": "get_weather", "description": "The weather in a city.",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}, "strict": False}
WEATHER_CALL = 'What is the weather? call:get_weather{"city": "Paris"}'


class ManualClock:
    """A clock that moves only when told, so a test can catch a response queued or in_progress."""

    def __init__(self, start: float = 1_750_000_000.0) -> None:
        self.now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


@pytest.fixture
def clocked() -> Iterator[Callable[..., tuple[EmulatorServer, ManualClock]]]:
    """A factory of emulators on a manual clock (runs take 1 s of that clock unless configured)."""
    servers: list[EmulatorServer] = []

    def make(**config: Any) -> tuple[EmulatorServer, ManualClock]:
        clock = ManualClock()
        srv = EmulatorServer(EmulatorConfig().replace(**config), clock=clock).start()
        servers.append(srv)
        return srv, clock

    yield make
    for srv in servers:
        srv.stop()


@pytest.fixture
def connect() -> Iterator[Callable[..., openai.OpenAI]]:
    """A factory of SDK clients, closed at the end of the test (no socket left for the GC to warn about)."""
    clients: list[openai.OpenAI] = []

    def make(srv: EmulatorServer, **kwargs: Any) -> openai.OpenAI:
        clients.append(openai_client(srv, **kwargs))
        return clients[-1]

    yield make
    for sdk in clients:
        sdk.close()


@pytest.fixture
def client(emulator: EmulatorServer, connect: Callable[..., openai.OpenAI]) -> openai.OpenAI:  # noqa: F811 - the imported fixture
    return connect(emulator)


def start(client: openai.OpenAI, conversation: str | dict[str, str] | None, text: Any, **kwargs: Any) -> Any:
    """A background response in `conversation` (an id or {"id"}) with `text` (a string or input items) as input."""
    kwargs.setdefault("model", "gpt-4o")
    if conversation is not None:
        kwargs["conversation"] = conversation
    return client.responses.create(input=text, background=True, **kwargs)


def wait_response(client: openai.OpenAI, response_id: str, statuses: set[str] = FINAL, timeout: float = 5.0) -> Any:
    def reached() -> Any:
        current = client.responses.retrieve(response_id)
        return current if current.status in statuses else None

    return wait_until(reached, timeout=timeout, what=f"{response_id} in {sorted(statuses)}")


def items(client: openai.OpenAI, conversation_id: str) -> list[Any]:
    """The conversation's items, oldest first (every page)."""
    return list(client.conversations.items.list(conversation_id, order="asc", limit=100))


def shape(item: Any) -> tuple[Any, ...]:
    """(type, role or name, text) of an item, for compact assertions."""
    if item.type == "message":
        texts = item.content if isinstance(item.content, str) else " ".join(part.text for part in item.content)
        return ("message", item.role, texts)
    if item.type == "function_call":
        return ("function_call", item.name, item.arguments)
    return ("function_call_output", item.call_id, item.output)


# -- conversations ------------------------------------------------------------------------------


def test_conversation_create_get_and_initial_items(client: openai.OpenAI) -> None:
    conversation = client.conversations.create(metadata={"user": "42"}, items=[
        {"role": "user", "content": "Hello"},
        {"type": "message", "role": "assistant", "content": "Hi! How can I help?"},
        {"role": "developer", "content": [{"type": "input_text", "text": "Be brief."}]},
    ])
    assert re.fullmatch(r"conv_[A-Za-z0-9]{24}", conversation.id)
    assert conversation.object == "conversation" and conversation.metadata == {"user": "42"}
    assert isinstance(conversation.created_at, int)
    assert client.conversations.retrieve(conversation.id).id == conversation.id
    listed = items(client, conversation.id)
    assert [shape(i) for i in listed] == [("message", "user", "Hello"),
                                          ("message", "assistant", "Hi! How can I help?"),
                                          ("message", "developer", "Be brief.")]
    assert [part.type for i in listed for part in i.content] == ["input_text", "output_text", "input_text"]
    assert all(i.status == "completed" and i.id.startswith("msg_") for i in listed)
    with pytest.raises(openai.NotFoundError):
        client.conversations.retrieve("conv_missing")
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.list("conv_missing")


def test_conversation_items_pagination(client: openai.OpenAI) -> None:
    conversation = client.conversations.create(items=[{"role": "user", "content": f"m{i}"} for i in range(5)])
    ids = [i.id for i in items(client, conversation.id)]
    page = client.conversations.items.list(conversation.id)  # default order: desc
    assert [i.id for i in page.data] == ids[::-1] and page.has_more is False
    page = client.conversations.items.list(conversation.id, order="asc", limit=2)
    assert [i.id for i in page.data] == ids[:2] and page.has_more and page.first_id == ids[0] and page.last_id == ids[1]
    page = client.conversations.items.list(conversation.id, order="asc", limit=2, after=ids[1])
    assert [i.id for i in page.data] == ids[2:4] and page.has_more
    page = client.conversations.items.list(conversation.id, limit=2, after=ids[3])
    assert [i.id for i in page.data] == [ids[2], ids[1]]
    assert [i.id for i in client.conversations.items.list(conversation.id, order="asc", limit=2)] == ids  # auto-paging
    with pytest.raises(openai.BadRequestError):
        client.conversations.items.list(conversation.id, limit=101)


def test_conversation_items_create_and_get(client: openai.OpenAI) -> None:
    conversation = client.conversations.create()
    added = client.conversations.items.create(conversation.id, items=[{"role": "user", "content": "added"}])
    assert [shape(i) for i in added.data] == [("message", "user", "added")]
    fetched = client.conversations.items.retrieve(added.data[0].id, conversation_id=conversation.id)
    assert fetched.id == added.data[0].id
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.retrieve("msg_missing", conversation_id=conversation.id)


def test_conversation_item_delete(client: openai.OpenAI) -> None:
    """Deleting keeps the order and the pagination of what is left; a call whose output is
    deleted needs an output again."""
    conversation = client.conversations.create(items=[{"role": "user", "content": f"m{i}"} for i in range(4)])
    ids = [i.id for i in items(client, conversation.id)]
    assert client.conversations.items.delete(ids[1], conversation_id=conversation.id).id == conversation.id
    assert [i.id for i in items(client, conversation.id)] == [ids[0], *ids[2:]]
    page = client.conversations.items.list(conversation.id, order="asc", limit=1, after=ids[2])
    assert [i.id for i in page.data] == [ids[3]]
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.delete(ids[1], conversation_id=conversation.id)

    calls = wait_response(client, start(client, conversation.id, "call:get_time", tools=[WEATHER_TOOL]).id).output
    answer = [{"type": "function_call_output", "call_id": calls[0].call_id, "output": "noon"}]
    wait_response(client, start(client, conversation.id, answer, tools=[WEATHER_TOOL]).id)
    output = next(i for i in items(client, conversation.id) if i.type == "function_call_output")
    client.conversations.items.delete(output.id, conversation_id=conversation.id)
    with pytest.raises(openai.BadRequestError) as unanswered:
        start(client, conversation.id, "next")
    assert unanswered.value.body["message"] == f"No tool output found for function call {calls[0].call_id}."


# -- the response lifecycle ---------------------------------------------------------------------


def test_background_response_lifecycle(emulator: EmulatorServer, client: openai.OpenAI) -> None:  # noqa: F811 - the imported fixture
    conversation = client.conversations.create()
    created = start(client, conversation.id, "sleep:0.6 I need to solve the equation 3x + 11 = 14.",
                    instructions="Be helpful.", metadata={"event_id": "e1"})
    assert created.status == "queued" and created.output == [] and created.background is True
    assert re.fullmatch(r"resp_[A-Za-z0-9]{24}", created.id)
    assert created.conversation is not None and created.conversation.id == conversation.id
    assert created.usage is None and created.completed_at is None and created.error is None
    assert created.instructions == "Be helpful." and created.metadata == {"event_id": "e1"}
    in_progress = wait_response(client, created.id, {"in_progress"})
    assert in_progress.output == []
    done = wait_response(client, created.id)
    assert done.status == "completed" and done.completed_at is not None and done.completed_at >= done.created_at
    assert done.output_text == "To solve 3x + 11 = 14, subtract 11 from both sides: 3x = 3. Then divide by 3: x = 1."
    [message] = done.output
    assert message.type == "message" and message.role == "assistant" and message.status == "completed"
    assert message.content[0].type == "output_text" and message.content[0].annotations == []
    assert done.usage is not None and done.usage.total_tokens == done.usage.input_tokens + done.usage.output_tokens > 0
    assert [shape(i) for i in items(client, conversation.id)] == [
        ("message", "user", "sleep:0.6 I need to solve the equation 3x + 11 = 14."),
        ("message", "assistant", done.output_text)]
    assert items(client, conversation.id)[1].id == message.id
    record = {r["id"]: r for r in emulator.runs()}[created.id]
    assert record["object"] == "response" and record["thread_id"] == conversation.id
    assert record["status"] == "completed" and record["history"] == [["completed", record["finished_at"]]]
    assert 0.55 <= record["finished_at"] - record["created_at"] <= 0.65
    assert record["started_at"] is not None and record["polls"] >= 2 and record["last_polled_at"] is not None
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_missing")


def test_response_without_conversation_and_synchronous_create(client: openai.OpenAI) -> None:
    background = wait_response(client, start(client, None, "hello alone").id)
    assert background.conversation is None and background.output_text == "You said: hello alone"
    began = time.monotonic()
    synchronous = client.responses.create(model="gpt-4o", input="sleep:0.3 wait for me")
    assert synchronous.status == "completed" and synchronous.background is False
    assert time.monotonic() - began >= 0.25
    with pytest.raises(openai.BadRequestError):  # only background responses can be cancelled
        client.responses.cancel(synchronous.id)


def test_items_are_added_when_the_response_completes(client: openai.OpenAI) -> None:
    """As OpenAI documents `conversation`: input and output items are added after the
    response completes; none while it runs, none when it is cancelled or fails."""
    conversation = client.conversations.create()
    response = start(client, conversation.id, [
        {"role": "user", "content": "sleep:0.3 first part"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "second part"}]},
    ])
    assert response.status == "queued"
    assert items(client, conversation.id) == []
    wait_response(client, response.id)
    assert [shape(i)[:2] for i in items(client, conversation.id)] == [
        ("message", "user"), ("message", "user"), ("message", "assistant")]
    cancelled = start(client, conversation.id, "sleep:5 never mind")
    client.responses.cancel(cancelled.id)
    failed = wait_response(client, start(client, conversation.id, "fail:server_error").id)
    assert failed.status == "failed"
    assert len(items(client, conversation.id)) == 3


def test_poll_hint_on_get_response(emulator: EmulatorServer, client: openai.OpenAI) -> None:  # noqa: F811 - the imported fixture
    response = start(client, None, "sleep:2 wait")
    headers = client.responses.with_raw_response.retrieve(response.id).headers
    assert 10 <= int(headers["openai-poll-after-ms"]) <= 1000
    emulator.configure(poll_hint_ms=300)
    assert client.responses.with_raw_response.retrieve(response.id).headers["openai-poll-after-ms"] == "300"
    emulator.configure(poll_hint=False)
    assert "openai-poll-after-ms" not in client.responses.with_raw_response.retrieve(response.id).headers
    emulator.configure(poll_hint=True, poll_hint_ms=None)
    done = wait_response(client, start(client, None, "quick").id)
    assert "openai-poll-after-ms" not in client.responses.with_raw_response.retrieve(done.id).headers


def test_instruction_prefix_and_twice(client: openai.OpenAI) -> None:
    done = wait_response(client, start(client, None, "say it twice", instructions="prefix:BOT be kind").id)
    assert [m.content[0].text for m in done.output] == [
        "BOT You said: say it twice", "And one more thing: you asked me to answer twice."]


# -- tools --------------------------------------------------------------------------------------


def test_tool_call_round_trip(client: openai.OpenAI) -> None:
    """Function calls complete the first response; a second response carries the outputs and replies."""
    conversation = client.conversations.create()
    first = start(client, conversation.id, 'call:get_weather{"city":"Oslo"} and call:get_time', tools=[WEATHER_TOOL])
    assert first.tools[0].type == "function" and first.tools[0].name == "get_weather"
    first = wait_response(client, first.id)
    assert first.status == "completed" and first.output_text == ""
    calls = first.output
    assert [(c.type, c.name, json.loads(c.arguments), c.status) for c in calls] == [
        ("function_call", "get_weather", {"city": "Oslo"}, "completed"), ("function_call", "get_time", {}, "completed")]
    assert all(re.fullmatch(r"call_[A-Za-z0-9]{24}", c.call_id) and c.id.startswith("fc_") for c in calls)
    assert [shape(i) for i in items(client, conversation.id)][1:] == [shape(c) for c in calls]

    with pytest.raises(openai.BadRequestError) as missing:  # every open call needs an output
        start(client, conversation.id, [{"type": "function_call_output", "call_id": calls[0].call_id, "output": "1"}])
    assert missing.value.body["message"] == f"No tool output found for function call {calls[1].call_id}."
    with pytest.raises(openai.BadRequestError) as unknown:
        start(client, conversation.id, [{"type": "function_call_output", "call_id": "call_nope", "output": "1"}])
    assert unknown.value.body["message"] == "No tool call found for function call output with call_id call_nope."
    with pytest.raises(openai.BadRequestError):  # a new user turn while calls are unanswered
        start(client, conversation.id, "never mind")
    assert len(items(client, conversation.id)) == 3  # the refused inputs added nothing

    outputs = [{"type": "function_call_output", "call_id": c.call_id, "output": f'"{c.name} ok"'} for c in calls]
    second = start(client, {"id": conversation.id}, outputs, tools=[WEATHER_TOOL])
    assert second.status == "queued"
    second = wait_response(client, second.id)
    assert second.output_text == 'Tool results: get_weather -> "get_weather ok"; get_time -> "get_time ok"'
    assert [shape(i) for i in items(client, conversation.id)] == [
        ("message", "user", 'call:get_weather{"city":"Oslo"} and call:get_time'),
        *[shape(c) for c in calls],
        ("function_call_output", calls[0].call_id, '"get_weather ok"'),
        ("function_call_output", calls[1].call_id, '"get_time ok"'),
        ("message", "assistant", second.output_text),
    ]
    assert all(i.id.startswith("fco_") for i in items(client, conversation.id) if i.type == "function_call_output")
    third = wait_response(client, start(client, conversation.id, "thanks").id)  # the conversation goes on
    assert third.output_text == "You said: thanks"


def test_after_tools_duration_and_previous_response_id(make_emulator: MakeEmulator,  # noqa: F811 - the imported fixture
                                                         connect: Callable[..., openai.OpenAI]) -> None:
    srv = make_emulator(after_tools_seconds=0.5)
    client = connect(srv)
    first = wait_response(client, start(client, None, "call:lookup").id)
    [call] = first.output
    second = client.responses.create(model="gpt-4o", background=True, previous_response_id=first.id,
                                     input=[{"type": "function_call_output", "call_id": call.call_id, "output": "42"}])
    assert second.previous_response_id == first.id
    assert wait_response(client, second.id).output_text == "Tool results: lookup -> 42"
    record = {r["id"]: r for r in srv.runs()}[second.id]
    assert 0.45 <= record["finished_at"] - record["created_at"] <= 0.55
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="gpt-4o", background=True, previous_response_id="resp_missing", input="x")


def test_tools_and_inputs_are_checked(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as assistants_shape:  # the Assistants API's tool shape
        start(client, None, "hi", tools=[{"type": "function", "function": {"name": "get_weather"}}])
    assert assistants_shape.value.body["param"] == "tools[0].name"
    with pytest.raises(openai.BadRequestError) as text_part:  # an Assistants content part
        start(client, None, [{"role": "user", "content": [{"type": "text", "text": "hi"}]}])
    assert text_part.value.body["param"] == "input[0].content[0]"
    with pytest.raises(openai.BadRequestError) as unknown_field:
        start(client, None, "hi", extra_body={"colour": "red"})
    assert "colour" in unknown_field.value.body["message"]
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="gpt-4o", input="hi", background=True, store=False)
    with pytest.raises(openai.NotFoundError):
        start(client, "conv_missing", "hi")


# -- the conversation lock ----------------------------------------------------------------------


def test_conversation_locked_while_a_response_works(clocked: Callable[..., tuple[EmulatorServer, ManualClock]],
                                                     connect: Callable[..., openai.OpenAI]) -> None:
    srv, clock = clocked(run_seconds=1.0)
    client = connect(srv)
    conversation = client.conversations.create()
    first = start(client, conversation.id, "busy")
    with pytest.raises(openai.BadRequestError) as locked:
        start(client, conversation.id, "me too")
    assert locked.value.status_code == 400
    assert locked.value.body == {
        "message": f"Another response is in progress for conversation {conversation.id}.",
        "type": "invalid_request_error", "param": "conversation", "code": "conversation_locked"}
    assert locked.value.code == "conversation_locked"
    clock.advance(0.5)
    assert client.responses.retrieve(first.id).status == "in_progress"
    with pytest.raises(openai.BadRequestError) as still_locked:
        client.conversations.items.create(conversation.id, items=[{"role": "user", "content": "sneak in"}])
    assert still_locked.value.code == "conversation_locked"
    assert items(client, conversation.id) == []  # nothing until the response completes
    clock.advance(0.5)  # due: the next request settles it, and the conversation is free
    second = start(client, conversation.id, "now it is free")
    assert client.responses.retrieve(first.id).status == "completed"
    clock.advance(1.0)
    assert client.responses.retrieve(second.id).output_text == "You said: now it is free"


# -- cancel -------------------------------------------------------------------------------------


def test_cancel_strict(clocked: Callable[..., tuple[EmulatorServer, ManualClock]],
                       connect: Callable[..., openai.OpenAI]) -> None:
    srv, clock = clocked(run_seconds=1.0)
    client = connect(srv)
    conversation = client.conversations.create()
    queued = start(client, conversation.id, "first")
    cancelled = client.responses.cancel(queued.id)
    assert cancelled.status == "cancelled" and cancelled.output == []
    assert client.responses.cancel(queued.id).status == "cancelled"  # idempotent
    working = start(client, conversation.id, "second")  # the lock went with the cancel
    clock.advance(0.5)
    assert client.responses.retrieve(working.id).status == "in_progress"
    assert client.responses.cancel(working.id).status == "cancelled"
    cancelled_at = clock()
    clock.advance(1.0)
    assert client.responses.retrieve(working.id).status == "cancelled"
    assert items(client, conversation.id) == []  # cancelled responses add nothing
    finished = start(client, conversation.id, "third")
    clock.advance(1.0)
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.cancel(finished.id)
    assert info.value.body["message"] == "Cannot cancel response with status 'completed'."
    statuses = {r["id"]: (r["status"], r["history"]) for r in srv.runs()}
    assert statuses[working.id] == ("cancelled", [["cancelled", cancelled_at]])


def test_cancel_loose_refuses_in_progress(clocked: Callable[..., tuple[EmulatorServer, ManualClock]],
                                          connect: Callable[..., openai.OpenAI]) -> None:
    srv, clock = clocked(run_seconds=1.0, flavour="loose")
    client = connect(srv)
    conversation = client.conversations.create()
    queued = start(client, conversation.id, "first")
    assert client.responses.cancel(queued.id).status == "cancelled"
    working = start(client, conversation.id, "second")
    clock.advance(0.5)
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.cancel(working.id)
    assert info.value.body["message"] == "Cannot cancel response with status 'in_progress'."
    clock.advance(1.0)
    assert client.responses.retrieve(working.id).status == "completed"


# -- outcomes -----------------------------------------------------------------------------------


def test_failed_and_incomplete_responses(client: openai.OpenAI) -> None:
    conversation = client.conversations.create()
    failed = wait_response(client, start(client, conversation.id, "fail:rate_limit_exceeded").id)
    assert failed.status == "failed" and failed.output == [] and failed.completed_at is None
    assert failed.error is not None and failed.error.code == "rate_limit_exceeded"
    odd = wait_response(client, start(client, conversation.id, "fail:quota_gone").id)
    assert odd.error is not None and odd.error.code == "server_error" and "quota_gone" in odd.error.message
    gone = wait_response(client, start(client, conversation.id, "expire:now").id)  # responses cannot expire
    assert gone.status == "failed" and gone.error is not None and gone.error.code == "server_error"
    cut = wait_response(client, start(client, conversation.id, "incomplete").id)
    assert cut.status == "incomplete" and cut.incomplete_details is not None
    assert cut.incomplete_details.reason == "max_output_tokens" and cut.usage is not None
    [partial] = cut.output
    assert partial.status == "incomplete" and partial.content[0].text == "You said: "  # half the reply
    listed = items(client, conversation.id)
    assert [i.role for i in listed] == ["user", "assistant"]  # failures add nothing, incomplete both
    assert listed[-1].id == partial.id and listed[-1].status == "incomplete"


def test_fail_rate_fails_responses(make_emulator: MakeEmulator,  # noqa: F811 - the imported fixture
                                   connect: Callable[..., openai.OpenAI]) -> None:
    srv = make_emulator(fail_rate=1.0)
    client = connect(srv)
    failed = wait_response(client, start(client, None, "hello").id)
    assert failed.status == "failed" and failed.error is not None and failed.error.code == "server_error"
    srv.configure(fail_rate=0.0, expire_rate=1.0)
    assert wait_response(client, start(client, None, "hello").id).status == "failed"


# -- faults -------------------------------------------------------------------------------------


def test_faults_apply_to_the_new_operations(emulator: EmulatorServer, client: openai.OpenAI) -> None:  # noqa: F811 - the imported fixture
    conversation = client.conversations.create()
    emulator.configure(fault_429=1.0, fault_operations=["createResponse"])
    with pytest.raises(openai.RateLimitError) as limited:
        start(client, conversation.id, "hi")
    assert limited.value.response.headers["retry-after-ms"] == "100"
    assert items(client, conversation.id) == []  # a 429 applies nothing; other operations are untouched
    emulator.configure(fault_429=0.0, fault_500=1.0, fault_operations="getResponse,listConversationItems")
    response = start(client, conversation.id, "hi")
    with pytest.raises(openai.InternalServerError):
        client.responses.retrieve(response.id)
    with pytest.raises(openai.InternalServerError):
        client.conversations.items.list(conversation.id)
    emulator.configure(fault_500=0.0)
    wait_response(client, response.id)
    stats = emulator.stats()
    assert stats["faults_injected"]["by_operation"] == {
        "createResponse": {"429": 1}, "getResponse": {"500": 1}, "listConversationItems": {"500": 1}}


def test_lost_create_applied_then_retry_is_locked(clocked: Callable[..., tuple[EmulatorServer, ManualClock]],
                                                  connect: Callable[..., openai.OpenAI]) -> None:
    """A lost createResponse still created the response: the conversation is locked, and shows
    nothing of it until it completes."""
    srv, clock = clocked(run_seconds=1.0)
    client = connect(srv)
    conversation = client.conversations.create()
    srv.configure(fault_lost=1.0, fault_operations=["createResponse"], fault_retry_after_ms=0)
    with pytest.raises(openai.InternalServerError):
        start(client, conversation.id, "once")
    assert items(client, conversation.id) == []
    srv.configure(fault_lost=0.0)
    with pytest.raises(openai.BadRequestError) as locked:  # what a retry of the create meets
        start(client, conversation.id, "once")
    assert locked.value.code == "conversation_locked"
    [record] = [r for r in srv.runs() if r["object"] == "response"]
    assert record["thread_id"] == conversation.id and record["status"] == "queued"
    clock.advance(1.0)
    assert client.responses.retrieve(record["id"]).output_text == "You said: once"
    assert [shape(i)[:2] for i in items(client, conversation.id)] == [("message", "user"), ("message", "assistant")]
    assert srv.stats()["faults_injected"]["by_operation"] == {"createResponse": {"lost": 1}}


# -- loose flavour ------------------------------------------------------------------------------


def test_loose_flavour_differences(make_emulator: MakeEmulator,  # noqa: F811 - the imported fixture
                                   connect: Callable[..., openai.OpenAI]) -> None:
    srv = make_emulator(flavour="loose")
    client = connect(srv)
    conversation = json.loads(client.conversations.with_raw_response.create().text)
    assert re.fullmatch(r"[0-9a-f]{32}", conversation["id"]) and isinstance(conversation["created_at"], float)
    assert "metadata" not in conversation
    with pytest.raises(openai.BadRequestError) as object_form:
        start(client, {"id": conversation["id"]}, "hello loose")
    assert object_form.value.body["param"] == "conversation"
    created = json.loads(client.responses.with_raw_response.create(
        model="gpt-4o", input="hello loose", conversation=conversation["id"], background=True).text)
    assert re.fullmatch(r"[0-9a-f]{32}", created["id"]) and isinstance(created["created_at"], float)
    assert "conversation" not in created and "usage" not in created and "error" not in created
    assert client.responses.retrieve(created["id"]).conversation is None
    done = wait_response(client, created["id"])
    assert done.output_text == "You said: hello loose" and done.usage is not None
    listed = json.loads(client.conversations.items.with_raw_response.list(conversation["id"], order="asc").text)
    assert listed["data"][0]["content"] == "hello loose"  # user content as a plain string
    assert listed["data"][1]["content"][0]["text"] == "You said: hello loose"  # assistant content keeps parts
    assert items(client, conversation["id"])[0].content == "hello loose"


# -- admin --------------------------------------------------------------------------------------


def test_admin_stats_runs_and_reset(emulator: EmulatorServer, client: openai.OpenAI) -> None:  # noqa: F811 - the imported fixture
    conversation = client.conversations.create()
    response = wait_response(client, start(client, conversation.id, "hi").id)
    stats = admin(emulator, "stats")
    assert stats["calls"]["createConversation"] == 1 and stats["calls"]["createResponse"] == 1
    assert stats["calls"]["getResponse"] >= 1
    assert stats["model_responses"] == {"total": 1, "by_status": {"completed": 1}}
    assert stats["runs"] == {"total": 0, "by_status": {}}
    assert stats["objects"]["conversations"] == 1 and stats["objects"]["conversation_items"] == 2
    [record] = admin(emulator, "runs")
    assert record["id"] == response.id and record["polls"] == stats["calls"]["getResponse"]
    assert set(record) == {"id", "object", "thread_id", "status", "created_at", "started_at", "finished_at",
                           "polls", "last_polled_at", "history"}
    assert admin(emulator, "reset", {}) == {"ok": True}
    assert admin(emulator, "runs") == [] and admin(emulator, "stats")["model_responses"]["total"] == 0
    with pytest.raises(openai.NotFoundError):
        client.conversations.retrieve(conversation.id)


# -- strict flavour: OpenAI's schema ------------------------------------------------------------


def test_strict_bodies_match_schema(client: openai.OpenAI, schemas: SpecSchemas) -> None:  # noqa: F811 - the imported fixture
    """Every new operation's 200 body, in every response state and item type, validates against the spec."""
    conversation = raw(client.conversations.with_raw_response.create, metadata={"a": "b"},
                       items=[{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi"}])
    schemas.check_response("createConversation", conversation)
    schemas.check_response("getConversation", raw(client.conversations.with_raw_response.retrieve, conversation["id"]))
    conv_id = conversation["id"]

    def run(text: Any, **kwargs: Any) -> dict[str, Any]:
        created = raw(client.responses.with_raw_response.create, model="gpt-4o", input=text, background=True,
                      conversation=conv_id, tools=[WEATHER_TOOL], instructions="prefix:BOT", **kwargs)
        schemas.check_response("createResponse", created)

        def final() -> dict[str, Any] | None:
            body = raw(client.responses.with_raw_response.retrieve, created["id"])
            schemas.check_response("getResponse", body)
            return body if body["status"] in FINAL else None

        return wait_until(final, what=f"{created['id']} final")

    calls = run(WEATHER_CALL + " call:get_time")["output"]
    outputs = [{"type": "function_call_output", "call_id": c["call_id"], "output": '{"temp": 21}'} for c in calls]
    assert run(outputs, metadata={"k": "v"})["status"] == "completed"
    assert run("file_search please")["output"][0]["content"][0]["annotations"][0]["type"] == "file_citation"
    assert {run(text)["status"] for text in ("fail:server_error", "fail:odd", "incomplete")} == {"failed", "incomplete"}
    listed = raw(client.conversations.items.with_raw_response.list, conv_id, limit=100)
    schemas.check_response("listConversationItems", listed)
    assert {i["type"] for i in listed["data"]} == {"message", "function_call", "function_call_output"}
    for item in listed["data"][:6]:
        fetched = raw(client.conversations.items.with_raw_response.retrieve, item["id"], conversation_id=conv_id)
        schemas.check_response("getConversationItem", fetched)
    added = raw(client.conversations.items.with_raw_response.create, conv_id,
                items=[{"role": "user", "content": [{"type": "input_text", "text": "more"}]}])
    schemas.check_response("createConversationItems", added)
    deleted = raw(client.conversations.items.with_raw_response.delete, added["data"][0]["id"], conversation_id=conv_id)
    schemas.check_response("deleteConversationItem", deleted)
    working = raw(client.responses.with_raw_response.create, model="gpt-4o", input="sleep:5 wait", background=True,
                  conversation={"id": conv_id})
    with pytest.raises(openai.BadRequestError) as locked:
        start(client, conv_id, "again")
    schemas.check("#/components/schemas/ErrorResponse", locked.value.response.json())
    cancelled = raw(client.responses.with_raw_response.cancel, working["id"])
    schemas.check_response("cancelResponse", cancelled)
    assert cancelled["status"] == "cancelled"
    synchronous = raw(client.responses.with_raw_response.create, model="gpt-4o", input="hi")
    schemas.check_response("createResponse", synchronous)
    with pytest.raises(openai.NotFoundError) as missing:
        client.responses.retrieve("resp_missing")
    schemas.check("#/components/schemas/ErrorResponse", missing.value.response.json())
