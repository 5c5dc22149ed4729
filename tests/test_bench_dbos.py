"""The DBOS baseline (bench/dbos_baseline/) passes a no-fault correctness run: every message
answered once, run.completed, with its own text, in send order per conversation."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.dbos_baseline.database import unavailable

WHY = unavailable()
pytestmark = pytest.mark.skipif(WHY is not None, reason=f"DBOS baseline: {WHY}")


def test_correctness_run(tmp_path: Path) -> None:
    from bench.dbos_baseline.check import correctness_run
    from bench.dbos_baseline.stack import running_dbos_stack

    with running_dbos_stack(tmp_path, run_seconds=0.2) as stack:
        result = correctness_run(stack, conversations=8, messages=3, timeout=45)
    assert result["sent"] == result["replies"] == 24


def test_restarted_process_recovers_its_workflows(tmp_path: Path) -> None:
    """A process killed mid-run and started again under its executor id answers what it held."""
    from bench.audit import audit
    from bench.dbos_baseline.stack import running_dbos_stack
    from bench.load import Outbound, Sent
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
