"""The batch's Redis layout is the previous release's: both read what the other writes."""

from __future__ import annotations

import json

from tests.unit.harness import START
from worker.batch import HASH_FIELDS, Batch, Phase
from worker.events import InboundEvent

# A batch in a tool round, as the previous release (f73f560) wrote it: hash and document.
OLD_HASH = {b"batch_id": b"b1", b"fence": b"7", b"published": b"0", b"polls": b"3",
            b"tools_key": b"run_1:call_1", b"phase_started_at": b"1800000001.5", b"run_id": b"run_1",
            b"unconfirmed": b"0"}
OLD_DOCUMENT = ('{"events":[{"event_id":"e1","conversation_id":"c1","content":"hi","sent_at":1800000000.0}],'
                '"conversation_id":"c1","state":"running","thread_id":"thread_1","messages_appended":true,'
                '"created_at":1800000000.0,"run_started_at":1800000000.2,"tools_at":1800000002.0,'
                '"usage":{"total_tokens":12},"create_sent":0}')
# The previous release refuses a document with keys it does not know (it passes them to
# its dataclass): a newer batch's document may only hold these.
OLD_DOCUMENT_KEYS = {"events", "conversation_id", "state", "thread_id", "run_attempt", "messages_appended",
                     "api_failures", "busy_waits", "step_crashes", "created_at", "run_started_at",
                     "cancel_deadline", "tools_at", "tools_redispatched", "usage", "create_sent"}


def test_a_batch_the_previous_release_wrote_reads_with_its_phase() -> None:
    batch = Batch.from_redis(OLD_HASH, OLD_DOCUMENT)
    assert batch.phase is Phase.RUNNING and batch.run_id == "run_1" and batch.thread_id == "thread_1"
    assert batch.tools_key == "run_1:call_1" and batch.tools_at == 1800000002.0 and batch.polls == 3
    assert batch.usage == {"total_tokens": 12} and batch.event_ids == ["e1"]
    legacy = {"creating": Phase.STARTING, "running": Phase.RUNNING, "cancelling": Phase.STOPPING}
    for state, phase in legacy.items():
        document = json.loads(OLD_DOCUMENT) | {"state": state}
        assert Batch.from_redis(OLD_HASH, json.dumps(document)).phase is phase


def test_a_batch_written_now_reads_back_equal_and_stays_in_the_old_layout() -> None:
    event = InboundEvent(event_id="e1", conversation_id="c1", content="hi", sent_at=START)
    batch = Batch.new("b1", "c1", [event], created_at=START).evolve(
        phase=Phase.STOPPING, published=True, run_id="items:msg_9", cancel_deadline=START + 5,
        usage={"total_tokens": 3}, tools_redispatched=True, step_crashes=1)
    fields, document = batch.to_hash(), batch.data_json()
    assert Batch.from_redis(fields, document) == batch
    assert set(json.loads(document)) <= OLD_DOCUMENT_KEYS
    assert set(fields) == set(HASH_FIELDS) and json.loads(document)["state"] == "cancelling"


def test_a_newer_release_s_extra_document_keys_are_skipped() -> None:
    document = json.loads(OLD_DOCUMENT) | {"something_new": 1}
    assert Batch.from_redis(OLD_HASH, json.dumps(document)).batch_id == "b1"


def test_evolve_keeps_the_parsed_events() -> None:
    event = InboundEvent(event_id="e1", conversation_id="c1", content="hi", sent_at=START)
    batch = Batch.new("b1", "c1", [event])
    assert batch.evolve(polls=2).events[0] is event
