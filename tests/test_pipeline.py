"""End to end: producer -> Redis -> Dramatiq worker -> emulator (real SDK over HTTP) -> stream."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.stack import Stack, running_stack
from worker.emulator import EmulatorConfig


@pytest.fixture
def stack(redis_url: str) -> Iterator[Stack]:
    with running_stack(redis_url, worker_tool_modules="tests.sample_tools",
                       tool_timeout_seconds=1.0) as s:
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
    assert stack.emulator.stats()["calls"].get("createRun") == 1


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
    expired = stack.send("g2", "expire:now")
    incomplete = stack.send("g3", "incomplete")
    f, x, i = stack.wait_answered([failed, expired, incomplete])
    assert (f["type"], f["error"]["code"]) == ("run.failed", "invalid_prompt")
    assert (x["type"], x["error"]["code"]) == ("run.expired", "expired")
    assert (i["type"], i["error"]["code"]) == ("run.incomplete", "max_completion_tokens")
    assert i["messages"], "the partial message of an incomplete run is published"


def test_retryable_run_failure_starts_a_new_run(stack: Stack) -> None:
    """A run failing with server_error is started again; the new run's reply is published."""
    event_id = stack.send("h1", "fail:server_error")
    (entry,) = stack.wait_answered([event_id])
    assert entry["type"] == "run.completed", entry
    assert stack.emulator.stats()["calls"]["createRun"] == 2


def test_retryable_run_failures_give_up_after_the_limit(stack: Stack) -> None:
    """When every run fails with server_error, RUN_RETRY_LIMIT new runs, then run.failed."""
    stack.emulator.configure(fail_rate=1.0)
    event_id = stack.send("h2", "hello")
    (entry,) = stack.wait_answered([event_id])
    assert entry["type"] == "run.failed"
    assert entry["error"]["code"] == "server_error"
    assert stack.emulator.stats()["calls"]["createRun"] == 1 + stack.settings.run_retry_limit


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


def test_unknown_assistant_is_rejected(stack: Stack) -> None:
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
    e0, ea, eb, ec = stack.wait_answered([first, a, b, c])
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
