"""End to end on both backends: a real worker against the emulator writes each conversation's
delta stream (contract, "Deltas"): seq increasing per batch, the deltas of every run.completed
entry's messages joining to their text, exactly one run.ended per run.completed entry."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.invariants import delta_violations
from tests.stack import BACKENDS, Stack, running_stack


@pytest.fixture(params=BACKENDS)
def stack(request: pytest.FixtureRequest, redis_url: str) -> Iterator[Stack]:
    with running_stack(redis_url, worker_tool_modules="tests.sample_tools",
                       tool_timeout_seconds=1.0, assistant_backend=request.param) as s:
        yield s


def test_polled_runs_write_deltas_that_add_up_to_their_answers(stack: Stack) -> None:
    sent = {
        "plain": stack.send("plain", "hello there"),
        "twice": stack.send("twice", "solve 3x + 11 = 14 twice"),
        "tools": stack.send("tools", 'call:get_weather{"city": "Paris"}'),
        "slow": stack.send("slow", "sleep:60"),
    }
    stack.wait_until_run_started("slow")
    assert stack.producer.cancel_conversation("slow")
    later = stack.send("plain", "and again")
    entries = stack.wait_answered([*sent.values(), later])
    stack.wait_idle()
    deltas = {cid: stack.runtime.store.deltas.read(cid) for cid in sent}
    assert delta_violations(stack.entries(), deltas) == []
    assert [e["type"] for e in entries] == ["run.completed"] * 3 + ["run.cancelled", "run.completed"]
    assert "tool.calls" in [d["type"] for d in deltas["tools"]]
    assert len({d["message_id"] for d in deltas["twice"] if d["type"] == "message.delta"}) == \
        len(entries[1]["messages"]) >= 2
    slow_ended = [d for d in deltas["slow"] if d["type"] == "run.ended"]
    assert [d["outcome"] for d in slow_ended] == ["run.cancelled"]
    ttl = stack.redis.ttl(stack.runtime.store.deltas.key("plain"))
    assert 0 < ttl <= stack.settings.delta_stream_ttl_seconds


def test_deltas_off_writes_no_stream(redis_url: str) -> None:
    with running_stack(redis_url, deltas="off") as stack:
        event = stack.send("quiet", "hello")
        stack.wait_answered([event])
        stack.wait_idle()
        assert stack.redis.keys(stack.settings.delta_stream_prefix + "*") == []
