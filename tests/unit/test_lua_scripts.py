"""Each Lua script of the store on a real Redis: what it writes, what it refuses, what it
returns; and the named-argument check that stands between them and their callers."""

from __future__ import annotations

import json

import pytest
import redis

from tests.unit.harness import START, FakeClock
from worker import keys
from worker.batch import Batch, Phase
from worker.events import InboundEvent
from worker.store import scripts
from worker.store.batches import Batches
from worker.store.inbox import Inbox
from worker.store.outbound import Outbound
from worker.store.schedule import Begun, NotBegun, Schedule

CID = "conv-1"


def event(n: int, cid: str = CID) -> InboundEvent:
    return InboundEvent(event_id=f"e{n}", conversation_id=cid, content=f"text {n}", sent_at=START)


def new_batch(batch_id: str = "b1", **fields: object) -> Batch:
    return Batch.new(batch_id, CID, [event(1)], created_at=START, create_sent=0, **fields)  # type: ignore[arg-type]  # test values


@pytest.fixture
def schedule(redis_client: redis.Redis, clock: FakeClock) -> Schedule:
    return Schedule(redis_client, clock)


@pytest.fixture
def batches(redis_client: redis.Redis) -> Batches:
    return Batches(redis_client)


@pytest.fixture
def outbound(redis_client: redis.Redis, clock: FakeClock) -> Outbound:
    return Outbound(redis_client, stream="out", maxlen=100, dead_letter_maxlen=100, clock=clock)


def begin(schedule: Schedule, claimed: float | None = None) -> Begun:
    begun = schedule.begin_step(CID, lease_seconds=30, claimed=claimed, inbox_head=10)
    assert isinstance(begun, Begun)
    return begun


def opened(schedule: Schedule, batches: Batches, inbox: Inbox | None = None) -> tuple[Begun, Batch]:
    begun = begin(schedule)
    batch = new_batch()
    assert batches.open(batch, taken=len(begun.inbox_head), token=begun.token)
    return begun, batch


# --- the named-argument check ------------------------------------------------------------
def test_every_script_names_its_keys_and_arguments() -> None:
    for name in scripts.names():
        source = scripts.source(name)
        if name in ("fence", "deltas", "stream_due"):  # shared Lua, included by others (`uses:`)
            continue
        assert source.keys and source.args, name
        assert "-- returns:" in source.text, f"{name}.lua says what it returns"


def test_a_call_with_a_wrong_name_is_refused_before_redis(redis_client: redis.Redis) -> None:
    script = scripts.LuaScript(redis_client, "end_step")
    with pytest.raises(TypeError, match="takes the keys"):
        script(keys={"lease": "x"}, args={"token": 1})
    with pytest.raises(TypeError, match="takes the arguments"):
        script(keys={"lock": "x"}, args={"tok": 1})
    with pytest.raises(TypeError, match="must not be a list"):
        script(keys={"lock": "x"}, args={"token": [1]})


# --- accept ------------------------------------------------------------------------------
def test_accept_appends_schedules_and_wakes_once_per_event_id(redis_client: redis.Redis, clock: FakeClock) -> None:
    inbox = Inbox(redis_client, clock)
    assert inbox.accept(event(1), 60) and not inbox.accept(event(1), 60)
    assert inbox.accept(event(2), 60)
    assert redis_client.llen(keys.inbox(CID)) == 2
    assert redis_client.zscore(keys.SCHEDULE, CID) == START  # scheduled by the first, not moved
    assert redis_client.llen(keys.WAKE) == 1
    assert 0 < redis_client.ttl(keys.dedup("e1")) <= 60


# --- claim -------------------------------------------------------------------------------
def test_claim_moves_what_is_due_ahead_and_tells_the_next_due_time(redis_client: redis.Redis,
                                                                   schedule: Schedule) -> None:
    redis_client.zadd(keys.SCHEDULE, {"a": 10, "b": 20, "c": 30})
    claimed, next_due = schedule.claim_due(now=25, limit=10, claim_until=100)
    assert claimed == ["a", "b"] and next_due == 30
    assert redis_client.zscore(keys.SCHEDULE, "a") == 100
    assert schedule.claim_due(now=25, limit=10, claim_until=100) == ([], 30.0)


# --- begin_step / end_step ---------------------------------------------------------------
def test_begin_step_refuses_a_stale_claim_and_a_held_lease(redis_client: redis.Redis, schedule: Schedule,
                                                           clock: FakeClock) -> None:
    redis_client.zadd(keys.SCHEDULE, {CID: 50})
    assert schedule.begin_step(CID, lease_seconds=30, claimed=40, inbox_head=10) == NotBegun(stale=True)
    first = begin(schedule, claimed=50)
    assert schedule.begin_step(CID, lease_seconds=30, claimed=50, inbox_head=10) == NotBegun(stale=False)
    assert redis_client.zscore(keys.SCHEDULE, CID) == clock() + 1.0  # busy: due again soon
    assert schedule.end_step(CID, first.token) and not schedule.end_step(CID, first.token)
    assert begin(schedule).token == first.token + 1  # tokens only grow


def test_begin_step_reads_the_inbox_head_thread_and_cancel_without_a_batch(redis_client: redis.Redis,
                                                                          schedule: Schedule,
                                                                          clock: FakeClock) -> None:
    Inbox(redis_client, clock).accept(event(1), 60)
    redis_client.hset(keys.conversation(CID), "thread_id", "thread_9")
    redis_client.set(keys.cancel_request(CID), clock())  # left by a batch that ended meanwhile
    begun = begin(schedule)
    assert begun.batch() is None and begun.thread_id == "thread_9" and begun.cancel_at == clock()
    assert [json.loads(raw)["event_id"] for raw in begun.inbox_head] == ["e1"]
    assert not redis_client.exists(keys.cancel_request(CID))  # taken by this step


def test_a_cancel_is_recorded_only_while_a_batch_awaits_its_answer(redis_client: redis.Redis, schedule: Schedule,
                                                                   batches: Batches, clock: FakeClock) -> None:
    inbox = Inbox(redis_client, clock)
    assert inbox.request_cancel(CID) is False  # idle: nothing written
    assert redis_client.keys("aw:*") == []
    begun, _ = opened(schedule, batches)
    schedule.end_step(CID, begun.token)
    redis_client.zadd(keys.SCHEDULE, {CID: clock() + 60})
    assert inbox.request_cancel(CID) is True
    assert float(redis_client.get(keys.cancel_request(CID)) or 0) == clock()
    assert redis_client.zscore(keys.SCHEDULE, CID) == clock()  # due now, not in 60 s
    assert redis_client.lrange(keys.WAKE, 0, -1) == [b"1"]
    redis_client.delete(keys.cancel_request(CID))
    redis_client.hset(keys.batch(CID), "published", "1")  # answered: only its run is being stopped
    assert inbox.request_cancel(CID) is False
    assert not redis_client.exists(keys.cancel_request(CID))


def test_begin_step_returns_the_open_batch(schedule: Schedule, batches: Batches) -> None:
    begun, batch = opened(schedule, batches)
    schedule.end_step(CID, begun.token)
    again = begin(schedule)
    loaded = again.batch()
    assert loaded is not None and loaded.batch_id == batch.batch_id and again.inbox_head == []


# --- open_batch --------------------------------------------------------------------------
def test_open_batch_takes_the_events_and_refuses_a_second_batch_or_a_lost_lease(
        redis_client: redis.Redis, schedule: Schedule, batches: Batches, clock: FakeClock) -> None:
    inbox = Inbox(redis_client, clock)
    for n in (1, 2, 3):
        inbox.accept(event(n), 60)
    begun = begin(schedule)
    assert not batches.open(new_batch(), taken=2, token=begun.token + 1)  # not the lease's token
    assert batches.open(new_batch(), taken=2, token=begun.token)
    assert redis_client.llen(keys.inbox(CID)) == 1
    assert not batches.open(new_batch("b2"), taken=1, token=begun.token)  # one batch at a time
    assert redis_client.hget(keys.batch(CID), "fence") == str(begun.token).encode()


# --- save_batch / set_fields / record_poll -----------------------------------------------
def test_save_batch_is_fenced_by_batch_id_and_by_a_newer_token(schedule: Schedule, batches: Batches,
                                                               redis_client: redis.Redis) -> None:
    begun, batch = opened(schedule, batches)
    running = batch.evolve(phase=Phase.RUNNING, run_id="run_1", thread_id="thread_1")
    write = batches.save(running, token=begun.token, due=123.0, release=True)
    assert write.written and write.lease_released and not redis_client.exists(keys.lock(CID))
    assert redis_client.zscore(keys.SCHEDULE, CID) == 123.0
    assert redis_client.hget(keys.conversation(CID), "thread_id") == b"thread_1"
    newer = begin(schedule)
    assert batches.save(running.evolve(polls=5), token=newer.token).written
    assert not batches.save(running.evolve(polls=9), token=begun.token).written  # an older lease
    assert not batches.save(running.evolve(batch_id="other"), token=newer.token).written
    loaded = batches.load(CID)
    assert loaded is not None and loaded.polls == 5 and loaded.phase is Phase.RUNNING


def test_set_fields_writes_hash_fields_of_the_active_batch_only(schedule: Schedule, batches: Batches,
                                                                redis_client: redis.Redis) -> None:
    _, batch = opened(schedule, batches)
    assert batches.set_fields(batch, {"polls": "3"}, due=77.0)
    assert not batches.set_fields(batch.evolve(batch_id="gone"), {"polls": "9"})
    assert batches.set_fields(batch, {}, due=78.0)  # nothing but the due time
    assert redis_client.hget(keys.batch(CID), "polls") == b"3"
    assert redis_client.zscore(keys.SCHEDULE, CID) == 78.0


def test_record_poll_counts_schedules_and_gives_the_lease_back(schedule: Schedule, batches: Batches,
                                                               redis_client: redis.Redis) -> None:
    begun, batch = opened(schedule, batches)
    assert batches.record_poll(batch, token=begun.token, due=50.0).written
    assert redis_client.hget(keys.batch(CID), "polls") == b"1"
    assert not redis_client.exists(keys.lock(CID)) and redis_client.zscore(keys.SCHEDULE, CID) == 50.0
    newer = begin(schedule)
    assert redis_client.exists(keys.lock(CID))
    assert batches.save(batch, token=newer.token).written  # the newer lease wrote the batch
    assert not batches.record_poll(batch, token=begun.token, due=60.0).written
    assert redis_client.exists(keys.lock(CID))  # the newer lease is not given back by the older
    assert redis_client.hget(keys.batch(CID), "polls") == b"0"


# --- publish -----------------------------------------------------------------------------
def test_publish_once_and_release_to_idle(schedule: Schedule, batches: Batches, outbound: Outbound,
                                          redis_client: redis.Redis) -> None:
    begun, batch = opened(schedule, batches)
    batch = batch.evolve(run_id="run_1")
    result = outbound.publish(batch, '{"n":1}', token=begun.token, release=False)
    assert result.accepted and result.published and not result.lease_released
    assert not outbound.publish(batch, '{"n":2}', token=begun.token, release=False).published
    done = outbound.publish(batch, "", token=begun.token, release=True)
    assert done.accepted and not done.published and done.lease_released and not done.events_wait
    assert redis_client.xlen("out") == 1
    assert not redis_client.exists(keys.batch(CID), keys.batch_data(CID), keys.lock(CID))
    assert redis_client.zscore(keys.SCHEDULE, CID) is None
    assert redis_client.hget(keys.conversation(CID), "last_run_id") == b"run_1"


def test_publish_keeps_the_batch_stopping_and_refuses_an_older_lease(schedule: Schedule, batches: Batches,
                                                                    outbound: Outbound,
                                                                    redis_client: redis.Redis) -> None:
    begun, batch = opened(schedule, batches)
    stopping = batch.evolve(phase=Phase.STOPPING, cancel_deadline=START + 5, run_id="run_2", unconfirmed=True)
    assert outbound.publish(stopping, '{"n":1}', token=begun.token, release=False).published
    loaded = batches.load(CID)
    assert loaded is not None and loaded.published and loaded.phase is Phase.STOPPING
    assert loaded.run_id == "run_2" and loaded.unconfirmed, "the batch as answered, hash fields too"
    redis_client.delete(keys.lock(CID))  # the older lease expired
    newer = begin(schedule)
    assert batches.save(stopping, token=newer.token).written
    assert not outbound.publish(stopping, "", token=begun.token, release=True).accepted
    assert outbound.publish(stopping, "", token=newer.token, release=True).lease_released


def test_publish_with_events_waiting_keeps_the_lease_and_schedules(schedule: Schedule, batches: Batches,
                                                                   outbound: Outbound, redis_client: redis.Redis,
                                                                   clock: FakeClock) -> None:
    begun, batch = opened(schedule, batches)
    Inbox(redis_client, clock).accept(event(7), 60)
    result = outbound.publish(batch, '{"n":1}', token=begun.token, release=True)
    assert result.published and result.events_wait and not result.lease_released
    assert redis_client.exists(keys.lock(CID)) and redis_client.zscore(keys.SCHEDULE, CID) == clock()


# --- reject_head / retire ----------------------------------------------------------------
def test_reject_head_only_takes_the_event_at_the_head(outbound: Outbound, redis_client: redis.Redis) -> None:
    redis_client.rpush(keys.inbox(CID), b"bad", b"good")
    assert not outbound.reject_head(CID, b"good", "{}", "not at the head")
    assert outbound.reject_head(CID, b"bad", '{"type":"event.rejected"}', "not JSON")
    assert redis_client.lrange(keys.inbox(CID), 0, -1) == [b"good"]
    ((_, letter),) = redis_client.xrange(keys.DEAD_LETTERS)
    assert letter == {b"raw": b"bad", b"reason": b"not JSON"}
    assert redis_client.xlen("out") == 1


def test_retire_takes_only_an_idle_conversation_off_the_schedule(schedule: Schedule,
                                                                 redis_client: redis.Redis) -> None:
    redis_client.zadd(keys.SCHEDULE, {CID: 1})
    redis_client.rpush(keys.inbox(CID), b"x")
    assert not schedule.retire_if_idle(CID)
    redis_client.delete(keys.inbox(CID))
    assert schedule.retire_if_idle(CID) and redis_client.zscore(keys.SCHEDULE, CID) is None


def test_reject_in_batch_takes_one_event_out_once_and_is_fenced(schedule: Schedule, batches: Batches,
                                                                outbound: Outbound, redis_client: redis.Redis) -> None:
    begun, _ = opened(schedule, batches)
    two = Batch.new("b1", CID, [event(1), event(2)], created_at=START, create_sent=0)
    assert batches.save(two, token=begun.token).written
    rest = two.without_event(0)
    assert not outbound.reject_in_batch(rest, token=begun.token - 1, entry_json="{}", raw="r", reason="x")
    assert redis_client.xlen("out") == 0
    assert outbound.reject_in_batch(rest, token=begun.token, entry_json='{"type":"event.rejected"}', raw="r",
                                    reason="too long")
    loaded = batches.load(CID)
    assert loaded is not None and loaded.event_ids == ["e2"]
    assert redis_client.xlen("out") == 1 and redis_client.xrange(keys.DEAD_LETTERS)[0][1][b"reason"] == b"too long"
    other = Batch.new("b2", CID, [event(3)], created_at=START)
    assert not outbound.reject_in_batch(other, token=begun.token, entry_json="{}", raw="r", reason="x")


def test_forget_thread_is_a_compare_and_delete(batches: Batches, redis_client: redis.Redis) -> None:
    redis_client.hset(keys.conversation(CID), mapping={"thread_id": "t2", "last_run_id": "run_9", "fence": 3})
    assert not batches.forget_thread(CID, "t1") and batches.thread_id(CID) == "t2"  # a newer thread is kept
    assert batches.forget_thread(CID, "t2") and batches.thread_id(CID) is None and batches.last_run_id(CID) is None
    assert redis_client.hget(keys.conversation(CID), "fence") == b"3"
