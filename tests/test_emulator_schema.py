"""The emulator's strict flavour answers in OpenAI's own schema (shared/openai-openapi.yaml).

Each raw JSON body is validated against the 200-response schema of its operation, with the
spec's OpenAPI 3.0 `nullable` turned into JSON Schema 2020-12 null types.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import openai
import pytest
import referencing
import yaml

from emulator import EmulatorServer
from tests.emulator_fixtures import emulator, make_emulator, openai_client, wait_until  # noqa: F401 - pytest fixtures

# openai 3.x marks beta.assistants.* deprecated with the bare message "deprecated"
pytestmark = pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")
SPEC_PATH = Path(__file__).resolve().parent / "data" / "openai-openapi.yaml"
BASE_URI = "urn:openai-openapi"
TERMINAL = {"completed", "failed", "cancelled", "expired", "incomplete"}
WEATHER_CALL = 'What is the weather? call:get_weather{"city": "Paris"}'


class SpecSchemas:
    """Validators for the 200 response of each operationId and for component schemas."""

    def __init__(self, spec: dict[str, Any]) -> None:
        contents = {"components": {"schemas": _nullable_to_null_type(spec["components"]["schemas"])}}
        resource = referencing.jsonschema.DRAFT202012.create_resource(contents)
        self.registry = referencing.Registry().with_resource(BASE_URI, resource)
        self.responses: dict[str, str] = {}
        for path_item in spec["paths"].values():
            for operation in path_item.values():
                if isinstance(operation, dict) and "operationId" in operation:
                    schema = operation.get("responses", {}).get("200", {}).get("content", {})
                    ref = schema.get("application/json", {}).get("schema", {}).get("$ref")
                    if ref:
                        self.responses[operation["operationId"]] = ref

    def check_response(self, operation: str, body: Any) -> None:
        self.check(self.responses[operation], body, operation)

    def check(self, ref: str, body: Any, label: str | None = None) -> None:
        validator = jsonschema.Draft202012Validator({"$ref": BASE_URI + ref}, registry=self.registry)
        errors = sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
        if errors:
            details = "\n".join(f"- {list(e.absolute_path)}: {e.message[:300]}" for e in errors[:5])
            pytest.fail(f"{label or ref}: {len(errors)} schema error(s)\n{details}\nbody: {json.dumps(body)[:2000]}")


def _nullable_to_null_type(node: Any) -> Any:
    """OpenAPI's `nullable: true` (also as `allOf: [..., {nullable: true}]`) as JSON Schema `anyOf [.., null]`."""
    if isinstance(node, list):
        return [_nullable_to_null_type(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    nullable = node.get("nullable") is True
    if nullable:
        del node["nullable"]
    all_of = node.get("allOf")
    if isinstance(all_of, list) and {"nullable": True} in all_of:
        node["allOf"] = [item for item in all_of if item != {"nullable": True}]
        nullable = True
    node = {key: _nullable_to_null_type(value) for key, value in node.items()}
    return {"anyOf": [node, {"type": "null"}]} if nullable else node


@pytest.fixture(scope="module")
def schemas() -> SpecSchemas:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with SPEC_PATH.open(encoding="utf-8") as handle:
        return SpecSchemas(yaml.load(handle, Loader=loader))


@pytest.fixture
def client(emulator: EmulatorServer) -> openai.OpenAI:  # noqa: F811 - the imported fixture
    return openai_client(emulator)


def raw(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """The parsed JSON body of an SDK call made `with_raw_response`."""
    return json.loads(call(*args, **kwargs).text)


def start_run(client: openai.OpenAI, schemas: SpecSchemas, text: str, **run_args: Any) -> dict[str, Any]:
    thread = raw(client.beta.threads.with_raw_response.create)
    schemas.check_response("createThread", thread)
    message = raw(client.beta.threads.messages.with_raw_response.create, thread["id"], role="user", content=text)
    schemas.check_response("createMessage", message)
    run = raw(client.beta.threads.runs.with_raw_response.create, thread["id"], assistant_id="asst_default", **run_args)
    schemas.check_response("createRun", run)
    return run


def get_run(client: openai.OpenAI, schemas: SpecSchemas, run: dict[str, Any]) -> dict[str, Any]:
    body = raw(client.beta.threads.runs.with_raw_response.retrieve, run["id"], thread_id=run["thread_id"])
    schemas.check_response("getRun", body)
    return body


def wait_status(client: openai.OpenAI, schemas: SpecSchemas, run: dict[str, Any], statuses: set[str]) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        body = get_run(client, schemas, run)
        return body if body["status"] in statuses else None

    return wait_until(reached, what=f"run status in {sorted(statuses)}")


def check_lists(client: openai.OpenAI, schemas: SpecSchemas, run: dict[str, Any]) -> dict[str, Any]:
    """Validate listMessages, listRuns and listRunSteps of the run's thread; return the three bodies."""
    thread_id = run["thread_id"]
    bodies = {
        "listMessages": raw(client.beta.threads.messages.with_raw_response.list, thread_id),
        "listRuns": raw(client.beta.threads.runs.with_raw_response.list, thread_id),
        "listRunSteps": raw(client.beta.threads.runs.steps.with_raw_response.list, run["id"], thread_id=thread_id),
    }
    for operation, body in bodies.items():
        if body["data"]:  # the spec types first_id/last_id as strings; an empty page has nulls, as OpenAI's does
            schemas.check_response(operation, body)
    return bodies


def test_assistant_operations_match_schema(client: openai.OpenAI, schemas: SpecSchemas) -> None:
    """createAssistant, getAssistant, modifyAssistant and listAssistants answer per the spec."""
    function_tool = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    created = raw(client.beta.assistants.with_raw_response.create, model="gpt-4o", name="Weather",
                  instructions="Be brief.", tools=[function_tool, {"type": "file_search"}], metadata={"team": "a"})
    schemas.check_response("createAssistant", created)
    schemas.check_response("getAssistant", raw(client.beta.assistants.with_raw_response.retrieve, "asst_default"))
    modified = raw(client.beta.assistants.with_raw_response.update, created["id"], name="Renamed", tools=[])
    schemas.check_response("modifyAssistant", modified)
    assert modified["name"] == "Renamed" and modified["tools"] == []
    listed = raw(client.beta.assistants.with_raw_response.list)
    schemas.check_response("listAssistants", listed)
    assert [a["id"] for a in listed["data"]] == [created["id"], "asst_default"]


def test_thread_and_message_operations_match_schema(client: openai.OpenAI, schemas: SpecSchemas) -> None:
    """createThread (with messages), getThread, createMessage (text and parts), getMessage, listMessages."""
    attachment = {"file_id": "file-1", "tools": [{"type": "file_search"}]}
    thread = raw(client.beta.threads.with_raw_response.create, metadata={"user": "42"},
                 messages=[{"role": "user", "content": "Hello", "attachments": [attachment]}])
    schemas.check_response("createThread", thread)
    schemas.check_response("getThread", raw(client.beta.threads.with_raw_response.retrieve, thread["id"]))
    parts = [{"type": "text", "text": "Look at this"}, {"type": "image_file", "image_file": {"file_id": "file-img"}}]
    message = raw(client.beta.threads.messages.with_raw_response.create, thread["id"], role="user", content=parts,
                  metadata={"event_id": "e1"})
    schemas.check_response("createMessage", message)
    fetched = raw(client.beta.threads.messages.with_raw_response.retrieve, message["id"], thread_id=thread["id"])
    schemas.check_response("getMessage", fetched)
    listed = raw(client.beta.threads.messages.with_raw_response.list, thread["id"])
    schemas.check_response("listMessages", listed)
    assert [m["content"][0]["text"]["value"] for m in listed["data"]] == ["Look at this", "Hello"]


def test_thread_and_run_in_one_call_matches_schema(emulator: EmulatorServer,  # noqa: F811 - the imported fixture
                                                   client: openai.OpenAI, schemas: SpecSchemas) -> None:
    """createThreadAndRun: the thread with its messages and metadata, and a run on it, as the
    worker starts a new conversation; an unknown assistant creates nothing."""
    run = raw(client.beta.threads.with_raw_response.create_and_run, assistant_id="asst_default",
              thread={"messages": [{"role": "user", "content": "Hello in one call", "metadata": {"event_id": "e1"}}],
                      "metadata": {"conversation_id": "c1"}},
              metadata={"batch_id": "b1", "attempt": "1"})
    schemas.check_response("createThreadAndRun", run)
    assert run["status"] == "queued" and run["metadata"] == {"batch_id": "b1", "attempt": "1"}
    thread = raw(client.beta.threads.with_raw_response.retrieve, run["thread_id"])
    assert thread["metadata"] == {"conversation_id": "c1"}
    assert wait_status(client, schemas, run, TERMINAL)["status"] == "completed"
    listed = raw(client.beta.threads.messages.with_raw_response.list, run["thread_id"], order="asc")
    assert [(m["role"], m["metadata"].get("event_id")) for m in listed["data"]] == [("user", "e1"), ("assistant", None)]
    assert "Hello in one call" in listed["data"][1]["content"][0]["text"]["value"]
    before = emulator.stats()["objects"]
    with pytest.raises(openai.BadRequestError) as unknown:
        client.beta.threads.create_and_run(assistant_id="asst_missing",
                                           thread={"messages": [{"role": "user", "content": "x"}]})
    schemas.check("#/components/schemas/ErrorResponse", unknown.value.response.json())
    assert emulator.stats()["objects"] == before


@pytest.mark.parametrize(
    ("text", "status"),
    [
        ("Hello there", "completed"),
        ("fail:server_error", "failed"),
        ("fail:something_else", "failed"),
        ("expire:now", "expired"),
        ("incomplete", "incomplete"),
    ],
)
def test_final_run_states_match_schema(client: openai.OpenAI, schemas: SpecSchemas, text: str, status: str) -> None:
    """A run in each final state, with its messages, steps and run list, matches the spec."""
    run = start_run(client, schemas, text)
    assert run["status"] == "queued"
    final = wait_status(client, schemas, run, TERMINAL)
    assert final["status"] == status
    assert final["usage"] is not None
    check_lists(client, schemas, run)


def test_in_progress_run_matches_schema(client: openai.OpenAI, schemas: SpecSchemas) -> None:
    run = start_run(client, schemas, "sleep:1 take your time")
    body = wait_status(client, schemas, run, {"in_progress"})
    assert body["started_at"] is not None and body["usage"] is None


def test_function_call_flow_matches_schema(client: openai.OpenAI, schemas: SpecSchemas) -> None:
    """requires_action, submitToolOuputsToRun, then completed: runs and function steps match the spec."""
    run = start_run(client, schemas, WEATHER_CALL)
    waiting = wait_status(client, schemas, run, {"requires_action"})
    steps = check_lists(client, schemas, run)["listRunSteps"]
    assert steps["data"][0]["status"] == "in_progress"
    calls = waiting["required_action"]["submit_tool_outputs"]["tool_calls"]
    outputs = [{"tool_call_id": call["id"], "output": '{"temp": 21}'} for call in calls]
    submitted = raw(client.beta.threads.runs.with_raw_response.submit_tool_outputs, run["id"],
                    thread_id=run["thread_id"], tool_outputs=outputs)
    schemas.check_response("submitToolOuputsToRun", submitted)
    final = wait_status(client, schemas, run, TERMINAL)
    assert final["status"] == "completed"
    steps = check_lists(client, schemas, run)["listRunSteps"]
    assert [s["type"] for s in steps["data"]] == ["message_creation", "tool_calls"]


def test_expired_action_and_steps_match_schema(make_emulator: Callable[..., EmulatorServer],  # noqa: F811 - the imported fixture
                                               schemas: SpecSchemas) -> None:
    client = openai_client(make_emulator(expire_rule_seconds=0.2))
    run = start_run(client, schemas, "expire")
    final = wait_status(client, schemas, run, TERMINAL)
    assert final["status"] == "expired" and final["last_error"] is None
    steps = check_lists(client, schemas, run)["listRunSteps"]
    assert steps["data"][0]["status"] == "expired" and steps["data"][0]["expired_at"] is not None


def test_cancelled_run_matches_schema(client: openai.OpenAI, schemas: SpecSchemas) -> None:
    run = start_run(client, schemas, "sleep:5 never mind")
    cancelling = raw(client.beta.threads.runs.with_raw_response.cancel, run["id"], thread_id=run["thread_id"])
    schemas.check_response("cancelRun", cancelling)
    assert cancelling["status"] == "cancelling"
    final = wait_status(client, schemas, run, TERMINAL)
    assert final["status"] == "cancelled" and final["cancelled_at"] is not None


def test_hosted_tools_citation_and_image_match_schema(client: openai.OpenAI, schemas: SpecSchemas) -> None:
    """code_interpreter and file_search steps, a file_citation annotation and an image_file part."""
    run = start_run(client, schemas, "code_interpreter file_search image please")
    wait_status(client, schemas, run, TERMINAL)
    bodies = check_lists(client, schemas, run)
    step_tools = [call["type"] for step in bodies["listRunSteps"]["data"] if step["type"] == "tool_calls"
                  for call in step["step_details"]["tool_calls"]]
    assert sorted(step_tools) == ["code_interpreter", "file_search"]
    reply = bodies["listMessages"]["data"][0]
    assert [part["type"] for part in reply["content"]] == ["image_file", "text"]
    annotation = reply["content"][1]["text"]["annotations"][0]
    assert annotation["type"] == "file_citation"
    text = reply["content"][1]["text"]["value"]
    assert text[annotation["start_index"]:annotation["end_index"]] == annotation["text"]


def test_error_bodies_match_schema(client: openai.OpenAI, schemas: SpecSchemas) -> None:
    with pytest.raises(openai.NotFoundError) as not_found:
        client.beta.threads.retrieve("thread_missing")
    schemas.check("#/components/schemas/ErrorResponse", not_found.value.response.json())
    run = start_run(client, schemas, "sleep:5 busy")
    with pytest.raises(openai.BadRequestError) as busy:
        client.beta.threads.messages.create(run["thread_id"], role="user", content="again")
    schemas.check("#/components/schemas/ErrorResponse", busy.value.response.json())


def test_a_deleted_thread_is_gone_with_its_runs(client: openai.OpenAI, schemas: SpecSchemas) -> None:
    run = start_run(client, schemas, "hello")
    deleted = raw(client.beta.threads.with_raw_response.delete, run["thread_id"])
    schemas.check_response("deleteThread", deleted)
    assert deleted == {"id": run["thread_id"], "object": "thread.deleted", "deleted": True}
    for call in (lambda: client.beta.threads.runs.retrieve(run["id"], thread_id=run["thread_id"]),
                 lambda: client.beta.threads.runs.create(run["thread_id"], assistant_id="asst_default")):
        with pytest.raises(openai.NotFoundError) as lost:
            call()
        body = lost.value.response.json()
        schemas.check("#/components/schemas/ErrorResponse", body)
        assert body["error"]["message"] == f"No thread found with id '{run['thread_id']}'."
        assert body["error"]["type"] == "invalid_request_error"


def test_a_deleted_conversation_is_gone(client: openai.OpenAI, schemas: SpecSchemas) -> None:
    conversation = client.conversations.create()
    deleted = raw(client.conversations.with_raw_response.delete, conversation.id)
    schemas.check_response("deleteConversation", deleted)
    assert deleted == {"id": conversation.id, "object": "conversation.deleted", "deleted": True}
    with pytest.raises(openai.NotFoundError) as lost:
        client.responses.create(model="gpt-4o", input="hi", conversation=conversation.id, background=True)
    assert lost.value.response.json()["error"]["message"] == f"No conversation found with id '{conversation.id}'."


def test_a_too_long_message_and_an_unknown_route_are_answered_as_openai_does(
        make_emulator: Callable[..., EmulatorServer], schemas: SpecSchemas) -> None:  # noqa: F811 - the fixture
    client = openai_client(make_emulator(max_content_chars=10))
    thread = client.beta.threads.create()
    with pytest.raises(openai.BadRequestError) as too_long:
        client.beta.threads.runs.create(thread.id, assistant_id="asst_default",
                                        additional_messages=[{"role": "user", "content": "x" * 11}])
    error = too_long.value.response.json()["error"]
    schemas.check("#/components/schemas/ErrorResponse", {"error": error})
    assert error == {"message": "Invalid 'additional_messages[0].content': string too long. Expected a string "
                                "with maximum length 10, but got a string with length 11 instead.",
                     "type": "invalid_request_error", "param": "additional_messages[0].content",
                     "code": "string_above_max_length"}
    with pytest.raises(openai.BadRequestError) as too_long_input:
        client.responses.create(model="gpt-4o", input=[{"role": "user", "content": "y" * 12}])
    assert too_long_input.value.response.json()["error"]["param"] == "input[0].content"
    with pytest.raises(openai.NotFoundError) as no_route:
        client.post("/threads/x/nothing", cast_to=object, body={})
    assert no_route.value.response.json()["error"]["message"] == "Invalid URL (POST /v1/threads/x/nothing)"
