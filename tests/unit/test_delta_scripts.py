"""The delta stream's Lua (write_deltas.lua, deltas.lua, and publish.lua's run.ended) on a
real Redis: seq, the fence, run.started once per run, the kept lengths, cap and expiry."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from tests.unit.harness import FakeClock
from tests.unit.test_lua_scripts import CID, new_batch
from worker import keys
from worker.backends.base import ToolCall
from worker.batch import Batch
from worker.conversation import deltas
from worker.outcomes import batch_entry
from worker.store.batches import Batches
from worker.store.deltas import Delta, DeltaConfig, DeltaStreams
from worker.store.outbound import Outbound
from worker.store.schedule import Begun, Schedule

Streams = Callable[..., DeltaStreams]


@pytest.fixture
def streams(redis_client: redis.Redis) -> Streams:
    def make(client: redis.Redis | None = None, **config: object) -> DeltaStreams:
        return DeltaStreams(client or redis_client, DeltaConfig(**config))  # type: ignore[arg-type]  # test values
    return make


def started(redis_client: redis.Redis, clock: FakeClock, run_id: str = "run_1") -> tuple[int, Batch]:
    """A step's token and the batch it opened, its run `run_id` known."""
    schedule = Schedule(redis_client, clock)
    begun = schedule.begin_step(CID, lease_seconds=30, claimed=None, inbox_head=10)
    assert isinstance(begun, Begun)
    batch = new_batch(run_id=run_id)
    assert Batches(redis_client).open(batch, taken=0, token=begun.token)
    return begun.token, batch


def text_delta(batch: Batch, message_id: str, text: str, *, catch_up: bool) -> Delta:
    fields = {"conversation_id": CID, "run_id": batch.run_id, "message_id": message_id}
    return Delta("message.delta", batch.run_id or "", fields, message_id=message_id, text=text, catch_up=catch_up)


def test_seq_counts_up_from_one_per_batch_in_stream_order(redis_client: redis.Redis, clock: FakeClock,
                                                          streams: Streams) -> None:
    token, batch = started(redis_client, clock)
    stream = streams()
    calls = [ToolCall("call_1", "add", "{}"), ToolCall("call_2", "lookup", "{}")]
    assert stream.write(batch, deltas.run_started(batch), token=token) == 1
    assert stream.write(batch, deltas.tool_calls(batch, calls), token=token) == 1
    read = stream.read(CID)
    assert [(d["type"], d["seq"]) for d in read] == [("run.started", 1), ("tool.calls", 2)]
    assert read[1]["tools"] == ["add", "lookup"] and read[1]["run_id"] == "run_1"
    assert read[0]["event_ids"] == ["e1"] and read[0]["conversation_id"] == CID


def test_seq_never_repeats_across_two_writers_and_the_stale_one_is_refused(redis_client: redis.Redis,
                                                                           redis_url: str, clock: FakeClock,
                                                                           streams: Streams) -> None:
    old_token, batch = started(redis_client, clock)
    first = streams()
    assert first.write(batch, deltas.run_started(batch), token=old_token) == 1
    # The lease moved on: another worker's step (its own client, a newer token) writes next.
    Schedule(redis_client, clock).end_step(CID, old_token)
    begun = Schedule(redis_client, clock).begin_step(CID, lease_seconds=30, claimed=None, inbox_head=10)
    assert isinstance(begun, Begun) and begun.token > old_token
    other = redis.Redis.from_url(redis_url)
    try:
        second = streams(other)
        assert second.write(batch, deltas.tool_calls(batch, [ToolCall("c", "add", "{}")]), token=begun.token) == 1
        assert first.write(batch, deltas.tool_calls(batch, [ToolCall("c", "stale", "{}")]), token=old_token) is None
        assert second.write(batch, [text_delta(batch, "m1", "hi", catch_up=False)], token=begun.token) == 1
    finally:
        other.close()
    seqs = [d["seq"] for d in first.read(CID)]
    assert seqs == [1, 2, 3]
    assert "stale" not in str(first.read(CID))


def test_another_batch_writes_nothing(redis_client: redis.Redis, clock: FakeClock, streams: Streams) -> None:
    token, batch = started(redis_client, clock)
    gone = batch.evolve(batch_id="an-older-batch")
    assert streams().write(gone, deltas.run_started(gone), token=token) is None
    assert not redis_client.exists(streams().key(CID))


def test_run_started_is_written_once_per_run_and_a_new_run_resets_the_lengths(redis_client: redis.Redis,
                                                                              clock: FakeClock,
                                                                              streams: Streams) -> None:
    token, batch = started(redis_client, clock)
    stream = streams()
    assert stream.write(batch, deltas.run_started(batch), token=token) == 1
    assert stream.write(batch, deltas.run_started(batch), token=token) == 0  # the same run, again
    assert stream.write(batch, [text_delta(batch, "m1", "Hello", catch_up=False)], token=token) == 1
    retried = batch.evolve(run_id="run_2")
    assert stream.write(retried, deltas.run_started(retried), token=token) == 1
    assert not redis_client.exists(keys.delta_lengths(CID))  # what run_1 showed is dropped
    assert stream.write(retried, [text_delta(retried, "m1", "Hello", catch_up=True)], token=token) == 1
    read = stream.read(CID)
    assert [(d["type"], d["run_id"]) for d in read] == [
        ("run.started", "run_1"), ("message.delta", "run_1"), ("run.started", "run_2"), ("message.delta", "run_2")]
    assert read[-1]["text"] == "Hello"  # all of it again: the lengths went with run_1


def test_nothing_is_written_before_a_run_started(redis_client: redis.Redis, clock: FakeClock,
                                                 streams: Streams) -> None:
    token, batch = started(redis_client, clock)
    stream = streams()
    written = stream.write(batch, [*deltas.tool_calls(batch, []), text_delta(batch, "m1", "x", catch_up=True)],
                           token=token)
    assert written == 0 and not redis_client.exists(stream.key(CID))
    assert not redis_client.exists(keys.delta_lengths(CID))


def test_a_catch_up_writes_only_the_text_not_published_yet_counted_in_bytes(redis_client: redis.Redis,
                                                                           clock: FakeClock,
                                                                           streams: Streams) -> None:
    token, batch = started(redis_client, clock)
    stream = streams()
    stream.write(batch, deltas.run_started(batch), token=token)
    stream.write(batch, [text_delta(batch, "m1", "Héllo", catch_up=False)], token=token)
    assert int(redis_client.hget(keys.delta_lengths(CID), "m1") or 0) == len("Héllo".encode())
    whole = "Héllo, wörld ✓"
    assert stream.write(batch, [text_delta(batch, "m1", whole, catch_up=True),
                                text_delta(batch, "m2", "second", catch_up=True)], token=token) == 2
    assert stream.write(batch, [text_delta(batch, "m1", whole, catch_up=True)], token=token) == 0  # nothing left
    texts = [(d["message_id"], d["text"]) for d in stream.read(CID) if d["type"] == "message.delta"]
    assert texts == [("m1", "Héllo"), ("m1", ", wörld ✓"), ("m2", "second")]
    assert "".join(t for m, t in texts if m == "m1") == whole


def test_the_stream_is_capped_and_expires_after_its_last_write(redis_client: redis.Redis, clock: FakeClock,
                                                               streams: Streams) -> None:
    token, batch = started(redis_client, clock)
    stream = streams(maxlen=10, ttl_seconds=120)
    stream.write(batch, deltas.run_started(batch), token=token)
    for n in range(300):
        stream.write(batch, [text_delta(batch, f"m{n}", "x", catch_up=False)], token=token)
    length = redis_client.xlen(stream.key(CID))
    assert 10 <= length < 301  # approximate trimming keeps whole nodes (of 100 entries)
    assert 0 < redis_client.ttl(stream.key(CID)) <= 120
    # The lengths behind the catch-up delta outlive the stream: they go with their batch.
    assert 120 < redis_client.ttl(keys.delta_lengths(CID)) <= 86400


def test_deltas_off_writes_nothing(redis_client: redis.Redis, clock: FakeClock, streams: Streams) -> None:
    token, batch = started(redis_client, clock)
    stream = streams(enabled=False)
    assert stream.write(batch, deltas.run_started(batch), token=token) == 0
    assert stream.encode(deltas.run_started(batch)) == ""
    assert redis_client.keys("assistant:deltas:*") == []


# --- run.ended, with the outbound entry (publish.lua) --------------------------------------
def publish(redis_client: redis.Redis, clock: FakeClock, stream: DeltaStreams, batch: Batch, token: int,
            *, release: bool = True) -> bool:
    outbound = Outbound(redis_client, stream="out", maxlen=100, dead_letter_maxlen=100, clock=clock, deltas=stream)
    entry = batch_entry(batch, "run.completed", now=clock(), messages=[
        {"id": "m1", "role": "assistant", "text": "Hello there", "annotations": [], "created_at": 1}])
    return outbound.publish(batch, entry.to_json(), token=token, release=release,
                            deltas=deltas.answered(batch, entry)).published


def test_run_ended_goes_with_the_entry_once_after_the_catch_up(redis_client: redis.Redis, clock: FakeClock,
                                                              streams: Streams) -> None:
    token, batch = started(redis_client, clock)
    stream = streams()
    stream.write(batch, deltas.run_started(batch), token=token)
    stream.write(batch, [text_delta(batch, "m1", "Hello", catch_up=False)], token=token)
    assert publish(redis_client, clock, stream, batch, token, release=False)
    assert not publish(redis_client, clock, stream, batch, token)  # answered before: nothing more
    read = stream.read(CID)
    assert [d["type"] for d in read] == ["run.started", "message.delta", "message.delta", "run.ended"]
    assert read[2]["text"] == " there" and [d["seq"] for d in read] == [1, 2, 3, 4]
    assert read[3]["outcome"] == "run.completed" and read[3]["message_ids"] == ["m1"]
    assert redis_client.xlen("out") == 1
    assert not redis_client.exists(keys.delta_lengths(CID))  # released with the batch


def test_no_run_ended_for_a_batch_without_run_started(redis_client: redis.Redis, clock: FakeClock,
                                                      streams: Streams) -> None:
    token, batch = started(redis_client, clock)
    stream = streams()
    assert publish(redis_client, clock, stream, batch, token)
    assert redis_client.xlen("out") == 1 and not redis_client.exists(stream.key(CID))


def test_a_stale_publisher_writes_no_run_ended(redis_client: redis.Redis, clock: FakeClock,
                                               streams: Streams) -> None:
    token, batch = started(redis_client, clock)
    stream = streams()
    stream.write(batch, deltas.run_started(batch), token=token)
    redis_client.hset(keys.batch(CID), "fence", token + 1)  # a newer lease holder wrote the batch
    assert not publish(redis_client, clock, stream, batch, token)
    assert [d["type"] for d in stream.read(CID)] == ["run.started"]
