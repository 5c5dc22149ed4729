"""The emulator's behaviour: active-run rules, tool outputs, time, poll hints, faults, flavours, pagination."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from emulator import ConfigError, EmulatorConfig, EmulatorServer
from emulator.__main__ import build_parser, config_from
from emulator.model import plan_run, reply_text, solve_linear
from tests.emulator_fixtures import admin, emulator, make_emulator, openai_client, wait_until  # noqa: F401 - pytest fixtures

# openai 3.x marks beta.assistants.* deprecated with the bare message "deprecated"
pytestmark = pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")
TERMINAL = {"completed", "failed", "cancelled", "expired", "incomplete"}
MakeEmulator = Callable[..., EmulatorServer]


@pytest.fixture
def client(emulator: EmulatorServer) -> openai.OpenAI:  # noqa: F811 - the imported fixture
    return openai_client(emulator)


def new_thread(client: openai.OpenAI, *texts: str) -> str:
    thread = client.beta.threads.create()
    for text in texts:
        client.beta.threads.messages.create(thread.id, role="user", content=text)
    return thread.id


def run_on(client: openai.OpenAI, thread_id: str, **kwargs: Any) -> Any:
    kwargs.setdefault("assistant_id", "asst_default")
    return client.beta.threads.runs.create(thread_id, **kwargs)


def wait_run(client: openai.OpenAI, run: Any, statuses: set[str] = TERMINAL, timeout: float = 5.0) -> Any:
    def reached() -> Any:
        current = client.beta.threads.runs.retrieve(run.id, thread_id=run.thread_id)
        return current if current.status in statuses else None

    return wait_until(reached, timeout=timeout, what=f"{run.id} in {sorted(statuses)}")


def reply_texts(client: openai.OpenAI, run: Any) -> list[str]:
    messages = client.beta.threads.messages.list(run.thread_id, run_id=run.id, order="asc")
    parts = [part for m in messages.data if m.role == "assistant" for part in m.content]
    return [part.text.value for part in parts if part.type == "text"]


def http(srv: EmulatorServer, method: str, path: str, body: Any = None) -> tuple[int, dict[str, str], Any]:
    """A plain request to the emulator: status, headers, parsed JSON."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(srv.url + path, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())


# -- active runs and tool outputs ---------------------------------------------------------------


def test_message_create_rejected_while_run_active(client: openai.OpenAI) -> None:
    thread_id = new_thread(client, "sleep:5 hold on")
    run = run_on(client, thread_id)
    with pytest.raises(openai.BadRequestError) as info:
        client.beta.threads.messages.create(thread_id, role="user", content="more")
    assert info.value.body["message"] == f"Can't add messages to {thread_id} while a run {run.id} is active."
    assert info.value.body["type"] == "invalid_request_error"


def test_run_create_rejected_while_run_active(client: openai.OpenAI) -> None:
    thread_id = new_thread(client, "sleep:5 hold on")
    run = run_on(client, thread_id)
    with pytest.raises(openai.BadRequestError) as info:
        run_on(client, thread_id)
    assert info.value.body["message"] == f"Thread {thread_id} already has an active run {run.id}."


def test_run_create_rejects_unknown_assistant(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        run_on(client, new_thread(client, "hi"), assistant_id="asst_nope")
    assert info.value.body["param"] == "assistant_id"


def test_unknown_ids_are_404(client: openai.OpenAI) -> None:
    thread_id = new_thread(client)
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.retrieve("thread_nope")
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.runs.retrieve("run_nope", thread_id=thread_id)
    with pytest.raises(openai.NotFoundError):
        client.beta.assistants.retrieve("asst_nope")


def test_missing_auth_is_401(emulator: EmulatorServer) -> None:  # noqa: F811 - the imported fixture
    status, _, body = http(emulator, "GET", "/v1/assistants/asst_default")
    assert status == 401 and body["error"]["type"] == "invalid_request_error"


def test_unknown_request_field_rejected_in_strict(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.beta.threads.create(extra_body={"colour": "red"})
    assert "colour" in info.value.body["message"]


def test_submit_tool_outputs_must_cover_every_call(client: openai.OpenAI) -> None:
    """Two parallel calls: one output is refused, both are accepted, then the reply quotes them."""
    run = run_on(client, new_thread(client, 'call:get_weather{"city":"Oslo"} and call:get_time'))
    run = wait_run(client, run, {"requires_action"})
    calls = run.required_action.submit_tool_outputs.tool_calls
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("get_weather", {"city": "Oslo"}), ("get_time", {})]
    with pytest.raises(openai.BadRequestError) as info:
        client.beta.threads.runs.submit_tool_outputs(run.id, thread_id=run.thread_id,
                                                     tool_outputs=[{"tool_call_id": calls[0].id, "output": "1"}])
    expected = f"Expected tool outputs for call_ids {[c.id for c in calls]}, got {[calls[0].id]}"
    assert info.value.body["message"] == expected
    outputs = [{"tool_call_id": c.id, "output": f'"{c.function.name} ok"'} for c in calls]
    run = client.beta.threads.runs.submit_tool_outputs(run.id, thread_id=run.thread_id, tool_outputs=outputs)
    assert run.status == "queued"
    assert wait_run(client, run).status == "completed"
    assert reply_texts(client, run) == ['Tool results: get_weather -> "get_weather ok"; get_time -> "get_time ok"']
    with pytest.raises(openai.BadRequestError):  # not in requires_action any more
        client.beta.threads.runs.submit_tool_outputs(run.id, thread_id=run.thread_id, tool_outputs=outputs)


def test_requires_action_expires_at_deadline(make_emulator: MakeEmulator) -> None:  # noqa: F811 - the imported fixture
    """A call left unanswered past expires_at makes the run expired, with no last_error."""
    srv = make_emulator(action_ttl_seconds=0.6)
    client = openai_client(srv)
    run = wait_run(client, run_on(client, new_thread(client, "call:lookup")), {"requires_action"})
    assert run.expires_at is not None
    expired = wait_run(client, run)
    assert expired.status == "expired" and expired.last_error is None and expired.required_action is None
    finished = {r["id"]: r for r in srv.runs()}[run.id]["finished_at"]
    assert finished >= expired.expires_at - 1


def test_expire_rules(make_emulator: MakeEmulator) -> None:  # noqa: F811 - the imported fixture
    client = openai_client(make_emulator(expire_rule_seconds=0.5))
    slow = wait_run(client, run_on(client, new_thread(client, "expire")), {"requires_action"})
    assert slow.required_action.submit_tool_outputs.tool_calls[0].function.name == "slow_lookup"
    assert wait_run(client, slow).status == "expired"
    assert wait_run(client, run_on(client, new_thread(client, "expire:now"))).status == "expired"


# -- time progression ---------------------------------------------------------------------------


def test_run_goes_queued_in_progress_completed(emulator: EmulatorServer, client: openai.OpenAI) -> None:  # noqa: F811 - the imported fixture
    thread_id = new_thread(client, "sleep:0.6 I need to solve the equation 3x + 11 = 14. Can you help me?")
    run = run_on(client, thread_id)
    assert run.status == "queued" and run.started_at is None
    in_progress = wait_run(client, run, {"in_progress"})
    assert in_progress.started_at is not None
    done = wait_run(client, run)
    assert done.status == "completed" and done.completed_at >= done.started_at >= done.created_at
    assert done.usage is not None and done.usage.total_tokens > 0
    assert reply_texts(client, run) == [
        "To solve 3x + 11 = 14, subtract 11 from both sides: 3x = 3. Then divide by 3: x = 1."]
    record = {r["id"]: r for r in emulator.runs()}[run.id]
    assert 0.55 <= record["finished_at"] - record["created_at"] <= 0.65
    assert record["polls"] >= 2


def test_cancel_becomes_cancelled(client: openai.OpenAI) -> None:
    run = run_on(client, new_thread(client, "sleep:5 long"))
    cancelling = client.beta.threads.runs.cancel(run.id, thread_id=run.thread_id)
    assert cancelling.status == "cancelling"
    assert wait_run(client, run).status == "cancelled"
    with pytest.raises(openai.BadRequestError):
        client.beta.threads.runs.cancel(run.id, thread_id=run.thread_id)
    client.beta.threads.messages.create(run.thread_id, role="user", content="the thread is free again")


def test_jitter_spreads_durations(make_emulator: MakeEmulator) -> None:  # noqa: F811 - the imported fixture
    srv = make_emulator(run_seconds=0.2, jitter=0.5, seed=7)
    client = openai_client(srv)
    runs = [run_on(client, new_thread(client, f"hi {i}")) for i in range(6)]
    for run in runs:
        wait_run(client, run)
    durations = [r["finished_at"] - r["created_at"] for r in srv.runs()]
    assert all(0.1 - 1e-6 <= d <= 0.3 + 1e-6 for d in durations) and len(set(durations)) > 1


# -- model rules --------------------------------------------------------------------------------


def test_reply_echoes_the_batch_and_instruction_prefix(client: openai.OpenAI) -> None:
    thread_id = new_thread(client, "first", "second")
    run = run_on(client, thread_id, instructions="prefix:BOT be kind")
    assert run.instructions == "prefix:BOT be kind"
    wait_run(client, run)
    assert reply_texts(client, run) == ["BOT You said: first\nsecond"]


def test_twice_fail_and_incomplete_rules(client: openai.OpenAI) -> None:
    twice = wait_run(client, run_on(client, new_thread(client, "say it twice")))
    assert len(reply_texts(client, twice)) == 2
    failed = wait_run(client, run_on(client, new_thread(client, "fail:rate_limit_exceeded")))
    assert failed.status == "failed" and failed.last_error.code == "rate_limit_exceeded"
    odd = wait_run(client, run_on(client, new_thread(client, "fail:quota_gone")))
    assert odd.last_error.code == "server_error" and "quota_gone" in odd.last_error.message
    cut = wait_run(client, run_on(client, new_thread(client, "incomplete")))
    assert cut.status == "incomplete" and cut.incomplete_details.reason == "max_completion_tokens"
    partial = client.beta.threads.messages.list(cut.thread_id, run_id=cut.id).data[0]
    assert partial.status == "incomplete"


def test_model_rules_are_pure() -> None:
    assert solve_linear("solve 2x - 4 = 10 please") == (
        "To solve 2x - 4 = 10, add 4 to both sides: 2x = 14. Then divide by 2: x = 7.")
    assert solve_linear("max = 5") is None
    assert reply_text(["a", "b"]) == "You said: a\nb"
    assert plan_run(["call:a call:b{\"x\": 1}"], "").function_calls[1].arguments == '{"x":1}'
    assert plan_run(["expired things"], "").outcome == "completed"
    assert plan_run(["sleep:0.25"], "").duration == 0.25


def test_random_outcomes_from_fault_switch(make_emulator: MakeEmulator) -> None:  # noqa: F811 - the imported fixture
    srv = make_emulator(fail_rate=1.0)
    client = openai_client(srv)
    failed = wait_run(client, run_on(client, new_thread(client, "hello")))
    assert failed.status == "failed" and failed.last_error.code == "server_error"
    srv.configure(fail_rate=0.0, expire_rate=1.0)
    assert wait_run(client, run_on(client, new_thread(client, "hello"))).status == "expired"


# -- additional messages and pagination ---------------------------------------------------------


def test_additional_messages_join_the_run_atomically(client: openai.OpenAI) -> None:
    thread_id = new_thread(client, "earlier")
    run = run_on(client, thread_id, additional_messages=[
        {"role": "user", "content": "extra one", "metadata": {"event_id": "e1"}},
        {"role": "user", "content": [{"type": "text", "text": "extra two"}]},
    ])
    messages = client.beta.threads.messages.list(thread_id, order="asc").data
    assert [(m.role, m.run_id) for m in messages] == [("user", None), ("user", run.id), ("user", run.id)]
    assert messages[1].metadata == {"event_id": "e1"}
    wait_run(client, run)
    assert reply_texts(client, run) == ["You said: earlier\nextra one\nextra two"]


def test_invalid_additional_message_adds_nothing(client: openai.OpenAI) -> None:
    thread_id = new_thread(client)
    with pytest.raises(openai.BadRequestError):
        bad = [{"role": "user", "content": "ok"}, {"role": "robot", "content": "x"}]
        run_on(client, thread_id, additional_messages=bad)
    assert client.beta.threads.messages.list(thread_id).data == []
    assert client.beta.threads.runs.list(thread_id).data == []


def test_message_pagination_order_cursors_and_run_filter(client: openai.OpenAI) -> None:
    thread_id = new_thread(client, "m1", "m2", "m3", "m4", "m5")
    ids = [m.id for m in client.beta.threads.messages.list(thread_id, order="asc").data]
    page = client.beta.threads.messages.list(thread_id, order="asc", limit=2)
    assert [m.id for m in page.data] == ids[:2] and page.has_more
    page = client.beta.threads.messages.list(thread_id, order="asc", limit=2, after=ids[1])
    assert [m.id for m in page.data] == ids[2:4] and page.has_more
    page = client.beta.threads.messages.list(thread_id, limit=2)
    assert [m.id for m in page.data] == [ids[4], ids[3]]
    page = client.beta.threads.messages.list(thread_id, limit=2, after=ids[3])
    assert [m.id for m in page.data] == [ids[2], ids[1]]
    page = client.beta.threads.messages.list(thread_id, limit=2, before=ids[1])
    assert [m.id for m in page.data] == [ids[3], ids[2]]
    assert [m.id for m in client.beta.threads.messages.list(thread_id, order="asc", limit=2)] == ids  # auto-paging
    run = wait_run(client, run_on(client, thread_id))
    assert client.beta.threads.messages.list(thread_id).data[0].run_id == run.id
    by_run = client.beta.threads.messages.list(thread_id, run_id=run.id, order="asc").data
    assert [m.role for m in by_run] == ["assistant"]
    with pytest.raises(openai.BadRequestError):
        client.beta.threads.messages.list(thread_id, limit=101)


# -- poll hints ---------------------------------------------------------------------------------


def test_poll_hint_header_on_and_off(emulator: EmulatorServer, client: openai.OpenAI) -> None:  # noqa: F811 - the imported fixture
    run = run_on(client, new_thread(client, "sleep:2 wait"))
    hint = client.beta.threads.runs.with_raw_response.retrieve(run.id, thread_id=run.thread_id).headers
    assert 10 <= int(hint["openai-poll-after-ms"]) <= 1000
    emulator.configure(poll_hint_ms=500)
    hint = client.beta.threads.runs.with_raw_response.retrieve(run.id, thread_id=run.thread_id).headers
    assert hint["openai-poll-after-ms"] == "500"
    emulator.configure(poll_hint=False)
    hint = client.beta.threads.runs.with_raw_response.retrieve(run.id, thread_id=run.thread_id).headers
    assert "openai-poll-after-ms" not in hint


def test_no_poll_hint_once_finished(client: openai.OpenAI) -> None:
    run = wait_run(client, run_on(client, new_thread(client, "hi")))
    headers = client.beta.threads.runs.with_raw_response.retrieve(run.id, thread_id=run.thread_id).headers
    assert "openai-poll-after-ms" not in headers


# -- faults -------------------------------------------------------------------------------------


def test_fault_429_carries_retry_headers(emulator: EmulatorServer, client: openai.OpenAI) -> None:  # noqa: F811 - the imported fixture
    emulator.configure(fault_429=1.0, fault_operations=["createThread"])
    with pytest.raises(openai.RateLimitError) as info:
        client.beta.threads.create()
    assert info.value.response.headers["retry-after-ms"] == "100"
    assert info.value.body["code"] == "rate_limit_exceeded"
    client.beta.assistants.retrieve("asst_default")  # other operations are untouched
    stats = emulator.stats()
    assert stats["faults_injected"]["429"] == 1 and stats["objects"]["threads"] == 0


def test_fault_500_does_not_apply(emulator: EmulatorServer, client: openai.OpenAI) -> None:  # noqa: F811 - the imported fixture
    thread_id = new_thread(client)
    emulator.configure(fault_500=1.0)
    with pytest.raises(openai.InternalServerError):
        client.beta.threads.messages.create(thread_id, role="user", content="lost?")
    emulator.configure(fault_500=0.0)
    assert client.beta.threads.messages.list(thread_id).data == []


def test_fault_lost_applies_the_change(emulator: EmulatorServer, client: openai.OpenAI) -> None:  # noqa: F811 - the imported fixture
    """A lost response still applied the request; an SDK retry then applies it twice."""
    thread_id = new_thread(client)
    emulator.configure(fault_lost=1.0, fault_operations="createMessage", fault_retry_after_ms=0)
    with pytest.raises(openai.InternalServerError):
        client.beta.threads.messages.create(thread_id, role="user", content="once")
    assert len(client.beta.threads.messages.list(thread_id).data) == 1
    retrying = openai_client(emulator, max_retries=1)
    with pytest.raises(openai.InternalServerError):
        retrying.beta.threads.messages.create(thread_id, role="user", content="twice")
    texts = [m.content[0].text.value for m in client.beta.threads.messages.list(thread_id).data]
    assert texts == ["twice", "twice", "once"]
    assert emulator.stats()["faults_injected"]["lost"] == 3


# -- loose flavour ------------------------------------------------------------------------------


def test_loose_flavour_differences(make_emulator: MakeEmulator) -> None:  # noqa: F811 - the imported fixture
    srv = make_emulator(flavour="loose")
    client = openai_client(srv)
    thread = json.loads(client.beta.threads.with_raw_response.create().text)
    assert re.fullmatch(r"[0-9a-f]{32}", thread["id"]) and isinstance(thread["created_at"], float)
    assert "metadata" not in thread
    client.beta.threads.messages.create(thread["id"], role="user", content="hello loose")
    run = json.loads(client.beta.threads.runs.with_raw_response.create(thread["id"], assistant_id="asst_default").text)
    assert "usage" not in run and "incomplete_details" not in run and "last_error" not in run
    with pytest.raises(openai.ConflictError):
        client.beta.threads.messages.create(thread["id"], role="user", content="too soon")
    wait_until(lambda: client.beta.threads.runs.retrieve(run["id"], thread_id=thread["id"]).status == "completed")
    messages = json.loads(client.beta.threads.messages.with_raw_response.list(thread["id"], order="asc").text)["data"]
    assert messages[0]["content"] == "hello loose"
    assert messages[1]["content"][0]["text"]["value"] == "You said: hello loose"
    finished = json.loads(client.beta.threads.runs.with_raw_response.retrieve(run["id"], thread_id=thread["id"]).text)
    assert finished["usage"]["total_tokens"] > 0


# -- admin, config, CLI -------------------------------------------------------------------------


def test_admin_endpoints(emulator: EmulatorServer, client: openai.OpenAI) -> None:  # noqa: F811 - the imported fixture
    run = wait_run(client, run_on(client, new_thread(client, "hi")))
    stats = admin(emulator, "stats")
    assert stats["calls"]["createRun"] == 1 and stats["calls"]["getRun"] >= 1
    assert stats["runs"] == {"total": 1, "by_status": {"completed": 1}}
    [record] = admin(emulator, "runs")
    assert record["id"] == run.id and record["polls"] == stats["calls"]["getRun"] and record["finished_at"]
    assert admin(emulator, "config", {"run_seconds": 0.5, "fault_operations": ["getRun"]})["run_seconds"] == 0.5
    assert emulator.config.fault_operations == frozenset({"getRun"})
    status, _, body = http(emulator, "POST", "/_emulator/config", {"no_such_field": 1})
    assert status == 400 and "no_such_field" in body["error"]["message"]
    assert admin(emulator, "reset", {}) == {"ok": True}
    assert admin(emulator, "stats")["runs"]["total"] == 0
    assert [a.id for a in client.beta.assistants.list()] == ["asst_default"]


def test_config_from_env_and_flags() -> None:
    env = {"EMULATOR_RUN_SECONDS": "0.5", "EMULATOR_POLL_HINT": "off", "EMULATOR_FLAVOUR": "loose",
           "EMULATOR_FAULT_429": "0.1"}
    config = config_from(build_parser().parse_args(["--jitter", "0.3", "--fault-500", "0.2"]), env)
    assert (config.run_seconds, config.poll_hint, config.flavour) == (0.5, False, "loose")
    assert (config.jitter, config.fault_429, config.fault_500) == (0.3, 0.1, 0.2)
    assert config_from(build_parser().parse_args(["--poll-hint"]), {"EMULATOR_POLL_HINT": "0"}).poll_hint is True
    with pytest.raises(ConfigError):
        EmulatorConfig(flavour="odd")
    with pytest.raises(ConfigError):
        EmulatorConfig().replace(fail_rate="2")


@pytest.mark.parametrize("command", [
    [str(Path(sys.executable).parent / "assistant-emulator")],  # the Procfile's line, the installed script
    [sys.executable, "-m", "emulator"],
], ids=["assistant-emulator", "python-m-emulator"])
def test_cli_serves_until_sigterm(command: list[str], tmp_path: Path) -> None:
    env = {**os.environ, "EMULATOR_RUN_SECONDS": "0.1"}
    # From elsewhere than the repository: the installed package, not the working directory.
    proc = subprocess.Popen([*command, "--port", "0"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.fullmatch(r"emulator listening on (http://127\.0\.0\.1:\d+/v1)\n", line)
        assert match, line
        client = openai.OpenAI(base_url=match.group(1), api_key="test", max_retries=0)
        assert client.beta.assistants.retrieve("asst_default").name == "Math Tutor"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, errors = proc.communicate(timeout=10)
    assert proc.returncode == 0, errors


def test_the_worker_never_imports_the_emulator() -> None:
    """The emulator is a development tool beside the worker: importing every worker module (but
    `worker.demo`, which starts one for the demo) loads nothing of it."""
    code = ("import importlib, pkgutil, sys, worker\n"
            "for m in pkgutil.walk_packages(worker.__path__, 'worker.'):\n"
            "    if m.name != 'worker.demo':\n"
            "        importlib.import_module(m.name)\n"
            "print(sorted(n for n in sys.modules if n.partition('.')[0] == 'emulator'))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
