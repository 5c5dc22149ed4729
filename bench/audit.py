"""Checking replies against what was sent: lost, duplicated and reordered replies (the contract's
invariant: every event id in the `event_ids` of exactly one entry, in send order per conversation)."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from bench.load import Reply, Sent


def audit(replies: list[Reply], sent: Sent) -> dict[str, Any]:
    """`lost`: sent, in no entry; `duplicated`: in more than one; `reordered`: conversations whose
    events were answered out of send order; `unknown`: answered, never sent (e.g. a warm-up)."""
    seen: Counter[str] = Counter(eid for reply in replies for eid in reply.data.get("event_ids") or [])
    answered: dict[str, list[str]] = defaultdict(list)
    for reply in sorted(replies, key=lambda r: _stream_order(r.stream_id)):
        for eid in reply.data.get("event_ids") or []:
            if eid in sent.at and eid not in answered[sent.conversation[eid]]:
                answered[sent.conversation[eid]].append(eid)
    reordered = sum(1 for cid, eids in answered.items()
                    if eids != sorted(eids, key=lambda eid: sent.at[eid]))
    return {"sent": len(sent), "replies": len(replies), "lost": sum(1 for eid in sent.at if not seen[eid]),
            "duplicated": sum(1 for eid in sent.at if seen[eid] > 1), "reordered_conversations": reordered,
            "unknown": sum(1 for eid in seen if eid not in sent.at),
            "outcomes": dict(Counter(str(r.data.get("type")) for r in replies))}


def _stream_order(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def clean(result: dict[str, Any]) -> bool:
    """Every message answered once, run.completed, in order."""
    return (result["lost"] == result["duplicated"] == result["reordered_conversations"] == 0
            and result["outcomes"].get("run.completed", 0) == result["replies"] == result["sent"])
