"""The DBOS baseline (bench/dbos_baseline/) passes a no-fault correctness run: every message
answered once, run.completed, with its own text, in send order per conversation; the audit of
replies and the side-by-side table it is reported in."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import sides
from bench.audit import audit
from bench.dbos_baseline.database import unavailable
from bench.load import Reply, Sent

WHY = unavailable()
needs_postgres = pytest.mark.skipif(WHY is not None, reason=f"DBOS baseline: {WHY}")


def _reply(number: int, cid: str, *eids: str) -> Reply:
    return Reply(f"{1000 + number}-0", 1.0 + number, {"type": "run.completed", "conversation_id": cid,
                                                      "event_ids": list(eids)})


def test_audit_counts_lost_duplicated_and_reordered_replies() -> None:
    sent = Sent()
    for at, (eid, cid) in enumerate([("a1", "a"), ("a2", "a"), ("b1", "b"), ("b2", "b"), ("c1", "c")]):
        sent.at[eid], sent.conversation[eid] = float(at), cid
    replies = [_reply(0, "a", "a1", "a2"), _reply(1, "b", "b2"), _reply(2, "b", "b1"), _reply(3, "b", "b1"),
               _reply(4, "x", "warm-up")]
    result = audit(replies, sent)
    assert (result["lost"], result["duplicated"], result["reordered_conversations"], result["unknown"]) == (1, 1, 1, 1)


def test_side_by_side_rows_show_ratios_and_skips() -> None:
    results = {"saturation": {"peak_replies_per_s": 300.0, "worker_cpu_percent": 90.0, "store_cpu_percent": 20.0,
                              "worker_cpu_ms_per_reply": 3.0, "store_cpu_ms_per_reply": 0.7,
                              "dbos": {"peak_replies_per_s": 100.0, "worker_cpu_percent": 180.0,
                                       "store_cpu_percent": 60.0}},
               "concurrency": {"conversations": 10, "dbos": {"skipped": "PostgreSQL is unreachable"}}}
    rows = {row[1].split(" (")[0]: row for row in sides.rows(results)}
    assert rows["peak replies/s"][2:] == ("300", "-", "100", "3")
    assert rows["first send -> last reply, s"][4] == "skipped"
    assert "Side by side" in "\n".join(sides.markdown(results))


@needs_postgres
def test_correctness_run(tmp_path: Path) -> None:
    from bench.dbos_baseline.check import correctness_run
    from bench.dbos_baseline.stack import running_dbos_stack

    with running_dbos_stack(tmp_path, run_seconds=0.2) as stack:
        result = correctness_run(stack, conversations=8, messages=3, timeout=45)
    assert result["sent"] == result["replies"] == 24


@needs_postgres
def test_restarted_process_recovers_its_workflows(tmp_path: Path) -> None:
    """A process killed mid-run and started again under its executor id answers what it held."""
    from bench.dbos_baseline.stack import running_dbos_stack
    from bench.load import Outbound
    from bench.waits import Deadline

    with running_dbos_stack(tmp_path, run_seconds=2.0) as stack:
        outbound, sent = Outbound(stack.redis.client), Sent()
        for index in range(5):
            eid = stack.producer.send_user_message(f"recover-{index}", f"recover {index}")
            sent.at[eid], sent.conversation[eid] = float(index), f"recover-{index}"
        running = Deadline(20, "the runs to start")
        while stack.emulator.stats()["calls"].get("createRun", 0) < 6:  # the warm-up's and these 5
            running.sleep(0.05)
        stack.workers.stop(grace=0)  # SIGTERM then SIGKILL at once: the workflows stay PENDING
        stack.workers.start(stack.redis.client)
        outbound.wait_length(5, Deadline(45, "the recovered replies"), check=stack.check_alive)
        result = audit(outbound.read_new(), sent)
    assert (result["lost"], result["duplicated"]) == (0, 0), result
