"""The emulator's switches for Responses servers unlike OpenAI's, through the real SDK:
`conversation_lock` off (responses run side by side on one conversation, each adding its
items when it completes) and `list_responses` (`GET /v1/responses`, not in OpenAI's spec)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import openai
import pytest

from emulator import EmulatorConfig, EmulatorServer
from emulator.config import from_env
from tests.test_emulator_responses import ManualClock, clocked, connect, items, shape, start  # noqa: F401 - fixtures

Clocked = Callable[..., tuple[EmulatorServer, ManualClock]]


def list_responses(client: openai.OpenAI, **params: Any) -> Any:
    """GET /v1/responses through the SDK's own request path (it has no method for it)."""
    return client.get("/responses", cast_to=object, options={"params": params})


def test_without_the_lock_responses_run_side_by_side_and_add_items_as_they_complete(
        clocked: Clocked,  # noqa: F811 - the fixture
        connect: Callable[..., openai.OpenAI]) -> None:  # noqa: F811
    srv, clock = clocked(conversation_lock=False)
    client = connect(srv)
    conversation = client.conversations.create()
    slow = start(client, conversation.id, "first sleep:2")
    fast = start(client, conversation.id, "second sleep:1")  # no conversation_locked
    client.conversations.items.create(conversation.id, items=[{"role": "user", "content": "typed meanwhile"}])
    assert [shape(i) for i in items(client, conversation.id)] == [("message", "user", "typed meanwhile")]
    clock.advance(1.0)
    assert client.responses.retrieve(slow.id).status == "in_progress"
    # The fast one completed first: its input and output are there, the slow one's are not.
    assert [shape(i) for i in items(client, conversation.id)] == [
        ("message", "user", "typed meanwhile"), ("message", "user", "second sleep:1"),
        ("message", "assistant", "You said: second sleep:1")]
    clock.advance(1.0)
    # Nobody polled the slow one: reading the conversation settles it.
    assert [shape(i) for i in items(client, conversation.id)][3:] == [
        ("message", "user", "first sleep:2"), ("message", "assistant", "You said: first sleep:2")]
    assert client.responses.retrieve(fast.id).status == client.responses.retrieve(slow.id).status == "completed"


def test_with_the_lock_a_second_response_is_refused(clocked: Clocked,  # noqa: F811 - the fixture
                                                    connect: Callable[..., openai.OpenAI]) -> None:  # noqa: F811
    srv, _ = clocked()
    client = connect(srv)
    conversation = client.conversations.create()
    start(client, conversation.id, "busy")
    with pytest.raises(openai.BadRequestError) as locked:
        start(client, conversation.id, "me too")
    assert locked.value.code == "conversation_locked"


def test_responses_are_not_listed_unless_switched_on(clocked: Clocked,  # noqa: F811 - the fixture
                                                     connect: Callable[..., openai.OpenAI]) -> None:  # noqa: F811
    srv, _ = clocked()
    client = connect(srv)
    with pytest.raises(openai.NotFoundError) as missing:
        list_responses(client, limit=1)
    assert missing.value.body == {"message": "Invalid URL (GET /v1/responses)", "type": "invalid_request_error",
                                  "param": None, "code": None}


def test_listed_responses_page_newest_first_by_default(clocked: Clocked,  # noqa: F811 - the fixture
                                                       connect: Callable[..., openai.OpenAI]) -> None:  # noqa: F811
    srv, clock = clocked(list_responses=True)
    client = connect(srv)
    conversation = client.conversations.create()
    made = [start(client, None, f"number {n}", metadata={"n": str(n)}).id for n in range(5)]
    start(client, conversation.id, "in a conversation")
    clock.advance(2.0)
    first = list_responses(client, limit=2)
    assert first["object"] == "list" and first["has_more"] is True
    assert [r["id"] for r in first["data"]][1:] == [made[4]]
    assert first["data"][0]["conversation"] == {"id": conversation.id}
    assert first["first_id"] == first["data"][0]["id"] and first["last_id"] == made[4]
    assert all(r["status"] == "completed" for r in first["data"])  # settled as they are now
    rest = list_responses(client, limit=100, after=first["last_id"])
    assert [r["id"] for r in rest["data"]] == made[3::-1] and rest["has_more"] is False
    assert [r["metadata"] for r in rest["data"]] == [{"n": str(n)} for n in (3, 2, 1, 0)]
    oldest = list_responses(client, order="asc", limit=1)
    assert [r["id"] for r in oldest["data"]] == [made[0]]
    assert len(list_responses(client, limit=100)["data"]) == 6


def test_the_switches_are_read_from_the_environment() -> None:
    config = from_env({"EMULATOR_CONVERSATION_LOCK": "false", "EMULATOR_LIST_RESPONSES": "true"})
    assert config.conversation_lock is False and config.list_responses is True
    assert EmulatorConfig().conversation_lock is True and EmulatorConfig().list_responses is False
    assert EmulatorConfig().replace(conversation_lock="off").conversation_lock is False
