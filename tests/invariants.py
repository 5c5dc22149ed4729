"""Checks of the outbound invariant (contract section 2), shared by the end-to-end tests."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any


@dataclass
class Violations:
    """What breaks the invariant: events never answered, answered more than once, answered
    though nobody sent them, and conversations whose entries do not follow send order."""

    missing: list[str]
    twice: dict[str, int]
    unknown: list[str]
    out_of_order: list[str]

    def count(self) -> int:
        return len(self.missing) + len(self.twice) + len(self.unknown) + len(self.out_of_order)


def find_violations(entries: list[dict[str, Any]], sent: dict[str, list[str]]) -> Violations:
    """`sent` maps a conversation id to its event ids in send order."""
    seen: dict[str, int] = {}
    for entry in entries:
        for event_id in entry["event_ids"]:
            seen[event_id] = seen.get(event_id, 0) + 1
    all_sent = [e for ids in sent.values() for e in ids]
    unknown = sorted(set(seen) - set(all_sent))
    out_of_order = []
    for conversation_id, ids in sent.items():
        published = [e for entry in entries if entry["conversation_id"] == conversation_id
                     and entry["type"] != "event.rejected" for e in entry["event_ids"]]
        if published != [e for e in ids if e in published]:
            out_of_order.append(conversation_id)
    return Violations(missing=[e for e in all_sent if e not in seen],
                      twice={e: n for e, n in seen.items() if n > 1}, unknown=unknown, out_of_order=out_of_order)


def check_exactly_once_in_order(entries: list[dict[str, Any]],
                                sent: dict[str, list[str]]) -> None:
    """Every sent event id is in exactly one entry; per conversation, entries follow send order.

    `sent` maps a conversation id to its event ids in send order.
    """
    found = find_violations(entries, sent)
    assert not found.missing, f"{len(found.missing)} events never answered, e.g. {found.missing[:3]}"
    assert not found.twice, f"events answered more than once: {list(found.twice.items())[:3]}"
    assert not found.unknown, "entries answer events nobody sent"
    assert not found.out_of_order, f"{found.out_of_order[0]}: published out of send order"


def delta_violations(entries: list[dict[str, Any]], deltas: dict[str, list[dict[str, Any]]]) -> list[str]:
    """What breaks the delta streams' invariants (contract, "Deltas"), given the outbound
    entries and each conversation's delta stream: seq strictly increasing per batch in
    stream order; every run.completed entry has exactly one run.ended in its conversation's
    stream (and no entry more than one), and each of its messages' deltas since the batch's
    last run.started join to the message's text."""
    found: list[str] = []
    batches: dict[tuple[str, tuple[str, ...]], list[dict[str, Any]]] = {}
    for conversation_id, stream in deltas.items():
        for delta in stream:
            batches.setdefault((conversation_id, tuple(delta["event_ids"])), []).append(delta)
    for key, batch in batches.items():
        seqs = [d["seq"] for d in batch]
        if any(b <= a for a, b in itertools.pairwise(seqs)):
            found.append(f"{key}: seq not strictly increasing: {seqs}")
    for entry in entries:
        if entry["type"] == "event.rejected":
            continue
        batch = batches.get((entry["conversation_id"], tuple(entry["event_ids"])), [])
        ended = [d for d in batch if d["type"] == "run.ended"]
        if len(ended) > 1 or (entry["type"] == "run.completed" and len(ended) != 1):
            found.append(f"{entry['event_ids']}: {len(ended)} run.ended for a {entry['type']} entry")
        if ended and ended[0]["outcome"] != entry["type"]:
            found.append(f"{entry['event_ids']}: run.ended says {ended[0]['outcome']}, the entry {entry['type']}")
        if entry["type"] == "run.completed":
            found.extend(_text_violations(entry, batch))
    return found


def _text_violations(entry: dict[str, Any], batch: list[dict[str, Any]]) -> list[str]:
    starts = [n for n, d in enumerate(batch) if d["type"] == "run.started"]
    final_run = batch[starts[-1]:] if starts else []
    texts: dict[str, str] = {}
    for delta in final_run:
        if delta["type"] == "message.delta":
            texts[delta["message_id"]] = texts.get(delta["message_id"], "") + delta["text"]
    # A message without text (an image alone) has no delta: its deltas join to "".
    return [f"{entry['event_ids']}: message {m['id']}: deltas {texts.get(m['id'], '')!r} != {m['text']!r}"
            for m in entry["messages"] if texts.get(m["id"], "") != m["text"]]
