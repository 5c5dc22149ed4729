"""What polled runs write to their conversation's delta stream (docs/contract.md, "Deltas"),
walked with the harness: in order, seq increasing, the text equal to the answer's, one
run.ended per batch that had a run.started."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.fake_backend import FakeBackend
from tests.invariants import delta_violations
from tests.unit.harness import FakeClock, Harness
from tests.unit.test_service import LOST
from worker.errors import TransientApiError


def texts_by_message(deltas: list[dict[str, Any]]) -> dict[str, str]:
    joined: dict[str, str] = {}
    for d in deltas:
        if d["type"] == "message.delta":
            joined[d["message_id"]] = joined.get(d["message_id"], "") + d["text"]
    return joined


def assert_seq_increases(deltas: list[dict[str, Any]]) -> None:
    seqs = [d["seq"] for d in deltas]
    assert seqs == sorted(set(seqs)) and seqs[0] == 1, seqs


def test_a_completed_run_with_tools_shows_each_stage_then_its_text_then_its_end(harness: Harness) -> None:
    event = harness.send("c1", 'call:add{"a": 1, "b": 2}')
    harness.run_until_idle()
    (entry,) = harness.entries()
    deltas = harness.deltas("c1")
    assert [d["type"] for d in deltas] == ["run.started", "tool.calls", "message.delta", "run.ended"]
    assert_seq_increases(deltas)
    assert all(d["event_ids"] == [event] and d["conversation_id"] == "c1" for d in deltas)
    assert deltas[0]["run_id"] == entry["run_id"] and deltas[1]["tools"] == ["add"]
    assert texts_by_message(deltas) == {m["id"]: m["text"] for m in entry["messages"]}
    assert entry["messages"][0]["text"].startswith("Tool results: add")
    ended = deltas[-1]
    assert ended["outcome"] == "run.completed" and ended["message_ids"] == [m["id"] for m in entry["messages"]]


def test_each_batch_s_seq_starts_over_and_each_message_gets_its_text(harness: Harness) -> None:
    first = harness.send("c1", "one twice")
    harness.run_until_idle()
    second = harness.send("c1", "two")
    harness.run_until_idle()
    deltas = harness.deltas("c1")
    assert [(d["type"], d["seq"], d["event_ids"]) for d in deltas] == [
        ("run.started", 1, [first]), ("message.delta", 2, [first]), ("message.delta", 3, [first]),
        ("run.ended", 4, [first]),
        ("run.started", 1, [second]), ("message.delta", 2, [second]), ("run.ended", 3, [second])]
    entries = harness.entries()
    assert len(entries[0]["messages"]) == 2
    assert texts_by_message(deltas) == {m["id"]: m["text"] for e in entries for m in e["messages"]}


def test_a_retried_run_starts_again_with_its_own_run_id_and_ends_once(harness: Harness) -> None:
    harness.send("c1", "fail:server_error")
    harness.run_until_idle()
    (entry,) = harness.entries()
    deltas = harness.deltas("c1")
    starts = [d["run_id"] for d in deltas if d["type"] == "run.started"]
    assert len(starts) == 1 + harness.settings.run_retry_limit and len(set(starts)) == len(starts)
    assert [d["type"] for d in deltas][-1] == "run.ended" and starts[-1] == entry["run_id"]
    assert [d["outcome"] for d in deltas if d["type"] == "run.ended"] == ["run.failed"]
    assert_seq_increases(deltas)


def test_a_run_adopted_after_a_lost_create_answer_starts_once(make_harness: Callable[..., Harness],
                                                              clock: FakeClock) -> None:
    backend = FakeBackend(clock)
    harness = make_harness(backend)
    backend.fail_next("start_run", LOST, applied=True)
    harness.send("c1", "hello")
    harness.run_until_idle()
    (entry,) = harness.entries()
    deltas = harness.deltas("c1")
    assert [d["type"] for d in deltas] == ["run.started", "message.delta", "run.ended"]
    assert texts_by_message(deltas) == {entry["messages"][0]["id"]: entry["messages"][0]["text"]}


def test_a_cancelled_batch_ends_run_cancelled_once_though_it_is_released_later(harness: Harness) -> None:
    harness.send("c1", "sleep:60")
    harness.service.advance("c1")
    harness.store.inbox.request_cancel("c1")
    harness.service.advance("c1")
    assert [d["type"] for d in harness.deltas("c1")][-1] == "run.ended"  # with the answer, not the release
    harness.run_until_idle()
    (entry,) = harness.entries()
    ended = [d for d in harness.deltas("c1") if d["type"] == "run.ended"]
    assert [e["outcome"] for e in ended] == ["run.cancelled"] and entry["type"] == "run.cancelled"


def test_a_timed_out_run_ends_run_cancelled(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(run_timeout_seconds=10.0)
    harness.send("c1", "sleep:60")
    harness.run_until_idle()
    assert [d["type"] for d in harness.deltas("c1")] == ["run.started", "run.ended"]
    assert harness.deltas("c1")[-1]["outcome"] == "run.cancelled"


def test_a_batch_answered_before_any_run_writes_no_deltas(harness: Harness) -> None:
    harness.send("c1", "hello", assistant_id="asst_nobody")  # rejected: no run ever started
    harness.backend.fail_next("start_run", TransientApiError("503", status=503))
    harness.send("c2", "sleep:60")
    harness.service.advance("c2")  # the batch opens, its create fails
    assert harness.store.inbox.request_cancel("c2")  # cancelled before its run is created
    harness.run_until_idle()
    assert sorted(e["type"] for e in harness.entries()) == ["event.rejected", "run.cancelled"]
    assert harness.deltas("c1") == [] and harness.deltas("c2") == []


def test_deltas_off_writes_nothing(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(deltas="off")
    harness.send("c1", 'call:add{"a": 1} twice')
    harness.send("c2", "sleep:60")
    harness.run_until_idle()
    assert len(harness.entries()) == 2
    assert harness.redis.keys("assistant:deltas:*") == []


def test_the_end_to_end_check_passes_on_polled_runs_and_finds_a_broken_stream(harness: Harness) -> None:
    contents = {"a": "hello", "b": 'call:add{"a": 1}', "c": "one twice", "d": "fail:server_error"}
    for cid, content in contents.items():
        harness.send(cid, content)
    harness.run_until_idle()
    streams = {cid: harness.deltas(cid) for cid in contents}
    assert delta_violations(harness.entries(), streams) == []
    broken = {**streams, "a": [d for d in streams["a"] if d["type"] != "run.ended"]}
    assert delta_violations(harness.entries(), broken) != []
    short = {**streams, "c": [d if d["type"] != "message.delta" else {**d, "text": d["text"][:-1]}
                              for d in streams["c"]]}
    assert len(delta_violations(harness.entries(), short)) == 2  # each of its two messages
    reordered = {**streams, "b": list(reversed(streams["b"]))}
    assert any("seq" in v for v in delta_violations(harness.entries(), reordered))
