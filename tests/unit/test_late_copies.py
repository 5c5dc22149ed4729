"""Late copies of a batch's input in a Responses conversation (worker/backends/responses_copies.py),
found among items as the API returns them, and the wait before a create is repeated."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.unit.harness import Harness
from worker.backends import responses_copies
from worker.errors import TransientApiError


def user(item_id: str, text: str) -> dict[str, Any]:
    return {"id": item_id, "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def answer(item_id: str, text: str = "ok") -> dict[str, Any]:
    return {"id": item_id, "type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text}]}


def call(item_id: str, call_id: str) -> dict[str, Any]:
    return {"id": item_id, "type": "function_call", "call_id": call_id, "name": "add", "arguments": "{}"}


def output(item_id: str, call_id: str) -> dict[str, Any]:
    return {"id": item_id, "type": "function_call_output", "call_id": call_id, "output": "3"}


def remove(items: list[dict[str, Any]], texts: list[str], kept: set[str],
           failing: frozenset[str] = frozenset()) -> tuple[list[str], int]:
    deleted: list[str] = []

    def delete(item_id: str) -> None:
        if item_id in failing:
            raise TransientApiError("500 (injected)", status=500)
        deleted.append(item_id)

    return deleted, responses_copies.remove(items, texts, kept, delete)


def test_a_late_copy_after_the_kept_one_is_deleted_with_its_answer() -> None:
    items = [user("u1", "a"), user("u2", "b"), answer("m1"), user("u3", "next"), answer("m2"),
             user("u4", "a"), user("u5", "b"), answer("m3")]
    assert remove(items, ["a", "b"], {"m1"}) == (["u4", "u5", "m3"], 0)


def test_the_kept_copy_may_be_the_later_one() -> None:
    items = [user("u1", "a"), answer("m1"), user("u2", "a"), answer("m2")]
    assert remove(items, ["a"], {"m2"}) == (["u1", "m1"], 0)


def test_a_batch_that_holds_the_texts_among_others_is_no_copy() -> None:
    items = [user("u1", "a"), answer("m1"), user("u2", "a"), user("u3", "and more"), answer("m2")]
    assert remove(items, ["a"], {"m1"}) == ([], 0)


def test_the_kept_copy_is_found_back_through_its_tool_round() -> None:
    """The published run is the tool round's response: its output is in a span of its own,
    whose function call outputs answer the calls of the kept copy."""
    items = [user("u1", "a"), call("f1", "call_1"), output("o1", "call_1"), answer("m1"),
             user("u2", "a"), call("f2", "call_2")]
    assert remove(items, ["a"], {"m1"}) == (["u2", "f2"], 0)


def test_without_the_kept_copy_the_first_stays() -> None:
    items = [user("u1", "a"), answer("m1"), user("u2", "a"), answer("m2")]
    assert remove(items, ["a"], {"gone"}) == (["u2", "m2"], 0)


def test_items_that_could_not_be_deleted_are_counted() -> None:
    items = [user("u1", "a"), answer("m1"), user("u2", "a"), answer("m2")]
    assert remove(items, ["a"], {"m1"}, failing=frozenset({"u2", "m2"})) == ([], 2)


def test_the_wait_for_an_unseen_create_follows_response_durations(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(run_timeout_seconds=100.0)
    ctx = harness.service.ctx
    assert ctx.unseen_wait() == 30.0  # nothing learnt yet
    for n in range(10):
        ctx.planner.ended(f"p{n}", 20.0)
    assert ctx.unseen_wait() == 60.0  # three times the 99th percentile
    for n in range(10):
        ctx.planner.ended(f"q{n}", 50.0)
    assert ctx.unseen_wait() == 100.0  # at most RUN_TIMEOUT_SECONDS
