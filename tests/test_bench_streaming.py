"""The pure part of the streaming benchmark (bench/scenarios/streaming.py): end lags, delta
latencies and the text check from the emulator's stream log and the delta streams (no
benchmark is run)."""

from __future__ import annotations

from typing import Any

import pytest

from bench.load import Reply
from bench.scenarios.streaming import per_run


def _reply(cid: str, run_id: str, texts: dict[str, str], kind: str = "run.completed") -> Reply:
    return Reply("1-0", 0.0, {"type": kind, "conversation_id": cid, "event_ids": [f"ev-{cid}"], "run_id": run_id,
                              "messages": [{"id": m, "text": t} for m, t in texts.items()]})


def _entry(cid: str, kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "conversation_id": cid, "event_ids": [f"ev-{cid}"], **fields}


def test_end_lag_and_delta_latency_pair_the_log_with_the_stream_entries() -> None:
    log = [{"stream": 1, "id": "run_a", "event": "thread.message.delta", "item_id": "msg_a", "index": 0, "at": 10.0},
           {"stream": 1, "id": "run_a", "event": "thread.message.delta", "item_id": "msg_a", "index": 1, "at": 11.0},
           {"stream": 1, "id": "run_a", "event": "thread.run.completed", "item_id": None, "index": None, "at": 12.0}]
    streams = {"c1": [
        (9.5, _entry("c1", "run.started")),
        (10.004, _entry("c1", "message.delta", message_id="msg_a", text="Hel")),
        (11.010, _entry("c1", "message.delta", message_id="msg_a", text="lo")),
        (12.030, _entry("c1", "run.ended", outcome="run.completed")),
    ]}
    figures = per_run([_reply("c1", "run_a", {"msg_a": "Hello"})], log, streams)
    assert figures["end_lag_ms"]["p50"] == pytest.approx(30.0)
    assert figures["delta_latency_ms"]["n"] == 2 and figures["delta_latency_ms"]["max"] == pytest.approx(10.0)
    assert figures["text_checked"] == 1 and figures["text_mismatches"] == 0 and figures["unmatched_ends"] == 0


def test_a_retried_run_counts_from_its_last_start_and_a_wrong_text_is_a_mismatch() -> None:
    log = [{"stream": 1, "id": "run_b", "event": "thread.run.completed", "item_id": None, "index": None, "at": 5.0}]
    streams = {"c2": [
        (1.0, _entry("c2", "run.started")),
        (1.1, _entry("c2", "message.delta", message_id="msg_old", text="dropped")),
        (2.0, _entry("c2", "run.started")),
        (2.1, _entry("c2", "message.delta", message_id="msg_b", text="Hi ther")),
        (5.01, _entry("c2", "run.ended")),
        (6.0, {"type": "run.started", "event_ids": ["another batch"]}),
    ]}
    figures = per_run([_reply("c2", "run_b", {"msg_b": "Hi there"}), _reply("c3", "run_c", {})], log, streams)
    assert figures["text_checked"] == 1 and figures["text_mismatches"] == 1
    assert figures["messages_not_streamed_whole"] == 1  # the log had no chunk of msg_b: no latency
    assert figures["delta_latency_ms"]["n"] == 0
    assert figures["unmatched_ends"] == 1  # c3: no run.ended, no ending in the log
    assert figures["end_lag_ms"]["n"] == 1 and figures["end_lag_ms"]["p50"] == pytest.approx(10.0)


def test_a_run_whose_stream_broke_has_its_end_lag_from_the_emulators_finish() -> None:
    streams = {"c4": [(1.0, _entry("c4", "run.started")), (31.5, _entry("c4", "run.ended"))]}
    figures = per_run([_reply("c4", "run_d", {})], [], streams, finished={"run_d": 11.5})
    assert figures["ends_not_streamed"] == 1 and figures["unmatched_ends"] == 0
    assert figures["end_lag_ms"]["p50"] == pytest.approx(20000.0)
