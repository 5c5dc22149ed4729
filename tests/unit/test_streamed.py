"""RUNNING for a run followed by its stream (conversation/streamed.py), phase by phase on
the fake backend: the reader's stored state is used without a poll, a healthy stream is
only polled at the safety poll (sooner when the run's timeout comes first), and a broken
stream, or one whose owner stopped beating, is re-attached or polled."""

from __future__ import annotations

from tests.unit.harness import START, Harness
from tests.unit.test_transitions import CALL, make_batch, run
from worker import keys
from worker.backends.base import RunState
from worker.batch import Phase
from worker.conversation import streamed
from worker.conversation.transitions import DispatchTools, Finish, Polled, Step, Wait
from worker.streams import state

OWNER = "host:1:abc/1"


def test_the_state_the_stream_stored_is_used_without_a_poll(harness: Harness) -> None:
    stored = RunState(id="run_1", status="requires_action", tool_calls=[CALL])
    batch = make_batch(Phase.RUNNING, stream_owner=OWNER, stream_ended=f"{OWNER} {START}",
                       stream_run=state.encode_run(stored))
    transition = harness.service._handle(Step(1), batch)
    assert isinstance(transition, DispatchTools) and transition.calls == [CALL]
    assert transition.batch.stream_owner is None  # taken: that stream is done
    assert "get_run" not in harness.backend.calls


def test_an_earlier_stream_s_state_is_not_this_one_s(harness: Harness) -> None:
    stored = RunState(id="run_1", status="completed")
    batch = make_batch(Phase.RUNNING, stream_owner=OWNER, stream_ended=f"host:1:abc/0 {START}",
                       stream_run=state.encode_run(stored))
    harness.store.redis.set(keys.streamer("host:1:abc"), "1")
    harness.backend.reply_next("get_run", run("in_progress"))
    transition = harness.service._handle(Step(1), batch)
    assert isinstance(transition, Polled)  # polled (an event or the safety poll woke it): still running
    assert transition.delay == harness.service.ctx.settings.stream_safety_poll_seconds


def test_a_healthy_stream_comes_back_at_its_timeout_when_that_is_sooner(harness: Harness) -> None:
    timeout = harness.service.ctx.settings.run_timeout_seconds
    batch = make_batch(Phase.RUNNING, stream_owner=OWNER, run_started_at=START - timeout + 3)
    delay = streamed.delay(harness.service.ctx, batch, run("in_progress"))
    assert delay == 3.0


def test_a_stream_whose_owner_stopped_beating_is_taken_over(harness: Harness) -> None:
    batch = make_batch(Phase.RUNNING, stream_owner=OWNER)  # no heartbeat key: the owner is gone
    harness.backend.reply_next("get_run", run("in_progress"))
    transition = harness.service._handle(Step(1), batch)
    assert isinstance(transition, Wait)
    assert transition.batch.stream_owner is None and transition.batch.stream_breaks == 1  # the fake cannot re-attach
    assert transition.delay < harness.service.ctx.settings.stream_safety_poll_seconds  # polled from now on


def test_a_broken_stream_is_re_attached_where_the_api_can(harness: Harness) -> None:
    batch = make_batch(Phase.RUNNING, stream_owner=OWNER, stream_ended=f"{OWNER} {START}",
                       stream_run=state.encode_broken("cut"), stream_cursor="run_1 7")
    seen: list[str | None] = []

    def follow(thread_id: str, run_id: str, cursor: str | None, target: object) -> str:
        seen.append(cursor)
        return "host:1:abc/2"

    harness.backend.follow_stream = follow  # type: ignore[method-assign, assignment]
    transition = harness.service._handle(Step(1), batch)
    assert isinstance(transition, Wait) and transition.batch.stream_owner == "host:1:abc/2"
    assert seen == ["run_1 7"] and "get_run" not in harness.backend.calls


def test_a_stream_that_keeps_breaking_is_polled_after_three_re_attaches(harness: Harness) -> None:
    batch = make_batch(Phase.RUNNING, stream_owner=OWNER, stream_ended=f"{OWNER} {START}",
                       stream_run=state.encode_broken("cut"), stream_breaks=streamed.MAX_RESUMES)
    harness.backend.follow_stream = lambda *args: "never"  # type: ignore[method-assign, assignment]
    harness.backend.reply_next("get_run", run("in_progress"))
    transition = harness.service._handle(Step(1), batch)
    assert isinstance(transition, Wait) and transition.batch.stream_owner is None
    assert "get_run" in harness.backend.calls


def test_a_server_ended_stream_is_polled_not_re_attached(harness: Harness) -> None:
    batch = make_batch(Phase.RUNNING, stream_owner=OWNER, stream_ended=f"{OWNER} {START}",
                       stream_run=state.encode_broken("ended", resumable=False))
    harness.backend.follow_stream = lambda *args: "never"  # type: ignore[method-assign, assignment]
    harness.backend.reply_next("get_run", run("in_progress"))
    transition = harness.service._handle(Step(1), batch)
    assert isinstance(transition, Wait) and transition.batch.stream_owner is None
    assert "get_run" in harness.backend.calls


def test_an_ended_run_s_streamed_messages_answer_it_without_a_read(harness: Harness) -> None:
    carried = [{"id": "msg_9", "role": "assistant", "text": "from the stream", "annotations": [], "created_at": 1}]
    stored = RunState(id="run_1", status="completed", messages=carried)
    batch = make_batch(Phase.RUNNING, stream_owner=OWNER, stream_ended=f"{OWNER} {START}",
                       stream_run=state.encode_run(stored))
    transition = harness.service._handle(Step(1), batch)
    assert isinstance(transition, Finish) and transition.entry is not None
    assert [m.text for m in transition.entry.messages] == ["from the stream"]
    assert "run_messages" not in harness.backend.calls and "get_run" not in harness.backend.calls


def test_an_ended_run_without_streamed_messages_has_them_read(harness: Harness) -> None:
    stored = RunState(id="run_1", status="completed")  # a tool round's stream: not the whole run
    batch = make_batch(Phase.RUNNING, stream_owner=OWNER, stream_ended=f"{OWNER} {START}",
                       stream_run=state.encode_run(stored))
    harness.service._handle(Step(1), batch)
    assert "run_messages" in harness.backend.calls
