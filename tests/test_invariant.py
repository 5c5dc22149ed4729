"""The invariant under load, faults and duplicated deliveries: each event answered exactly
once, in send order per conversation, with no message appended twice."""

from __future__ import annotations

import time
import uuid
from typing import Any

import dramatiq
import pytest

from emulator import EmulatorConfig
from tests import threads
from tests.conftest import wait_until
from tests.invariants import check_exactly_once_in_order
from tests.stack import BACKENDS, Stack, running_stack


class DeliverTwice(dramatiq.Middleware):
    """Enqueues a copy of every message, as a redelivering broker would."""

    def after_enqueue(self, broker: dramatiq.Broker, message: dramatiq.Message[Any], delay: Any) -> None:
        if not message.options.get("duplicate"):
            copy = message.copy(message_id=str(uuid.uuid4()),
                                options={**message.options, "duplicate": True})
            broker.enqueue(copy, delay=delay)


def user_texts(stack: Stack, thread_id: str) -> list[str]:
    """The text of the thread's (or conversation's) user messages, in order."""
    return threads.user_texts(stack.emulator.base_url, stack.backend, thread_id)


def send_many(stack: Stack, conversations: int,
              per_conversation: int) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Send in rounds; before the next round, wait until most conversations have a run
    under way, so later messages meet active runs (coalescing) and later batches. Returns the
    event ids sent to each conversation, and each event's text."""
    sent: dict[str, list[str]] = {}
    contents: dict[str, str] = {}
    for round_ in range(per_conversation):
        for c in range(conversations):
            cid = f"conv-{c}"
            content = f"{cid} message {round_}"
            sent.setdefault(cid, []).append(stack.send(cid, content))
            contents[sent[cid][-1]] = content
        if round_ < per_conversation - 1:
            wait_until(lambda: _busy_or_answered(stack, sent) >= conversations // 2, 60,
                       what="runs under way")
    return sent, contents


def _busy_or_answered(stack: Stack, sent: dict[str, list[str]]) -> int:
    running = sum(1 for cid in sent if stack.run_id(cid))
    return running + len({e["conversation_id"] for e in stack.entries()})


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("flavour", ["strict", "loose"])
def test_every_actor_message_delivered_twice(redis_url: str, flavour: str, backend: str) -> None:
    """Duplicated deliveries of every actor's messages add no append, run or publish."""
    config = EmulatorConfig(run_seconds=0.3, flavour=flavour)
    with running_stack(redis_url, config, worker_tool_modules="tests.sample_tools",
                       assistant_backend=backend) as stack:
        stack.runtime.broker.add_middleware(DeliverTwice())
        sent = {f"dup-{i}": [stack.send(f"dup-{i}", text)] for i, text in enumerate(
            ["hello", 'call:add{"a": 1, "b": 2}', "call:get_weather{\"city\": \"Rome\"}", "twice"])}
        entries = stack.wait_answered([e for ids in sent.values() for e in ids], timeout=30)
        stack.wait_idle()
        check_exactly_once_in_order(stack.entries(), sent)
        assert all(e["type"] == "run.completed" for e in entries), entries
        tool_rounds = 2  # the two tool calls each take a second response (Responses)
        assert stack.runs_created() == len(sent) + (tool_rounds if backend == "responses" else 0)
        for entry in entries:
            assert len(user_texts(stack, entry["thread_id"])) == 1


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("flavour", ["strict", "loose"])
def test_200_conversations_x_3_messages_with_api_faults(redis_url: str, flavour: str, backend: str) -> None:
    """The acceptance run: 600 events, 5 % injected API faults, checked entry by entry."""
    config = EmulatorConfig(run_seconds=0.3, jitter=0.3, fault_429=0.02, fault_500=0.015,
                            fault_lost=0.01, fail_rate=0.005, seed=11, flavour=flavour)
    with running_stack(redis_url, config, assistant_backend=backend) as stack:
        started = time.monotonic()
        sent, contents = send_many(stack, conversations=200, per_conversation=3)
        all_ids = [e for ids in sent.values() for e in ids]
        stack.wait_answered(all_ids, timeout=240)
        wall = time.monotonic() - started
        stack.wait_idle(timeout=60)
        entries = stack.entries()
        check_exactly_once_in_order(entries, sent)
        faults = stack.emulator.stats()["faults_injected"]
        injected = sum(v for v in faults.values() if isinstance(v, int))
        assert injected > 0
        # No message appended twice, none lost, all in send order.
        thread_ids = {e["conversation_id"]: e["thread_id"] for e in entries if e["thread_id"]}
        for cid, ids in sent.items():
            assert user_texts(stack, thread_ids[cid]) == [contents[e] for e in ids], cid
        types = {}
        for e in entries:
            types[e["type"]] = types.get(e["type"], 0) + 1
        print(f"\n[{backend} {flavour}] events={len(all_ids)} entries={len(entries)} faults={faults} "
              f"types={types} wall={wall:.1f}s")
