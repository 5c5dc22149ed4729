"""The emulator streams runs (Assistants v2) and responses (Responses API) as server-sent events, as OpenAI does.

Against a real emulator over HTTP: the `openai` SDK's own streaming where it can, raw SSE where the
test needs the exact bytes (every event validated against the spec's AssistantStreamEvent /
ResponseStreamEvent schema). The invariants the worker relies on: events in OpenAI's order, a
message's deltas concatenate to its final text under the id GET shows, Responses sequence numbers
0, 1, 2 ... without gaps, a re-attach gives exactly the rest; and the switches stream_cut and
stream_refuse.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
import yaml

from emulator import EmulatorServer
from emulator.streams import split_text
from tests.emulator_fixtures import make_emulator, openai_client, wait_until  # noqa: F401 - pytest fixtures
from tests.test_emulator_schema import SpecSchemas

pytestmark = pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")
SPEC_PATH = Path(__file__).resolve().parent / "data" / "openai-openapi.yaml"
ASSISTANT_EVENT = "#/components/schemas/AssistantStreamEvent"
RESPONSE_EVENT = "#/components/schemas/ResponseStreamEvent"
WEATHER = 'What is the weather? call:get_weather{"city": "Paris"}'
RUN_OPENING = ["thread.run.created", "thread.run.queued", "thread.run.in_progress"]
MESSAGE_OPENING = ["thread.run.step.created", "thread.run.step.in_progress", "thread.message.created",
                   "thread.message.in_progress"]
Events = list[tuple[str, Any]]


@pytest.fixture(scope="module")
def schemas() -> SpecSchemas:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with SPEC_PATH.open(encoding="utf-8") as handle:
        return SpecSchemas(yaml.load(handle, Loader=loader))


@pytest.fixture
def srv(make_emulator: Callable[..., EmulatorServer]) -> EmulatorServer:  # noqa: F811 - the imported fixture
    return make_emulator(run_seconds=0.3, stream_chunks=8)


@pytest.fixture
def client(srv: EmulatorServer) -> Iterator[openai.OpenAI]:
    with openai_client(srv) as sdk:
        yield sdk


def http(srv: EmulatorServer) -> httpx2.Client:
    return httpx2.Client(base_url=srv.base_url, headers={"Authorization": "Bearer test"}, timeout=10)


@contextmanager
def sse(srv: EmulatorServer, method: str, path: str, body: dict[str, Any] | None = None) -> Iterator[Iterator[
        tuple[str, Any]]]:
    """The (event, data) pairs of a raw stream, as they arrive (data parsed unless it is [DONE])."""
    with http(srv) as client, client.stream(method, path, json=body) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield _parse(response.iter_lines())


def _parse(lines: Iterator[str]) -> Iterator[tuple[str, Any]]:
    name = None
    for line in lines:
        if line.startswith("event: "):
            name = line[len("event: "):]
        elif line.startswith("data: "):
            data = line[len("data: "):]
            yield str(name), data if data == "[DONE]" else json.loads(data)


def read_all(srv: EmulatorServer, method: str, path: str, body: dict[str, Any] | None = None) -> Events:
    with sse(srv, method, path, body) as events:
        return list(events)


def check_assistant_events(schemas: SpecSchemas, events: Events) -> None:
    for name, data in events:
        if name == "done":
            schemas.check("#/components/schemas/DoneEvent", {"event": name, "data": data})
        else:
            schemas.check(ASSISTANT_EVENT, {"event": name, "data": data}, name)


def check_response_events(schemas: SpecSchemas, events: Events, first: int = 0) -> None:
    assert [data["sequence_number"] for _, data in events] == list(range(first, first + len(events)))
    for name, data in events:
        assert data["type"] == name
        schemas.check(RESPONSE_EVENT, data, name)


def message_deltas(events: Events) -> dict[str, str]:
    """Each message's text as its deltas concatenate."""
    texts: dict[str, str] = {}
    for name, data in events:
        if name == "thread.message.delta":
            for part in data["delta"]["content"]:
                if part["type"] == "text":
                    texts[data["id"]] = texts.get(data["id"], "") + part["text"]["value"]
    return texts


def assistant_texts(client: openai.OpenAI, thread_id: str, run_id: str) -> dict[str, str]:
    listed = client.beta.threads.messages.list(thread_id, run_id=run_id, order="asc")
    return {m.id: "".join(p.text.value for p in m.content if p.type == "text")
            for m in listed.data if m.role == "assistant"}


def names(events: Events) -> list[str]:
    """The event names with runs of deltas collapsed to one."""
    collapsed: list[str] = []
    for name, _ in events:
        if not (name.endswith(".delta") and collapsed and collapsed[-1] == name):
            collapsed.append(name)
    return collapsed


# -- Assistants v2 -----------------------------------------------------------------------------------


def test_thread_and_run_stream_in_openai_order_and_schema(srv: EmulatorServer, client: openai.OpenAI,
                                                         schemas: SpecSchemas) -> None:
    """createThreadAndRun with stream: OpenAI's events in order, each valid; the deltas are the messages GET shows."""
    body = {"assistant_id": "asst_default", "stream": True,
            "thread": {"messages": [{"role": "user", "content": "Solve 3x + 11 = 14 twice, ünïcødé ✓"}]}}
    events = read_all(srv, "POST", "/threads/runs", body)
    message = [*MESSAGE_OPENING, "thread.message.delta", "thread.message.completed", "thread.run.step.completed"]
    assert names(events) == ["thread.created", *RUN_OPENING, *message, *message, "thread.run.completed", "done"]
    check_assistant_events(schemas, events)
    run = events[1][1]
    assert events[-2][1]["id"] == run["id"] and events[-2][1]["status"] == "completed"
    texts = assistant_texts(client, run["thread_id"], run["id"])
    assert message_deltas(events) == texts and len(texts) == 2
    assert client.beta.threads.runs.retrieve(run["id"], thread_id=run["thread_id"]).status == "completed"
    completed = [data for name, data in events if name == "thread.message.completed"]
    assert [m["id"] for m in completed] == list(texts)
    assert all(len([1 for n, d in events if n == "thread.message.delta" and d["id"] == m]) <= 8 for m in texts)


@pytest.mark.parametrize(("text", "ending", "message_end"), [
    ("code_interpreter file_search image please", "thread.run.completed", "thread.message.completed"),
    ("incomplete", "thread.run.incomplete", "thread.message.incomplete"),
    ("fail:server_error", "thread.run.failed", None),
    ("expire:now", "thread.run.expired", None),
])
def test_run_stream_outcomes_match_schema(srv: EmulatorServer, client: openai.OpenAI, schemas: SpecSchemas,
                                          text: str, ending: str, message_end: str | None) -> None:
    """Hosted tool steps, an image part and a citation; incomplete, failed and expired runs: valid events."""
    thread = client.beta.threads.create(messages=[{"role": "user", "content": text}])
    events = read_all(srv, "POST", f"/threads/{thread.id}/runs", {"assistant_id": "asst_default", "stream": True})
    check_assistant_events(schemas, events)
    assert names(events)[:3] == RUN_OPENING and names(events)[-2:] == [ending, "done"]
    assert (message_end in names(events)) if message_end else "thread.message.created" not in names(events)
    run = events[0][1]
    assert message_deltas(events) == assistant_texts(client, thread.id, run["id"])
    steps = client.beta.threads.runs.steps.list(run["id"], thread_id=thread.id, order="asc").data
    streamed = [d["id"] for n, d in events if n == "thread.run.step.completed"]
    assert streamed == [step.id for step in steps]


def test_sdk_stream_with_a_tool_round(srv: EmulatorServer, client: openai.OpenAI) -> None:
    """createRun stream until requires_action, then submit_tool_outputs with stream: the SDK reads both, and
    the reply's deltas are the final message."""
    thread = client.beta.threads.create(messages=[{"role": "user", "content": WEATHER}])
    first = list(client.beta.threads.runs.create(thread.id, assistant_id="asst_default", stream=True))
    kinds = [event.event for event in first]
    assert kinds[:3] == RUN_OPENING and kinds[-1] == "thread.run.requires_action"
    assert "thread.run.step.created" in kinds and "thread.run.step.delta" in kinds
    run = first[-1].data
    calls = run.required_action.submit_tool_outputs.tool_calls
    arguments = "".join(call.function.arguments or "" for event in first if event.event == "thread.run.step.delta"
                        for call in event.data.delta.step_details.tool_calls if call.function)
    assert arguments == calls[0].function.arguments == '{"city":"Paris"}'
    second = list(client.beta.threads.runs.submit_tool_outputs(
        run.id, thread_id=thread.id, tool_outputs=[{"tool_call_id": calls[0].id, "output": '{"temp": 21}'}],
        stream=True))
    kinds = [event.event for event in second]
    assert kinds[:3] == ["thread.run.step.completed", "thread.run.queued", "thread.run.in_progress"]
    assert kinds[-1] == "thread.run.completed"
    deltas = "".join(part.text.value for event in second if event.event == "thread.message.delta"
                     for part in event.data.delta.content if part.type == "text" and part.text and part.text.value)
    texts = assistant_texts(client, thread.id, run.id)
    assert list(texts.values()) == [deltas] == ['Tool results: get_weather -> {"temp": 21}']


def test_tool_round_streams_match_schema(srv: EmulatorServer, client: openai.OpenAI, schemas: SpecSchemas) -> None:
    thread = client.beta.threads.create(messages=[{"role": "user", "content": WEATHER + " call:get_time"}])
    first = read_all(srv, "POST", f"/threads/{thread.id}/runs", {"assistant_id": "asst_default", "stream": True})
    check_assistant_events(schemas, first)
    assert names(first)[-2:] == ["thread.run.requires_action", "done"]
    calls = first[-2][1]["required_action"]["submit_tool_outputs"]["tool_calls"]
    outputs = [{"tool_call_id": call["id"], "output": "ok"} for call in calls]
    second = read_all(srv, "POST", f"/threads/{thread.id}/runs/{first[0][1]['id']}/submit_tool_outputs",
                      {"tool_outputs": outputs, "stream": True})
    check_assistant_events(schemas, second)
    assert names(second)[-2:] == ["thread.run.completed", "done"]


def test_polled_and_streamed_runs_agree(srv: EmulatorServer, client: openai.OpenAI) -> None:
    """At each run event, getRun shows the same status (the ending is sent at the run's due time)."""
    srv.configure(run_seconds=0.5)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hello"}])
    rank = {"queued": 0, "in_progress": 1, "completed": 2}
    seen = []
    with sse(srv, "POST", f"/threads/{thread.id}/runs", {"assistant_id": "asst_default", "stream": True}) as events:
        for name, data in events:
            if name.startswith("thread.run.") and not name.startswith("thread.run.step"):
                polled = client.beta.threads.runs.retrieve(data["id"], thread_id=thread.id)
                seen.append((data["status"], polled.status))
    assert [streamed for streamed, _ in seen] == ["queued", "queued", "in_progress", "completed"]
    assert all(rank[polled] >= rank[streamed] for streamed, polled in seen)  # a poll is never behind the stream
    assert seen[-1] == ("completed", "completed") and seen[2][1] == "in_progress"  # nor ahead of it


def test_cancel_ends_an_open_run_stream(srv: EmulatorServer, client: openai.OpenAI, schemas: SpecSchemas) -> None:
    srv.configure(run_seconds=2.0)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hello"}])
    received: Events = []
    with sse(srv, "POST", f"/threads/{thread.id}/runs", {"assistant_id": "asst_default", "stream": True}) as events:
        for name, data in events:
            received.append((name, data))
            if name == "thread.message.delta" and names(received).count("thread.run.cancelling") == 0 \
                    and len(message_deltas(received)) == 1 and received[-2][0] != name:  # at the first delta
                client.beta.threads.runs.cancel(received[0][1]["id"], thread_id=thread.id)
    check_assistant_events(schemas, received)
    assert names(received)[-3:] == ["thread.run.cancelling", "thread.run.cancelled", "done"]
    assert received[-2][1]["status"] == "cancelled"
    assert client.beta.threads.runs.retrieve(received[0][1]["id"], thread_id=thread.id).status == "cancelled"


# -- Responses ---------------------------------------------------------------------------------------


def test_sdk_background_response_stream(srv: EmulatorServer, client: openai.OpenAI, schemas: SpecSchemas) -> None:
    """responses.create(background, stream): numbered events in OpenAI's order; the deltas are the output
    text GET and the conversation show, under the same item id."""
    conversation = client.conversations.create()
    events = list(client.responses.create(model="gpt-4o", input="Solve 2x + 1 = 7 ✓", background=True, stream=True,
                                          conversation=conversation.id))
    assert [event.sequence_number for event in events] == list(range(len(events)))
    kinds = names([(event.type, None) for event in events])
    assert kinds == ["response.created", "response.queued", "response.in_progress", "response.output_item.added",
                     "response.content_part.added", "response.output_text.delta", "response.output_text.done",
                     "response.content_part.done", "response.output_item.done", "response.completed"]
    assert events[0].response.status == "queued" and events[0].response.background is True
    deltas = [event for event in events if event.type == "response.output_text.delta"]
    text = "".join(event.delta for event in deltas)
    final = client.responses.retrieve(events[0].response.id)
    assert final.status == "completed" and final.output_text == text
    assert {event.item_id for event in deltas} == {final.output[0].id}
    items = client.conversations.items.list(conversation.id, order="asc").data
    assert items[-1].id == final.output[0].id and items[-1].content[0].text == text
    replay = read_all(srv, "GET", f"/responses/{final.id}?stream=true")
    check_response_events(schemas, replay)
    assert [data["type"] for _, data in replay] == [event.type for event in events]


def test_response_function_call_round_streams(srv: EmulatorServer, client: openai.OpenAI, schemas: SpecSchemas) -> None:
    """A function call streamed as arguments deltas, then the reply after function_call_output, both valid."""
    conversation = client.conversations.create()
    tools = [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]
    body = {"model": "gpt-4o", "input": WEATHER, "background": True, "stream": True,
            "conversation": conversation.id, "tools": tools}
    first = read_all(srv, "POST", "/responses", body)
    check_response_events(schemas, first)
    assert names(first)[3:] == ["response.output_item.added", "response.function_call_arguments.delta",
                                "response.function_call_arguments.done", "response.output_item.done",
                                "response.completed"]
    call = first[-1][1]["response"]["output"][0]
    arguments = "".join(d["delta"] for n, d in first if n == "response.function_call_arguments.delta")
    assert arguments == call["arguments"] == '{"city":"Paris"}'
    assert first[3][1]["item"]["id"] == call["id"]
    body["input"] = [{"type": "function_call_output", "call_id": call["call_id"], "output": "sunny"}]
    second = read_all(srv, "POST", "/responses", body)
    check_response_events(schemas, second)
    text = "".join(d["delta"] for n, d in second if n == "response.output_text.delta")
    assert text == "Tool results: get_weather -> sunny" == second[-1][1]["response"]["output"][0]["content"][0]["text"]
    items = client.conversations.items.list(conversation.id, order="asc").data
    assert items[-1].id == second[-1][1]["response"]["output"][0]["id"]


@pytest.mark.parametrize(("text", "ending"), [("incomplete", "response.incomplete"),
                                              ("fail:server_error", "response.failed")])
def test_response_stream_endings(srv: EmulatorServer, schemas: SpecSchemas, text: str, ending: str) -> None:
    events = read_all(srv, "POST", "/responses", {"model": "gpt-4o", "input": text, "background": True,
                                                   "stream": True})
    check_response_events(schemas, events)
    assert events[-1][0] == ending
    with http(srv) as client:
        body = client.get(f"/responses/{events[0][1]['response']['id']}").json()
    assert body["status"] == events[-1][1]["response"]["status"]


def test_reattach_from_the_middle_gives_exactly_the_rest(srv: EmulatorServer, client: openai.OpenAI,
                                                         schemas: SpecSchemas) -> None:
    """Drop a stream at sequence_number 6, re-attach with starting_after=6 (SDK) while it runs: the rest,
    live; it equals the tail of a full replay."""
    srv.configure(run_seconds=0.6)
    body = {"model": "gpt-4o", "input": "a fairly long message to stream", "background": True, "stream": True}
    with sse(srv, "POST", "/responses", body) as events:
        head = [next(events) for _ in range(7)]
    response_id = head[0][1]["response"]["id"]
    assert client.responses.retrieve(response_id).status in ("queued", "in_progress")
    rest = list(client.responses.retrieve(response_id, stream=True, starting_after=6))
    assert rest[0].sequence_number == 7 and rest[-1].type == "response.completed"
    full = read_all(srv, "GET", f"/responses/{response_id}?stream=true")
    check_response_events(schemas, full)
    assert [(e.sequence_number, e.type) for e in rest] == [(d["sequence_number"], n) for n, d in full[7:]]
    assert [d for _, d in head] == [d for _, d in full[:7]]
    assert read_all(srv, "GET", f"/responses/{response_id}?stream=true&starting_after=10") == full[11:]


def test_reattach_only_for_background_streams(srv: EmulatorServer) -> None:
    with http(srv) as client:
        created = client.post("/responses", json={"model": "gpt-4o", "input": "hi", "background": True}).json()
        refused = client.get(f"/responses/{created['id']}", params={"stream": "true", "starting_after": 0})
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "stream"


def test_cancel_ends_an_open_response_stream(srv: EmulatorServer, schemas: SpecSchemas) -> None:
    """No event tells a cancel (the spec has none): the stream ends; GET shows cancelled."""
    srv.configure(run_seconds=2.0)
    received: Events = []
    body = {"model": "gpt-4o", "input": "hello there", "background": True, "stream": True}
    with sse(srv, "POST", "/responses", body) as events, http(srv) as client:
        for name, data in events:
            received.append((name, data))
            if name == "response.output_text.delta" and data["sequence_number"] == 6:
                response_id = received[0][1]["response"]["id"]
                assert client.post(f"/responses/{response_id}/cancel").json()["status"] == "cancelled"
    check_response_events(schemas, received)
    assert received[-1][0] == "response.output_text.delta"  # the stream ended after the cancel, mid-message
    with http(srv) as client:
        assert client.get(f"/responses/{received[0][1]['response']['id']}").json()["status"] == "cancelled"


def test_a_dropped_synchronous_stream_cancels_its_response(srv: EmulatorServer) -> None:
    srv.configure(run_seconds=1.0)
    body = {"model": "gpt-4o", "input": "hello there", "stream": True}
    with sse(srv, "POST", "/responses", body) as events:
        response_id = next(events)[1]["response"]["id"]
    with http(srv) as client:
        wait_until(lambda: client.get(f"/responses/{response_id}").json()["status"] == "cancelled",
                   what="the dropped response cancelled")


# -- switches and the stream log ---------------------------------------------------------------------


def read_cut(srv: EmulatorServer, path: str, body: dict[str, Any]) -> Events:
    """The events of a stream that is cut before its end (the read fails)."""
    received: Events = []
    try:
        with sse(srv, "POST", path, body) as events:
            received.extend(events)
    except httpx2.HTTPError:
        return received
    raise AssertionError(f"the stream was not cut: {names(received)}")


def test_stream_cut_closes_mid_way_and_the_record_goes_on(srv: EmulatorServer, client: openai.OpenAI) -> None:
    srv.configure(stream_cut=1.0)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hello"}])
    path = f"/threads/{thread.id}/runs"
    received = read_cut(srv, path, {"assistant_id": "asst_default", "stream": True})
    assert received and received[-1][0] not in ("thread.run.completed", "done")
    run_id = received[0][1]["id"]
    wait_until(lambda: client.beta.threads.runs.retrieve(run_id, thread_id=thread.id).status == "completed",
               what="the cut run completed")
    received = read_cut(srv, "/responses", {"model": "gpt-4o", "input": "hello there", "background": True,
                                            "stream": True})
    assert received and received[-1][0] != "response.completed"
    srv.configure(stream_cut=0.0)
    last = received[-1][1]["sequence_number"]
    rest = read_all(srv, "GET", f"/responses/{received[0][1]['response']['id']}?stream=true&starting_after={last}")
    assert rest[0][1]["sequence_number"] == last + 1 and rest[-1][0] == "response.completed"
    assert any(record["event"] == "cut" for record in srv.stream_log())


def test_a_deleted_thread_s_run_streams_no_more(srv: EmulatorServer, client: openai.OpenAI) -> None:
    """The run goes with its thread: its open stream breaks (no more events, no end)."""
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "sleep:1 hello"}])
    received: Events = []
    with pytest.raises(httpx2.HTTPError), sse(srv, "POST", f"/threads/{thread.id}/runs",
                                               {"assistant_id": "asst_default", "stream": True}) as events:
        for event in events:
            received.append(event)
            if event[0] == "thread.run.in_progress":
                client.beta.threads.delete(thread.id)
    assert "thread.run.in_progress" in names(received)
    # What was on its way may still come; the run's end never does.
    assert not {"thread.run.completed", "done"} & set(names(received)), names(received)


def test_stream_refuse_modes(srv: EmulatorServer) -> None:
    run_body = {"assistant_id": "asst_default", "stream": True, "thread": {"messages": [{"role": "user",
                                                                                        "content": "hi"}]}}
    response_body = {"model": "gpt-4o", "input": "hi", "background": True, "stream": True}
    with http(srv) as client:
        srv.configure(stream_refuse="error")
        for path, body in (("/threads/runs", run_body), ("/responses", response_body)):
            refused = client.post(path, json=body)
            assert refused.status_code == 400
            assert refused.json()["error"]["code"] == "unsupported_parameter"
            assert refused.json()["error"]["param"] == "stream"
        srv.configure(stream_refuse="json")
        for path, body, status in (("/threads/runs", run_body, "queued"), ("/responses", response_body, "queued")):
            plain = client.post(path, json=body)
            assert plain.status_code == 200 and plain.headers["content-type"] == "application/json"
            assert plain.json()["status"] == status
        srv.configure(stream_refuse="resume")
        events = read_all(srv, "POST", "/responses", response_body)
        assert events[-1][0] == "response.completed"
        response_id = events[0][1]["response"]["id"]
        refused = client.get(f"/responses/{response_id}", params={"stream": "true", "starting_after": 3})
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "starting_after"
        assert read_all(srv, "GET", f"/responses/{response_id}?stream=true") == events


def test_stream_log_spreads_the_deltas_over_the_run(make_emulator: Callable[..., EmulatorServer]) -> None:  # noqa: F811
    srv = make_emulator(run_seconds=1.0)
    with http(srv) as client:
        text = "word " * 60
        run = client.post("/threads/runs", json={"assistant_id": "asst_default", "thread": {
            "messages": [{"role": "user", "content": text}]}}).json()
        assert run["status"] == "queued"  # not streamed: nothing logged
    assert srv.stream_log() == []
    with openai_client(srv) as sdk:
        thread = sdk.beta.threads.create(messages=[{"role": "user", "content": text}])
    events = read_all(srv, "POST", f"/threads/{thread.id}/runs", {"assistant_id": "asst_default", "stream": True})
    log = [record for record in srv.stream_log() if record["id"] == events[0][1]["id"]]
    deltas = [record for record in log if record["event"] == "thread.message.delta"]
    assert len(deltas) == 100 and [record["index"] for record in deltas] == list(range(100))
    times = [record["at"] for record in log]
    assert times == sorted(times) and deltas[-1]["at"] - deltas[0]["at"] >= 0.5
    assert log[-1]["event"] == "thread.run.completed" and log[-1]["item_id"] is None
    assert {record["item_id"] for record in deltas} == {d["id"] for n, d in events if n == "thread.message.delta"}
    with http(srv) as client:
        admin = client.get(srv.url + "/_emulator/stream_log").json()
    assert admin == srv.stream_log()
    srv.reset()
    assert srv.stream_log() == []


def test_split_text_never_splits_a_character() -> None:
    assert split_text("", 5) == [] and split_text("abc", 5) == ["a", "b", "c"]
    pieces = split_text("héllo wörld ✓ 𝄞" * 7, 10)
    assert len(pieces) == 10 and "".join(pieces) == "héllo wörld ✓ 𝄞" * 7
    assert max(map(len, pieces)) - min(map(len, pieces)) <= 1
    assert all(piece.encode() for piece in pieces)


def test_streams_do_not_block_other_requests(srv: EmulatorServer) -> None:
    """Twenty open streams, and a plain request is answered meanwhile."""
    srv.configure(run_seconds=1.0)
    done = []

    def stream() -> None:
        events = read_all(srv, "POST", "/responses", {"model": "gpt-4o", "input": "hi", "background": True,
                                                      "stream": True})
        done.append(events[-1][0])

    threads = [threading.Thread(target=stream) for _ in range(20)]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(srv.stream_log()) >= 20, what="streams open")
    with http(srv) as client:
        assert client.get("/models").status_code == 200
        assert len(done) < 20
    for thread in threads:
        thread.join(timeout=10)
    assert done == ["response.completed"] * 20
