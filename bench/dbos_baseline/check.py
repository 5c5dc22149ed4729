"""The no-fault correctness run the baseline passes before it is timed: a few conversations, a
few messages each sent one after another, every one answered once, run.completed, in order."""

from __future__ import annotations

import time
from typing import Any

from bench.audit import audit, clean
from bench.dbos_baseline.stack import DbosStack
from bench.load import Outbound, Sent
from bench.waits import Deadline


def correctness_run(stack: DbosStack, conversations: int = 10, messages: int = 3,
                    timeout: float = 60.0) -> dict[str, Any]:
    """The audit of the run (bench.audit) and whether each reply answers its own message's text;
    raises AssertionError when either fails."""
    outbound = Outbound(stack.redis.client)
    sent, texts = Sent(), {}
    for round_ in range(messages):  # the conversations interleaved, each one's messages in order
        for index in range(conversations):
            cid, text = f"check-{index}", f"check {index}.{round_}"
            at = time.time()
            eid = stack.producer.send_user_message(cid, text)
            sent.at[eid], sent.conversation[eid], texts[eid] = at, cid, text
    outbound.wait_length(len(sent), Deadline(timeout, f"{len(sent)} correctness replies"),
                         check=stack.check_alive)
    replies = outbound.read_new()
    result = audit(replies, sent)
    result["text_mismatches"] = sum(
        1 for r in replies if texts.get(r.data["event_ids"][0], "?") not in
        " ".join(m.get("text") or "" for m in r.data.get("messages") or []))
    if not clean(result) or result["text_mismatches"]:
        raise AssertionError(f"the DBOS baseline failed its correctness run: {result}")
    return result
