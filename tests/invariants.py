"""Checks of the outbound invariant (contract section 2), shared by the end-to-end tests."""

from __future__ import annotations

from typing import Any


def check_exactly_once_in_order(entries: list[dict[str, Any]],
                                sent: dict[str, list[str]]) -> None:
    """Every sent event id is in exactly one entry; per conversation, entries follow send order.

    `sent` maps a conversation id to its event ids in send order.
    """
    seen: dict[str, int] = {}
    for entry in entries:
        for event_id in entry["event_ids"]:
            seen[event_id] = seen.get(event_id, 0) + 1
    all_sent = [e for ids in sent.values() for e in ids]
    missing = [e for e in all_sent if e not in seen]
    twice = {e: n for e, n in seen.items() if n > 1}
    assert not missing, f"{len(missing)} events never answered, e.g. {missing[:3]}"
    assert not twice, f"events answered more than once: {list(twice.items())[:3]}"
    assert set(seen) == set(all_sent), "entries answer events nobody sent"
    for conversation_id, ids in sent.items():
        published = [e for entry in entries if entry["conversation_id"] == conversation_id
                     and entry["type"] != "event.rejected" for e in entry["event_ids"]]
        assert published == [e for e in ids if e in published], \
            f"{conversation_id}: published out of send order"
