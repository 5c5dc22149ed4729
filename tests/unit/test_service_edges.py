"""The service's edges: stale claims, a lease held elsewhere, writes refused to an older
lease, crashes before a batch exists, a step that has more to do than it may take on."""

from __future__ import annotations

import pytest
import redis

from tests.unit.harness import START, Harness
from worker import keys
from worker.backends.base import RunState, Submitted, ToolCall
from worker.batch import Batch, Phase
from worker.conversation import service as service_module, tool_round
from worker.conversation.transitions import Checkpoint, Finish, Open, Step
from worker.events import InboundEvent

CID = "edge-1"


def test_a_stale_claim_or_a_held_lease_takes_no_step(harness: Harness) -> None:
    harness.send(CID, "hello")
    harness.redis.zadd(keys.SCHEDULE, {CID: 42})
    harness.service.advance(CID, claimed=41)  # another claim replaced this one
    assert harness.batch(CID) is None
    harness.redis.set(keys.lock(CID), "99")
    harness.service.advance(CID)
    assert harness.batch(CID) is None and harness.redis.get(keys.lock(CID)) == b"99"


def test_writes_of_an_older_lease_are_refused(harness: Harness) -> None:
    harness.send(CID, "hello")
    harness.service.advance(CID)
    batch = harness.batch(CID)
    assert batch is not None
    harness.redis.delete(keys.lock(CID))
    newer = harness.store.schedule.begin_step(CID, lease_seconds=30, claimed=None, inbox_head=1)
    assert harness.store.batches.save(batch, token=newer.token).written  # type: ignore[union-attr]  # Begun here
    old = Step(newer.token - 1)  # type: ignore[union-attr]  # Begun here
    assert harness.service._apply(CID, old, Checkpoint(batch.evolve(polls=7))).ended
    assert harness.service._apply(CID, old, Finish(batch)).ended
    loaded = harness.batch(CID)
    assert loaded is not None and loaded.polls == 0


def test_a_batch_that_cannot_be_opened_leaves_the_conversation_scheduled(harness: Harness) -> None:
    harness.send(CID, "hello")
    harness.service.advance(CID)
    batch = harness.batch(CID)
    assert batch is not None
    other = Batch.new("other", CID, batch.events, created_at=START)
    assert harness.service._apply(CID, Step(1), Open(other, taken=1)).ended  # one batch at a time
    assert harness.redis.zscore(keys.SCHEDULE, CID) == harness.clock()


def test_a_crash_before_any_batch_is_retried_later(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    harness.send(CID, "hello")

    def broken(*args: object, **kwargs: object) -> bool:
        raise redis.ResponseError("a script failed")

    monkeypatch.setattr(harness.store.batches, "open", broken)
    harness.service.advance(CID)
    assert harness.batch(CID) is None and not harness.lease_held(CID)
    assert harness.redis.zscore(keys.SCHEDULE, CID) > harness.clock()


def test_a_step_with_more_to_do_than_it_may_take_on_comes_due_again(harness: Harness,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service_module, "MAX_TRANSITIONS", 1)
    harness.send(CID, "hello")
    harness.service.advance(CID)  # opened, then out of transitions before starting the run
    batch = harness.batch(CID)
    assert batch is not None and batch.phase is Phase.STARTING and not harness.lease_held(CID)
    assert harness.redis.zscore(keys.SCHEDULE, CID) == harness.clock()
    assert harness.backend.calls == [], "the next handler is not run only to be dropped"


def test_an_event_in_the_wrong_inbox_is_rejected(make_harness: object) -> None:
    harness = make_harness(log_message_content=True)  # type: ignore[operator]  # the fixture's factory
    stray = InboundEvent(event_id="stray", conversation_id="elsewhere", content="hi", sent_at=START)
    harness.redis.rpush(keys.inbox(CID), stray.model_dump_json())
    harness.send(CID, "mine")
    harness.run_until_idle()
    rejected, answered = harness.entries()
    assert rejected["type"] == "event.rejected" and "does not match" in rejected["error"]["message"]
    assert answered["type"] == "run.completed"


def test_tools_of_a_batch_that_moved_on_are_not_run(harness: Harness) -> None:
    harness.service.run_tools(CID, "gone", "run_1", [ToolCall("call_1", "add", "{}")])
    assert harness.backend.calls == []


def test_a_tool_round_that_starts_a_new_run_is_followed_there(harness: Harness) -> None:
    harness.send(CID, 'call:add{"a": 1, "b": 2}')
    harness.service.advance(CID)
    harness.clock.advance(5)
    call = ToolCall("call_1", "add", '{"a": 1, "b": 2}')
    harness.backend.reply_next("get_run", RunState(id=harness.batch(CID).run_id or "", status="requires_action",  # type: ignore[union-attr]  # the batch is open
                                                   tool_calls=[call], idle=True, usage={"total_tokens": 5}))
    harness.service.advance(CID)
    ((_, batch_id, run_id, calls),) = harness.dispatched
    harness.backend.reply_next("submit_tool_outputs", Submitted("run_next"))
    harness.service.run_tools(CID, batch_id, run_id, calls)
    batch = harness.batch(CID)
    assert batch is not None and batch.run_id == "run_next" and not batch.unconfirmed
    assert batch.usage == {"total_tokens": 5}


def test_run_durations_are_shared_and_seeded(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    for n in range(12):
        harness.send(f"d{n}", "hello")
    harness.run_until_idle()
    assert harness.store.history.recent(100), "ended phases were shared"

    def unreachable(keep: int) -> list[float]:
        raise redis.ConnectionError("down")

    monkeypatch.setattr(harness.store.history, "recent", unreachable)
    harness.service.seed_planner()  # logged, not raised: polls back off until runs end


def test_a_round_s_claim_ends_with_its_window_counted_from_the_dispatch(harness: Harness) -> None:
    """The tools actor that gets to a round late claims it only to the end of the round's
    window: the step that dispatches it again then (its outputs lost) must find it free."""
    harness.send(CID, 'call:add{"a": 1, "b": 2}')
    harness.service.advance(CID)
    harness.clock.advance(5)
    harness.service.advance(CID)  # requires_action: dispatched
    ((cid, batch_id, run_id, calls),) = harness.dispatched
    harness.clock.advance(3)  # the actor gets to it 3 s later
    harness.service.run_tools(cid, batch_id, run_id, calls)
    claim = keys.tools_claim(CID, tool_round.tools_key(run_id, calls))
    left = harness.redis.pttl(claim) / 1000
    assert tool_round.window(harness.service.ctx) - 3 - 1 < left <= tool_round.window(harness.service.ctx) - 3
