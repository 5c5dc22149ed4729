"""End to end: producer -> Redis -> Dramatiq worker -> emulator (real SDK over HTTP) -> stream."""

from __future__ import annotations

import gc
import socket
import time
from collections.abc import Iterator

import pytest

from emulator import EmulatorConfig
from tests import threads
from tests.conftest import wait_until
from tests.stack import BACKENDS, Stack, running_stack
from worker.polling import HISTORY, SHARE_EVERY


@pytest.fixture(params=BACKENDS)
def stack(request: pytest.FixtureRequest, redis_url: str) -> Iterator[Stack]:
    with running_stack(redis_url, worker_tool_modules="tests.sample_tools",
                       tool_timeout_seconds=1.0, assistant_backend=request.param) as s:
        yield s


def test_seed_flow_publishes_the_assistant_reply(stack: Stack) -> None:
    """The seed's math question gets the run's assistant message, with ids and timings."""
    event_id = stack.send("user-42", "I need to solve the equation `3x + 11 = 14`. Can you help me?",
                          metadata={"chat": "web"})
    (entry,) = stack.wait_answered([event_id])
    assert entry["type"] == "run.completed"
    assert entry["conversation_id"] == "user-42"
    assert entry["event_ids"] == [event_id]
    assert entry["thread_id"] and entry["run_id"]
    assert entry["error"] is None
    assert entry["metadata"] == {"chat": "web"}
    assert [m["role"] for m in entry["messages"]] == ["assistant"]
    assert "x = 1" in entry["messages"][0]["text"]
    assert entry["usage"]["total_tokens"] > 0
    assert entry["timings"]["total_ms"] >= entry["timings"]["run_ms"] > 0


def test_one_thread_per_conversation_across_batches(stack: Stack) -> None:
    """Two consecutive messages of a conversation reuse its thread; other conversations don't."""
    first = stack.send("alice", "hello")
    (a1,) = stack.wait_answered([first])
    second = stack.send("alice", "again")
    other = stack.send("bob", "hi")
    a2, b1 = stack.wait_answered([second, other])
    assert a1["thread_id"] == a2["thread_id"] != b1["thread_id"]
    assert a1["run_id"] != a2["run_id"]


def test_rapid_messages_are_coalesced_in_send_order(stack: Stack) -> None:
    """Messages sent while a run is active are answered together by the next run, in order."""
    stack.emulator.configure(run_seconds=0.5)
    first = stack.send("carol", "one")
    stack.wait_until_run_started("carol")
    rest = [stack.send("carol", text) for text in ("two", "three", "four")]
    entries = stack.wait_answered([first, *rest])
    assert entries[0]["event_ids"] == [first]
    assert entries[1]["event_ids"] == rest
    assert entries[1]["messages"][0]["text"].index("two") < entries[1]["messages"][0]["text"].index("four")


def test_same_event_id_twice_is_answered_once(stack: Stack) -> None:
    a = stack.send("dave", "first content", event_id="evt-1")
    b = stack.send("dave", "second content", event_id="evt-1")
    assert a == b == "evt-1"
    (entry,) = stack.wait_answered(["evt-1"])
    stack.wait_idle()
    assert len(stack.answered()["evt-1"]) == 1
    assert "first content" in entry["messages"][0]["text"]
    assert stack.runs_created() == 1


def test_single_and_parallel_tool_calls(stack: Stack) -> None:
    one = stack.send("erin", 'call:get_weather{"city": "Paris"}')
    (e1,) = stack.wait_answered([one])
    assert e1["type"] == "run.completed", e1
    assert "Paris" in e1["messages"][0]["text"]
    two = stack.send("erin", 'call:add{"a": 2, "b": 3} call:get_weather{"city": "Oslo"}')
    (e2,) = stack.wait_answered([two])
    assert e2["type"] == "run.completed", e2
    text = e2["messages"][0]["text"]
    assert "5" in text and "Oslo" in text


@pytest.mark.parametrize("content, expected", [
    ("call:no_such_tool", "unknown_tool"),
    ('call:add{"a": "x"}', "invalid_arguments"),
    ("call:explode", "the tool blew up"),
    ('call:slow_lookup{"seconds": 3}', "timeout"),
])
def test_tool_failures_become_error_outputs(stack: Stack, content: str, expected: str) -> None:
    """Unknown, invalid, raising and timing-out tools give the model an error, not a crash."""
    event_id = stack.send("frank", content)
    (entry,) = stack.wait_answered([event_id])
    assert entry["type"] == "run.completed", entry
    assert expected in entry["messages"][0]["text"]


def test_failed_expired_and_incomplete_runs_are_published(stack: Stack) -> None:
    failed = stack.send("g1", "fail:invalid_prompt")
    incomplete = stack.send("g3", "incomplete")
    f, i = stack.wait_answered([failed, incomplete])
    assert (f["type"], f["error"]["code"]) == ("run.failed", "invalid_prompt")
    limit = {"assistants": "max_completion_tokens", "responses": "max_output_tokens"}[stack.backend]
    assert (i["type"], i["error"]["code"]) == ("run.incomplete", limit)
    assert i["messages"], "the partial message of an incomplete run is published"
    if stack.backend == "assistants":  # responses do not expire
        (x,) = stack.wait_answered([stack.send("g2", "expire:now")])
        assert (x["type"], x["error"]["code"]) == ("run.expired", "expired")


def test_retryable_run_failure_starts_a_new_run(stack: Stack) -> None:
    """A run failing with server_error is started again; the new run's reply is published
    (with the user's message on the thread once: the new run does not send it again on
    Assistants; on Responses a failed response added nothing, so it is sent again)."""
    stack.emulator.configure(fail_rate=1.0, run_seconds=0.3)
    event_id = stack.send("h1", "try me again")
    wait_until(lambda: any(r["status"] == "failed" for r in stack.emulator.runs()), 10, what="a failed run")
    stack.emulator.configure(fail_rate=0.0)
    (entry,) = stack.wait_answered([event_id])
    assert entry["type"] == "run.completed", entry
    assert stack.runs_created() == 2
    assert threads.user_texts(stack.emulator.base_url, stack.backend, entry["thread_id"]) == ["try me again"]


def test_retryable_run_failures_give_up_after_the_limit(stack: Stack) -> None:
    """When every run fails with server_error, RUN_RETRY_LIMIT new runs, then run.failed."""
    stack.emulator.configure(fail_rate=1.0)
    event_id = stack.send("h2", "hello")
    (entry,) = stack.wait_answered([event_id])
    assert entry["type"] == "run.failed"
    assert entry["error"]["code"] == "server_error"
    assert stack.runs_created() == 1 + stack.settings.run_retry_limit


def test_cancel_publishes_at_once_and_later_events_run(stack: Stack) -> None:
    stack.emulator.configure(run_seconds=30)
    first = stack.send("ivy", "a long question")
    stack.wait_until_run_started("ivy")
    second = stack.send("ivy", "another one")
    stack.producer.cancel_conversation("ivy")
    (cancelled,) = stack.wait_answered([first], timeout=10)
    assert cancelled["type"] == "run.cancelled"
    assert cancelled["error"]["code"] == "cancelled"
    stack.emulator.configure(run_seconds=0.2)
    (after,) = stack.wait_answered([second], timeout=20)
    assert after["type"] == "run.completed"


def test_cancel_of_an_idle_conversation_publishes_nothing(stack: Stack) -> None:
    stack.producer.cancel_conversation("nobody")
    stack.producer.cancel_conversation("nobody")
    stack.wait_idle()
    assert stack.entries() == []


def test_run_timeout_cancels_and_publishes_timeout(redis_url: str) -> None:
    with running_stack(redis_url, EmulatorConfig(run_seconds=30), run_timeout_seconds=0.5) as stack:
        event_id = stack.send("jay", "slow")
        (entry,) = stack.wait_answered([event_id], timeout=10)
        assert entry["type"] == "run.cancelled"
        assert entry["error"]["code"] == "timeout"
        stack.wait_idle(timeout=10)
        statuses = {r["status"] for r in stack.emulator.runs()}
        assert statuses == {"cancelled"}


def test_http_429_and_500_are_retried(redis_url: str) -> None:
    config = EmulatorConfig(run_seconds=0.1, fault_429=0.15, fault_500=0.1, seed=7)
    with running_stack(redis_url, config) as stack:
        ids = [stack.send(f"k{i}", f"message {i}") for i in range(10)]
        entries = stack.wait_answered(ids, timeout=60)
        assert [e["type"] for e in entries] == ["run.completed"] * 10, entries
        faults = stack.emulator.stats()["faults_injected"]
        assert faults.get("429", 0) + faults.get("500", 0) > 0, faults


def test_invalid_event_in_the_inbox_is_rejected_and_dead_lettered(stack: Stack) -> None:
    """An event that reaches the worker invalid is rejected; the conversation goes on."""
    stack.redis.rpush("aw:inbox:lara", b"{not json", b'{"event_id": "e-big", "conversation_id": "lara"}')
    stack.redis.zadd("aw:schedule", {"lara": 0})
    good = stack.send("lara", "still fine")
    (entry,) = stack.wait_answered([good])
    assert entry["type"] == "run.completed"
    rejected = [e for e in stack.entries() if e["type"] == "event.rejected"]
    assert len(rejected) == 2
    assert rejected[0]["event_ids"] == [] and "JSON" in rejected[0]["error"]["message"]
    assert rejected[1]["event_ids"] == ["e-big"] and rejected[1]["error"]["code"] == "invalid_event"
    assert stack.redis.xlen("aw:deadletter") == 2


def test_unknown_assistant_is_rejected(redis_url: str) -> None:
    """Assistants only: the Responses backend has no assistants (an event's assistant_id is
    ignored there; RESPONSES_MODEL and the registered tools are used)."""
    with running_stack(redis_url) as stack:
        event_id = stack.send("mia", "hello", assistant_id="asst_nope")
        (entry,) = stack.wait_answered([event_id])
        assert entry["type"] == "event.rejected"
        assert "assistant" in entry["error"]["message"]
        assert stack.redis.xlen("aw:deadletter") == 1


def test_api_key_never_appears_in_outbound_events(stack: Stack) -> None:
    event_id = stack.send("nia", "fail:invalid_prompt")
    stack.wait_answered([event_id])
    raw = b"".join(f[b"data"] for _, f in stack.redis.xrange(stack.settings.outbound_stream))
    assert b"sk-test-secret" not in raw


def test_hosted_tools_citations_and_images_with_run_steps(redis_url: str) -> None:
    """Runs using code interpreter and file search are followed like any other; citations and
    image parts reach the outbound message; INCLUDE_RUN_STEPS lists the steps."""
    with running_stack(redis_url, include_run_steps=True) as stack:
        code = stack.send("o1", "code_interpreter please")
        search = stack.send("o2", "file_search the docs")
        image = stack.send("o3", "image of a graph")
        c, s, i = stack.wait_answered([code, search, image])
        assert c["type"] == s["type"] == i["type"] == "run.completed"
        assert any(call["type"] == "code_interpreter" for step in c["steps"] for call in step["tool_calls"])
        assert any(call["type"] == "file_search" for step in s["steps"] for call in step["tool_calls"])
        assert any(a.get("type") == "file_citation" for a in s["messages"][0]["annotations"])
        assert {"type": "image_file", "file_id": "file-img123"} in i["messages"][0]["annotations"]
        assert c["steps"][-1]["type"] == "message_creation"


def test_two_assistant_messages_are_published_oldest_first(stack: Stack) -> None:
    event_id = stack.send("p1", "twice")
    (entry,) = stack.wait_answered([event_id])
    assert len(entry["messages"]) == 2
    assert entry["messages"][0]["created_at"] <= entry["messages"][1]["created_at"]


def test_per_event_instructions_and_batch_boundaries(stack: Stack) -> None:
    """Instructions reach the run; events with other instructions form their own batch."""
    stack.emulator.configure(run_seconds=0.4)
    first = stack.send("q1", "start")
    stack.wait_until_run_started("q1")
    a = stack.send("q1", "plain one")
    b = stack.send("q1", "styled", instructions="prefix:Ahoy")
    c = stack.send("q1", "plain two")
    _, ea, eb, ec = stack.wait_answered([first, a, b, c])
    assert [ea["event_ids"], eb["event_ids"], ec["event_ids"]] == [[a], [b], [c]]
    assert eb["messages"][0]["text"].startswith("Ahoy")
    assert not ec["messages"][0]["text"].startswith("Ahoy")


def test_requires_action_not_answered_in_time_is_published_expired(redis_url: str) -> None:
    with running_stack(redis_url, worker_tool_modules="tests.sample_tools",
                       tool_timeout_seconds=5.0) as stack:
        event_id = stack.send("r1", "expire")  # asks for slow_lookup, expires after 1 s
        (entry,) = stack.wait_answered([event_id], timeout=20)
        assert entry["type"] == "run.expired"
        assert entry["error"]["code"] == "expired"


def test_many_conversations_each_in_send_order(stack: Stack) -> None:
    sent: dict[str, list[str]] = {}
    for round_ in range(4):
        for c in range(25):
            sent.setdefault(f"s{c}", []).append(stack.send(f"s{c}", f"r{round_}"))
    stack.wait_answered([e for ids in sent.values() for e in ids], timeout=60)
    from tests.invariants import check_exactly_once_in_order

    check_exactly_once_in_order(stack.entries(), sent)


def test_logs_carry_ids_but_never_the_api_key_or_message_text(
        redis_url: str, capfd: pytest.CaptureFixture[str]) -> None:
    with running_stack(redis_url, log_level="DEBUG", log_format="json") as stack:
        event_id = stack.send("t1", "a private question")
        stack.wait_answered([event_id])
        stack.wait_idle()
    out, err = capfd.readouterr()
    logs = out + err
    assert '"event": "published"' in logs and event_id in logs
    assert "sk-test-secret" not in logs
    assert "a private question" not in logs


def test_run_durations_are_shared_so_that_a_new_process_plans_its_polls_at_once(redis_url: str) -> None:
    """Each process hands the run durations it sees to Redis; a process that starts later
    (a deploy, a scale-out) is seeded with them: it knows the window before its first run."""
    with running_stack(redis_url, EmulatorConfig(run_seconds=0.5)) as first:
        sent = [first.send(f"share-{n}", "hello") for n in range(SHARE_EVERY)]
        first.wait_answered(sent)
        wait_until(lambda: len(first.runtime.store.history.recent(HISTORY)) >= SHARE_EVERY, 10)
        shared = first.runtime.store.history.recent(HISTORY)
        assert all(0.3 < d < 5.0 for d in shared), shared
    with running_stack(redis_url) as later:
        window = later.runtime.service().planner.window()
        assert window is not None and 0.3 < window[0] < 5.0, window


def test_a_server_without_create_thread_and_run_gets_a_thread_then_a_run(redis_url: str) -> None:
    """Some Assistants-compatible servers have no createThreadAndRun (404, an unknown route):
    the worker creates the thread, then the run, and does not try the one call again."""
    with running_stack(redis_url, EmulatorConfig(run_seconds=0.2, flavour="loose")) as stack:
        entries = stack.wait_answered([stack.send("no-one-call-0", "hello 0")], timeout=30)
        sent = [stack.send(f"no-one-call-{n}", f"hello {n}") for n in (1, 2)]
        entries += stack.wait_answered(sent, timeout=30)
        assert all(e["type"] == "run.completed" for e in entries), entries
        calls = stack.emulator.stats()["calls"]
        assert calls["createThreadAndRun"] == 1
        assert calls["createThread"] == calls["createRun"] == 3
        for entry in entries:
            assert len(threads.user_texts(stack.emulator.base_url, "assistants", entry["thread_id"])) == 1


def test_steps_sent_by_the_process_wake_its_idle_consumers(redis_url: str) -> None:
    """An idle Dramatiq consumer looks for messages every WORKER_IDLE_POLL_MS (here 4 s),
    but a message this process sends (its scheduler's claims) wakes it at once: a short
    run's reply, several steps, comes before a single idle wait would end."""
    with running_stack(redis_url, EmulatorConfig(run_seconds=0.1), idle_poll_ms=4000) as stack:
        stack.wait_answered([stack.send("wake-0", "first")], timeout=20)  # consumers now idle
        started = time.monotonic()
        stack.wait_answered([stack.send("wake-1", "hello")], timeout=20)
        assert time.monotonic() - started < 3.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_stopped_worker_leaves_no_connection_open(redis_url: str, backend: str) -> None:
    """Shutdown closes every Redis and API connection of the process, instead of leaving
    sockets for the garbage collector (which warns, and in a pod holds them open)."""
    before = _open_sockets()
    with running_stack(redis_url, assistant_backend=backend,
                       worker_tool_modules="tests.sample_tools") as stack:
        ids = [stack.send(f"close-{n}", 'call:get_weather{"city": "Oslo"}' if n % 2 else "hi")
               for n in range(6)]
        stack.wait_answered(ids)
        assert len(_open_sockets() - before) > 2  # the check below can see connections
    gc.collect()
    assert _open_sockets() - before == set()


def _open_sockets() -> set[int]:
    return {id(s) for s in gc.get_objects() if isinstance(s, socket.socket) and s.fileno() != -1}
