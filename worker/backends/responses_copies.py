"""Late copies of a batch's input in a conversation, found and deleted.

On a server that neither locks a conversation while a response runs nor lists responses, a
create whose answer was lost cannot be seen until its response completes. The worker waits
for it for a while, then creates again; the first may still complete after that and add the
batch's user items, and an answer, a second time: a late copy. After such a batch is
published its conversation is watched (worker/conversation/late_copies.py) and every copy
but the one published is deleted (`conversations.items.delete`).

A response's items reach the conversation together when it completes, in a row: its input
(user messages, or the function call outputs of a tool round), then its output. So the
items cut into spans, each an input run followed by an output run, and a copy of a batch's
input is a span whose user messages are the batch's texts, in order, neither more nor fewer.
The kept copy is the span holding one of the kept items (what the published run added), or,
when that is a tool round's, the span whose function calls that round answered, back to the
user messages.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from worker.backends.base import RunRequest
from worker.backends.responses_items import ConversationReads, is_user_message, item_text, items_marker
from worker.errors import PermanentApiError, TransientApiError

Span = list[dict[str, Any]]


def watch(reads: ConversationReads, request: RunRequest, run_id: str) -> dict[str, Any]:
    """Where the batch's copies would come after, its texts, and what its published run added."""
    marker = items_marker(run_id)
    kept = [marker] if marker is not None else [str(i.get("id")) for i in reads.output(request.thread, run_id)]
    return {"marker": reads.marker(request), "texts": [e.content for e in request.events], "kept": kept}


def spans(items: list[dict[str, Any]]) -> list[Span]:
    """The items cut where an input item follows an output item."""
    cut: list[Span] = []
    in_output = True
    for item in items:
        is_input = is_user_message(item) or item.get("type") == "function_call_output"
        if not cut or (is_input and in_output):
            cut.append([])
        in_output = not is_input
        cut[-1].append(item)
    return cut


def copies(cut: list[Span], texts: list[str]) -> list[Span]:
    """The spans that are a copy of an input of these user texts."""
    wanted = [t.strip() for t in texts]
    return [span for span in cut
            if [item_text(i).strip() for i in span if is_user_message(i)] == wanted]


def kept_chain(cut: list[Span], kept: set[str]) -> list[Span]:
    """The spans of the kept answer: the one holding a kept item, then back through tool
    rounds, each span to the one whose function calls it answers (at most every span once)."""
    span = next((s for s in cut if kept & _ids(s)), None)
    chain: list[Span] = []
    while span is not None and len(chain) < len(cut):
        chain.append(span)
        if span[0].get("type") != "function_call_output":
            break
        answered = {str(i.get("call_id")) for i in span if i.get("type") == "function_call_output"}
        span = next((s for s in cut if any(i.get("type") == "function_call" and str(i.get("call_id")) in answered
                                           for i in s)), None)
    return chain


def kept_copy(cut: list[Span], kept: set[str]) -> Span | None:
    """The span of the kept copy of the input: where the kept chain begins (None when it
    cannot be followed back to the user's messages)."""
    chain = kept_chain(cut, kept)
    first = chain[-1] if chain else None
    return None if first is None or first[0].get("type") == "function_call_output" else first


def answer_copies(cut: list[Span], kept: set[str]) -> list[Span]:
    """Spans answering function calls that another span answers already (a tool round's
    submission that outlasted its wait, then made again): all but the kept one (or the first)."""
    groups: dict[frozenset[str], list[Span]] = {}
    for span in cut:
        answered = frozenset(str(i.get("call_id")) for i in span if i.get("type") == "function_call_output")
        if answered:
            groups.setdefault(answered, []).append(span)
    chain, extra = kept_chain(cut, kept), []
    for same in groups.values():
        keep = next((span for span in same if any(span is link for link in chain)), same[0])
        extra += [span for span in same if span is not keep]
    return extra


def remove(items: list[dict[str, Any]], texts: list[str], kept: set[str],
           delete: Callable[[str], None]) -> int:
    """Delete the items of every copy but the kept one (the first, when the kept one is not
    found), of the batch's input and of a tool round's answer; returns how many could not
    be deleted."""
    cut = spans(items)
    found = copies(cut, texts)
    keep = kept_copy(cut, kept)
    if keep is None or not any(keep is span for span in found):
        keep = found[0] if found else None
    return _delete([span for span in found if span is not keep] + answer_copies(cut, kept), delete)


def _delete(extra: list[Span], delete: Callable[[str], None]) -> int:
    left = 0
    for span in extra:
        for item in span:
            try:
                delete(str(item.get("id")))
            except PermanentApiError as exc:
                left += exc.status != 404  # 404: deleted already (by another look)
            except TransientApiError:
                left += 1  # tried again at the next look
    return left


def _ids(span: Span) -> set[str]:
    return {str(i.get("id")) for i in span}
