"""Responses: a second response made for the same input (a create or a tool round sent again
after an unknown outcome) is confirmed before it is followed: when an earlier copy reached
the conversation first, this one is cancelled, or its copy deleted, and the earlier one is
followed (ResponsesBackend.confirm_run)."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable

import structlog

from worker.backends.base import RunState
from worker.backends.responses_items import ConversationReads, InputMatcher, items_state
from worker.errors import PermanentApiError, TransientApiError

log = structlog.get_logger("worker.backends.responses")


def confirm(reads: ConversationReads, cancel: Callable[[str], str], delete_item: Callable[[str, str], None],
            thread_id: str, since: str, expected: InputMatcher, state: RunState, output_ids: list[str],
            *, in_conversation: bool) -> RunState:
    """A response's input reaches the conversation once. Items after `since` are those
    added since the look before this response was created: a copy of the `expected`
    input among them that is not this response's own was added by an earlier response
    of ours. Then this one is cancelled or, once it added its own copy (its input and
    output: `in_conversation`), that copy is deleted, and the earlier one is followed."""
    items = reads.items_after(thread_id, since)
    matches = expected.matches(items)
    if not matches:
        return state  # nothing of ours there but what this response may add: follow it
    end = matches[0] + len(expected.keys)  # items are added in completion order: the first copy is the earliest
    own = set(output_ids)
    if in_conversation:
        answer = list(itertools.takewhile(lambda i: expected.key(i) is None, items[end:]))
        if own & {str(i.get("id")) for i in answer} or (not own and len(matches) == 1):
            return state  # the first copy is this response's own: it is the only one
    elif state.active:
        try:
            status = cancel(state.id)
        except (TransientApiError, PermanentApiError) as exc:  # refused in progress, or failed
            log.info("a second response for the same input is not cancelled yet", conversation=thread_id,
                     response_id=state.id, error=str(exc))
            return dataclasses.replace(state, confirmed=False)  # look again at the next poll
        if status != "cancelled":
            return dataclasses.replace(state, confirmed=False)
    # What this response added after the earlier copy: its output and its input items.
    rest = items[end:]
    to_delete = [str(i["id"]) for i in rest if str(i.get("id")) in own] + \
                [str(i["id"]) for i in rest if in_conversation and expected.key(i) is not None]
    for item_id in to_delete:
        delete_item(thread_id, item_id)
    log.info("a second response for the same input was dropped", conversation=thread_id,
             response_id=state.id, deleted_items=len(to_delete))
    answer = [i for i in rest if expected.key(i) is None and str(i.get("id")) not in own]
    return items_state(str(items[end - 1]["id"]), answer)
