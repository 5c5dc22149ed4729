"""Responses on servers that do not lock a conversation while a response runs (issue 13):
lost create answers never leave a user message (or its answer) in a conversation twice.

End to end, with real worker processes (`assistant-worker run`) against the emulator with
`conversation_lock=false`, with and without `list_responses`, and lost answers on creates;
then, in one process, a lost create whose response outlasts the wait: the worker creates
again, and the late copy of the first is deleted after publication (or counted when it
cannot be).
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
import redis
from prometheus_client import REGISTRY

from emulator import EmulatorConfig, EmulatorServer
from producers import Producer
from tests import threads
from tests.conftest import wait_until
from tests.stack import running_stack
from tests.worker_process import worker_process
from worker.settings import Settings

CONVERSATIONS, ROUNDS, PODS = 10, 3, 2
CAPABILITY = "aw:capability:{base}:{name}"


def _entries(client: redis.Redis) -> list[dict[str, Any]]:
    return [json.loads(fields[b"data"]) for _, fields in client.xrange("assistant:outbound")]


@pytest.mark.parametrize("lists", [False, True], ids=["no listing", "listing"])
def test_lost_creates_on_a_server_without_a_lock_are_answered_once_and_appended_once(
        redis_url: str, lists: bool) -> None:
    config = EmulatorConfig(run_seconds=0.3, conversation_lock=False, list_responses=lists, seed=13,
                            fault_lost=0.2, fault_operations=frozenset({"createResponse"}))
    with EmulatorServer(config, port=0) as emulator, contextlib.ExitStack() as pods:
        env = {"REDIS_URL": redis_url, "OPENAI_BASE_URL": emulator.base_url, "OPENAI_API_KEY": "sk-nolock",
               "ASSISTANT_BACKEND": "responses", "METRICS_PORT": "0", "WORKER_PROCESSES": "1",
               "WORKER_THREADS": "4", "LOG_LEVEL": "ERROR", "POLL_MAX_DELAY_SECONDS": "0.5",
               "POLL_INITIAL_DELAY_SECONDS": "0.1", "POLL_MIN_DELAY_SECONDS": "0.05"}
        for _ in range(PODS):
            pods.enter_context(worker_process(env))
        client = pods.enter_context(redis.Redis.from_url(redis_url))
        producer = pods.enter_context(Producer(Settings(redis_url=redis_url)))
        sent: dict[str, list[str]] = {}
        for n in range(ROUNDS):  # one message per conversation at a time: a create each
            for c in range(CONVERSATIONS):
                producer.send_user_message(f"nolock-{c}", f"message {n} of conversation {c}")
                sent.setdefault(f"nolock-{c}", []).append(f"message {n} of conversation {c}")
            wait_until(lambda n=n: len(_entries(client)) >= CONVERSATIONS * (n + 1), 40, 0.1,
                       what=f"round {n} answered")
        entries = _entries(client)
        faults = emulator.stats()["faults_injected"]
        calls = emulator.stats()["calls"]
        learnt = client.get(CAPABILITY.format(base=emulator.base_url, name="list_responses"))
        locks = client.get(CAPABILITY.format(base=emulator.base_url, name="conversation_lock"))
        conversations = {e["thread_id"]: (e["conversation_id"], threads.conversation_items(emulator.base_url,
                                                                                           e["thread_id"]))
                         for e in entries}
    assert faults.get("lost", 0) >= 2, faults  # the path under test was taken
    assert [e["type"] for e in entries] == ["run.completed"] * CONVERSATIONS * ROUNDS, entries
    assert sorted(len(e["event_ids"]) for e in entries) == [1] * CONVERSATIONS * ROUNDS
    assert len({e["event_ids"][0] for e in entries}) == CONVERSATIONS * ROUNDS, "each answered once"
    assert learnt is not None and json.loads(learnt)["value"] is lists
    if not lists:
        assert calls.get("listResponses", 0) <= PODS, calls  # probed once (per process at most)
        assert locks is not None and json.loads(locks)["value"] is False  # probed: it does not lock
    assert len(conversations) == CONVERSATIONS
    for conversation_id, items in conversations.values():
        texts = [threads.text_of(i) for i in items if i.get("role") == "user"]
        assert texts == sent[conversation_id], texts  # none twice, none missing, in order
        answers = [i for i in items if i.get("role") == "assistant"]
        assert len(answers) == len(texts), items


@pytest.mark.parametrize("deletes", ["succeed", "fail"])
def test_a_late_copy_of_a_create_that_outlasted_the_wait_is_deleted(redis_url: str, deletes: str) -> None:
    """The first create's answer is lost and its response runs 6 s; the wait (capped by
    RUN_TIMEOUT_SECONDS, 4 s) passes, the worker creates again and publishes that answer,
    then the first completes: its copy is deleted, or counted when the deletes fail."""
    config = EmulatorConfig(run_seconds=0.2, conversation_lock=False)
    with running_stack(redis_url, config, assistant_backend="responses", run_timeout_seconds=4.0) as stack:
        backend = stack.runtime.service().backend
        real_create, creates = backend.create_response, []

        def first_is_slow_and_lost(*args: Any, **kwargs: Any) -> Any:
            if "probe" in args[3]:  # the worker learning whether the server locks: not ours
                return real_create(*args, **kwargs)
            creates.append(1)
            if len(creates) > 1:
                return real_create(*args, **kwargs)
            stack.emulator.configure(run_seconds=6.0, fault_lost=1.0, fault_operations=["createResponse"])
            try:
                return real_create(*args, **kwargs)
            finally:
                stack.emulator.configure(run_seconds=0.2, fault_lost=0.0)

        backend.create_response = first_is_slow_and_lost  # type: ignore[method-assign]  # a fault injected into this instance
        left_before = REGISTRY.get_sample_value("assistant_duplicate_items_left_total") or 0.0
        (entry,) = stack.wait_answered([stack.send("late-1", "only once, please")], timeout=20)
        assert entry["type"] == "run.completed" and len(creates) == 2
        assert stack.runs_completed() == 1  # the first still runs
        if deletes == "fail":  # from now on (the faults' operations are one set)
            stack.emulator.configure(fault_500=1.0, fault_operations=["deleteConversationItem"])
        key = "aw:latecopy:late-1"
        assert stack.redis.exists(key), "watched from its publication"
        wait_until(lambda: stack.runs_completed() == 2, 10, what="the first response to complete late")
        wait_until(lambda: not stack.redis.exists(key), 15, 0.1, what="the watch to end")
        items = threads.conversation_items(stack.emulator.base_url, entry["thread_id"])
        left = (REGISTRY.get_sample_value("assistant_duplicate_items_left_total") or 0.0) - left_before
        stack.wait_idle()
    if deletes == "succeed":
        assert [(i["role"], threads.text_of(i)) for i in items] == [
            ("user", "only once, please"), ("assistant", entry["messages"][0]["text"])]
        assert left == 0
    else:
        assert [i["role"] for i in items] == ["user", "assistant"] * 2  # both copies stay...
        assert left == 2  # ...and what could not be deleted is counted


@pytest.mark.parametrize("lists", [False, True], ids=["no listing", "listing"])
def test_lost_tool_output_submissions_on_a_server_without_a_lock_are_answered_once(
        redis_url: str, lists: bool) -> None:
    """Every message needs a tool; a third of the responses' answers are lost, submissions
    of tool outputs among them: no call is answered twice, no reply comes twice."""
    config = EmulatorConfig(run_seconds=0.3, conversation_lock=False, list_responses=lists, seed=17,
                            fault_lost=0.3, fault_operations=frozenset({"createResponse"}))
    with EmulatorServer(config, port=0) as emulator, contextlib.ExitStack() as pods:
        env = {"REDIS_URL": redis_url, "OPENAI_BASE_URL": emulator.base_url, "OPENAI_API_KEY": "sk-nolock",
               "ASSISTANT_BACKEND": "responses", "METRICS_PORT": "0", "WORKER_PROCESSES": "1",
               "WORKER_THREADS": "4", "LOG_LEVEL": "ERROR", "POLL_MAX_DELAY_SECONDS": "0.5",
               "POLL_INITIAL_DELAY_SECONDS": "0.1", "POLL_MIN_DELAY_SECONDS": "0.05",
               "WORKER_TOOL_MODULES": "tests.sample_tools", "TOOL_TIMEOUT_SECONDS": "5"}
        pods.enter_context(worker_process(env))
        client = pods.enter_context(redis.Redis.from_url(redis_url))
        producer = pods.enter_context(Producer(Settings(redis_url=redis_url)))
        for c in range(CONVERSATIONS):
            producer.send_user_message(f"tools-{c}", f'call:add{{"a": {c}, "b": 1}}')
        wait_until(lambda: len(_entries(client)) >= CONVERSATIONS, 90, 0.2, what="every message answered")
        entries = _entries(client)
        faults = emulator.stats()["faults_injected"]
        conversations = [threads.conversation_items(emulator.base_url, e["thread_id"]) for e in entries]
    assert faults.get("lost", 0) >= 3, faults
    assert [e["type"] for e in entries] == ["run.completed"] * CONVERSATIONS, entries
    for items in conversations:
        answered = [i["call_id"] for i in items if i.get("type") == "function_call_output"]
        assert len(answered) == len(set(answered)) >= 1, items  # each call answered once
        assert [i.get("role") for i in items if i.get("type") == "message"] == ["user", "assistant"], items
