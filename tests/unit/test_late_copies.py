"""Late copies of a batch's input in a Responses conversation (worker/backends/responses_copies.py),
found among items as the API returns them, and the wait before a create is repeated."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import REGISTRY

from tests.fake_backend import FakeBackend
from tests.unit.harness import START, FakeClock, Harness
from worker.backends import responses_copies
from worker.backends.base import Unseen
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


# --- the core, on a server that neither locks nor lists (the fake, unlocked) ---------------
LOST = TransientApiError("500 (injected)", status=500, maybe_applied=True)
WATCH = "aw:latecopy:"


def unlocked(make_harness: Callable[..., Harness], clock: FakeClock) -> Harness:
    return make_harness(FakeBackend(clock, unlocked=True))


def left_total() -> float:
    return REGISTRY.get_sample_value("assistant_duplicate_items_left_total") or 0.0


def first_create_lost_and_slow(harness: Harness, cid: str, text: str, first_seconds: float) -> str:
    """After a first batch ("warm up"), the next batch's create is applied and its answer
    lost; its run takes `first_seconds`, the creates after it the fake's usual second."""
    harness.send(cid, "warm up")
    harness.run_until_idle()
    event_id = harness.send(cid, text)
    harness.backend.fail_next("start_run", LOST, applied=True)
    harness.backend.run_seconds = first_seconds
    harness.service.advance(cid)
    harness.backend.run_seconds = 1.0
    assert harness.backend.calls.count("start_run") == 2  # warm up (with its thread), the lost one
    return event_id


def wait_until_answered(harness: Harness, cid: str, entries: int) -> None:
    """Step the conversation (the clock moving to each due time) until `entries` are out."""
    for _ in range(200):
        if len(harness.entries()) >= entries:
            return
        harness.clock.now = max(harness.clock.now, harness.next_due() or harness.clock.now)
        harness.service.advance(cid)
    raise AssertionError(f"{cid} not answered")


def test_a_lost_create_is_waited_for_and_adopted_not_repeated(make_harness: Callable[..., Harness],
                                                         clock: FakeClock) -> None:
    harness = unlocked(make_harness, clock)
    first_create_lost_and_slow(harness, "u-1", "hello", first_seconds=8.0)
    harness.run_until_idle()
    entry = harness.entries()[-1]
    assert entry["type"] == "run.completed" and len(harness.entries()) == 2
    assert len(harness.backend.runs) == 2 and harness.backend.user_texts(entry["thread_id"]) == ["warm up", "hello"]
    assert not harness.redis.exists(WATCH + "u-1")  # never created again: nothing to watch


def test_past_the_wait_it_creates_again_and_deletes_the_late_copy(make_harness: Callable[..., Harness],
                                                         clock: FakeClock) -> None:
    harness = unlocked(make_harness, clock)
    first_create_lost_and_slow(harness, "u-2", "hello", first_seconds=45.0)
    before = left_total()
    harness.run_until_idle()
    entry = harness.entries()[-1]
    assert entry["type"] == "run.completed" and len(harness.backend.runs) == 3
    assert harness.clock.now >= START + 45.0  # the watch went on until the first had ended
    assert harness.backend.user_texts(entry["thread_id"]) == ["warm up", "hello"]
    assert not harness.redis.exists(WATCH + "u-2") and left_total() == before


def test_a_later_batch_with_the_same_text_is_kept(make_harness: Callable[..., Harness],
                                                         clock: FakeClock) -> None:
    harness = unlocked(make_harness, clock)
    first_create_lost_and_slow(harness, "u-3", "hello", first_seconds=45.0)
    wait_until_answered(harness, "u-3", 2)
    assert harness.redis.exists(WATCH + "u-3")
    harness.send("u-3", "hello")  # the same words again, while the watch goes on
    harness.run_until_idle()
    entries = harness.entries()
    assert [e["type"] for e in entries] == ["run.completed"] * 3
    assert harness.backend.user_texts(entries[0]["thread_id"]) == ["warm up", "hello", "hello"]
    assert len(harness.backend.runs) == 4


@pytest.mark.parametrize("fault", ["left", "look fails"])
def test_what_could_not_be_deleted_is_counted_when_the_watch_ends(make_harness: Callable[..., Harness],
                                                                   clock: FakeClock, fault: str) -> None:
    harness = unlocked(make_harness, clock)
    first_create_lost_and_slow(harness, "u-4", "hello", first_seconds=45.0)
    before = left_total()
    if fault == "left":
        for _ in range(40):
            harness.backend.reply_next("remove_late_copies", 2)
    else:
        harness.backend.fail_next("remove_late_copies", TransientApiError("503", status=503), times=40)
    harness.run_until_idle(max_steps=2000)
    assert not harness.redis.exists(WATCH + "u-4")
    assert left_total() - before == (2 if fault == "left" else 0)


def test_a_later_answer_that_cannot_be_read_ends_the_watch_rather_than_risk_it(
        make_harness: Callable[..., Harness], clock: FakeClock) -> None:
    """A later batch with the watched texts whose own copy cannot be told apart: nothing is
    deleted (a copy left is better than an answer lost)."""
    harness = unlocked(make_harness, clock)
    first_create_lost_and_slow(harness, "u-5", "hello", first_seconds=45.0)
    wait_until_answered(harness, "u-5", 2)
    harness.backend.fail_next("copy_watch", TransientApiError("503", status=503))
    harness.send("u-5", "hello")
    harness.run_until_idle()
    assert not harness.redis.exists(WATCH + "u-5")
    harness.clock.advance(20.0)  # the first create's run ends: its copy stays
    assert harness.backend.user_texts(harness.entries()[0]["thread_id"]) == ["warm up", "hello", "hello", "hello"]


def test_a_second_answer_to_the_same_tool_calls_is_deleted() -> None:
    """A tool round's submission that outlasted its wait, made again: the late one's
    outputs and answer go, whichever came first; the user's span is no copy."""
    items = [user("u1", "a"), call("f1", "call_1"), output("o1", "call_1"), answer("m1"),
             output("o2", "call_1"), answer("m2")]
    assert remove(items, ["a"], {"m1"}) == (["o2", "m2"], 0)
    assert remove(items, ["a"], {"m2"}) == (["o1", "m1"], 0)


def test_answers_to_different_calls_are_no_copies() -> None:
    items = [user("u1", "a"), call("f1", "call_1"), output("o1", "call_1"), call("f2", "call_2"),
             output("o2", "call_2"), answer("m1")]
    assert remove(items, ["a"], {"m1"}) == ([], 0)


def test_a_lost_tool_output_submission_is_waited_for_before_it_is_sent_again(
        make_harness: Callable[..., Harness], clock: FakeClock) -> None:
    """Its answer lost, and nothing shows it (a server that neither locks nor lists): the
    outputs are not sent again before the wait a create gets, then they are, and watched."""
    harness = make_harness(tool_timeout_seconds=5.0)
    harness.send("t-1", 'call:add{"a": 1, "b": 2}')
    for _ in range(20):
        if harness.dispatched:
            break
        harness.clock.now = max(harness.clock.now, harness.next_due() or harness.clock.now)
        harness.service.advance("t-1")
    harness.backend.fail_next("submit_tool_outputs", LOST)  # not applied here, but it may have been
    for _ in range(30):
        harness.backend.reply_next("find_submission", Unseen())
    sent_at = harness.clock()
    harness.run_tools()
    submits: list[float] = []
    real_submit = harness.backend.submit_tool_outputs

    def counted(*args: Any, **kwargs: Any) -> Any:
        submits.append(harness.clock())
        return real_submit(*args, **kwargs)

    harness.backend.submit_tool_outputs = counted  # type: ignore[method-assign]
    harness.run_until_idle()
    (entry,) = harness.entries()
    assert entry["type"] == "run.completed", (entry["error"], " ".join(harness.backend.calls))
    assert len(submits) == 1 and submits[0] >= sent_at + harness.service.ctx.unseen_wait()
    assert harness.backend.calls.count("find_submission") >= 2  # looked while it waited
    assert harness.redis.exists(WATCH + "t-1") or harness.batch("t-1") is None
