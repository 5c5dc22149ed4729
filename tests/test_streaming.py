"""Runs followed by their event streams, end to end (a real worker, Redis, and the emulator
streaming over HTTP): the text reaches the delta stream as the model writes it, the run's
end is acted on without a poll, tool rounds stream too, and what breaks a stream (a cut, a
server that does not stream, a reader that died) keeps the delta invariants: seq strictly
increasing, and a message's deltas joining to its final text."""

from __future__ import annotations

from typing import Any

import pytest

from emulator import EmulatorConfig
from tests.conftest import wait_until
from tests.invariants import delta_violations
from tests.stack import BACKENDS, Stack, running_stack
from worker import keys, metrics
from worker.capabilities import Capability, CapabilityStore

# The emulator's operationId of a status read, per backend.
POLL = {"assistants": "getRun", "responses": "getResponse"}


def deltas_of(stack: Stack, conversation_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    return {cid: stack.runtime.store.deltas.read(cid) for cid in conversation_ids}


def texts(stream: list[dict[str, Any]]) -> list[str]:
    return [d["text"] for d in stream if d["type"] == "message.delta"]


def counter(metric: Any, **labels: str) -> float:
    return float((metric.labels(**labels) if labels else metric)._value.get())


def capability(stack: Stack) -> bool | None:
    known = CapabilityStore.from_settings(stack.settings, stack.runtime.store.redis)
    return known.get(Capability.STREAM).value


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_reply_streams_in_many_deltas_and_its_end_needs_no_call(redis_url: str, backend: str) -> None:
    config = EmulatorConfig(run_seconds=1.0, stream_chunks=20)
    streamed_before = counter(metrics.RUN_ENDS_DETECTED, by="stream")
    with running_stack(redis_url, config, assistant_backend=backend) as stack:
        cids = [f"stream-{n}" for n in range(4)]
        entries = stack.wait_answered([stack.send(cid, f"tell me about number {n}") for n, cid in enumerate(cids)],
                                      timeout=30)
        calls = stack.emulator.stats()["calls"]
        streams = deltas_of(stack, cids)
        log = stack.emulator.stream_log()
    assert all(e["type"] == "run.completed" for e in entries), entries
    assert delta_violations(entries, streams) == []
    for cid in cids:
        assert len(texts(streams[cid])) >= 5, streams[cid]  # written as it came, not at the end
    assert log, "the emulator streamed nothing"
    # Neither a poll nor a read of the messages: the stream carried the run's end and its messages.
    assert calls.get(POLL[backend], 0) == 0 and calls.get("listMessages", 0) == 0, calls
    carried = [m["text"] for e in entries for m in e["messages"]]
    assert carried and all(carried), entries
    assert counter(metrics.RUN_ENDS_DETECTED, by="stream") - streamed_before >= len(entries)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_tool_round_streams_too(redis_url: str, backend: str) -> None:
    config = EmulatorConfig(run_seconds=0.5, stream_chunks=10)
    with running_stack(redis_url, config, assistant_backend=backend, worker_tool_modules="tests.sample_tools") as stack:
        (entry,) = stack.wait_answered([stack.send("tools-1", 'call:add{"a": 2, "b": 3}')], timeout=30)
        streams = deltas_of(stack, ["tools-1"])
        calls = stack.emulator.stats()["calls"]
    assert entry["type"] == "run.completed" and "5" in entry["messages"][-1]["text"], entry
    assert delta_violations([entry], streams) == []
    assert [d["tools"] for d in streams["tools-1"] if d["type"] == "tool.calls"] == [["add"]]
    assert len(texts(streams["tools-1"])) >= 3
    assert calls.get("getRun", 0) == 0, calls  # Assistants: neither round polled


@pytest.mark.parametrize("backend", BACKENDS)
def test_cut_streams_are_resumed_or_polled_and_the_text_still_adds_up(redis_url: str, backend: str) -> None:
    config = EmulatorConfig(run_seconds=1.0, stream_chunks=20, stream_cut=1.0)
    outcome = "resumed" if backend == "responses" else "polled"
    breaks_before = counter(metrics.STREAM_BREAKS, outcome=outcome)
    with running_stack(redis_url, config, assistant_backend=backend) as stack:
        cids = [f"cut-{n}" for n in range(4)]
        entries = stack.wait_answered([stack.send(cid, f"a long story {n}") for n, cid in enumerate(cids)],
                                      timeout=40)
        streams = deltas_of(stack, cids)
    assert all(e["type"] == "run.completed" for e in entries), entries
    assert delta_violations(entries, streams) == []
    assert counter(metrics.STREAM_BREAKS, outcome=outcome) - breaks_before >= len(cids)


@pytest.mark.parametrize("refusal", ["error", "json"])
def test_a_server_that_does_not_stream_is_learnt_and_polled(redis_url: str, refusal: str) -> None:
    config = EmulatorConfig(run_seconds=0.3, stream_refuse=refusal)
    with running_stack(redis_url, config) as stack:
        entries = stack.wait_answered([stack.send(f"plain-{n}", f"hello {n}") for n in range(3)], timeout=30)
        streams = deltas_of(stack, [f"plain-{n}" for n in range(3)])
        learnt = capability(stack)
    assert all(e["type"] == "run.completed" for e in entries), entries
    assert learnt is False
    assert delta_violations(entries, streams) == []
    assert all(len(texts(s)) == 1 for s in streams.values())  # one catch-up delta per message


def test_streaming_off_polls(redis_url: str) -> None:
    with running_stack(redis_url, EmulatorConfig(run_seconds=0.3), streaming="off") as stack:
        (entry,) = stack.wait_answered([stack.send("off-1", "hello")], timeout=20)
        assert stack.runtime.streams is None and stack.emulator.stream_log() == []
        assert stack.emulator.stats()["calls"].get("getRun", 0) >= 1
    assert entry["type"] == "run.completed"


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_stream_whose_owner_died_is_taken_over_by_the_safety_poll(redis_url: str, backend: str) -> None:
    """The process that read a stream stops beating (its readers gone, its heartbeat
    expired): the safety poll takes the run over (Responses: re-attached, Assistants:
    polled); the reply and its deltas are whole."""
    config = EmulatorConfig(run_seconds=3.0, stream_chunks=30)
    with running_stack(redis_url, config, assistant_backend=backend, stream_safety_poll_seconds=0.5) as stack:
        event_id = stack.send("orphan", "a story please")
        wait_until(lambda: len(texts(stack.runtime.store.deltas.read("orphan"))) >= 2, 10, what="the first deltas")
        streams = stack.runtime.streams
        assert streams is not None

        async def die() -> None:  # as a killed process: no hand-over, no heartbeat, readers gone
            assert streams._beat is not None
            streams._beat.cancel()
            for task in list(streams._readers.values()):
                task.cancel()

        streams.loop.call(die(), timeout=5)
        stack.runtime.store.redis.delete(keys.streamer(streams.process_id))  # its heartbeat expired
        (entry,) = stack.wait_answered([event_id], timeout=30)
        stream = deltas_of(stack, ["orphan"])
    assert entry["type"] == "run.completed", entry
    assert delta_violations([entry], stream) == []


def test_a_refused_re_attach_is_learnt_and_the_run_polled(redis_url: str) -> None:
    config = EmulatorConfig(run_seconds=1.0, stream_chunks=20, stream_cut=1.0, stream_refuse="resume")
    with running_stack(redis_url, config, assistant_backend="responses") as stack:
        (entry,) = stack.wait_answered([stack.send("no-resume", "a story")], timeout=30)
        streams = deltas_of(stack, ["no-resume"])
        learnt = capability(stack)
    assert entry["type"] == "run.completed", entry
    assert learnt is False
    assert delta_violations([entry], streams) == []
