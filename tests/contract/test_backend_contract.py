"""The backend contract (worker/backends/base.py), one suite for every backend: the fake
of the unit tests (tests/fake_backend.py) and both real ones on the emulator, through the
real SDK over HTTP. A promise the fake keeps and a real backend breaks (or the other way
round) fails here, so that the unit tests never rest on a fake that drifted."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from emulator import EmulatorServer
from tests import threads
from tests.emulator_fixtures import make_emulator, openai_client  # noqa: F401 - a fixture
from tests.fake_backend import KNOWN_ASSISTANT, FakeBackend
from tests.unit.harness import FakeClock
from worker.backends.api import ApiCalls
from worker.backends.assistants import AssistantsBackend
from worker.backends.base import Busy, RunBackend, RunRequest, RunState, Started, ThreadOpened, Unseen
from worker.backends.responses import ResponsesBackend
from worker.capabilities import Capability, CapabilityStore
from worker.errors import (
    InvalidRequestError,
    PermanentApiError,
    RouteNotFoundError,
    ThreadNotFoundError,
    TransientApiError,
)
from worker.events import InboundEvent

ADD = {"type": "function", "function": {"name": "add", "parameters": {
    "type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}}}}
DEADLINE_SECONDS = 10.0
MAX_CONTENT_CHARS = 1000  # the longest message the API takes here (a server with a lower limit than OpenAI's)


@dataclass
class Subject:
    """A backend under test, and how the test reads what the API holds."""

    name: str
    backend: RunBackend
    tick: Callable[[], None]  # let the API's time pass a little
    user_texts: Callable[[str], list[str]]
    lose: Callable[[str], None]  # the server deletes a thread (conversation)

    def request(self, thread_id: str | None, *texts: str, batch_id: str = "batch-1", reconciling: bool = False,
                assistant_id: str = KNOWN_ASSISTANT) -> RunRequest:
        events = [InboundEvent(event_id=f"{batch_id}-{n}", conversation_id="conv-c", content=text,
                               sent_at=time.time()) for n, text in enumerate(texts)]
        return RunRequest(conversation_id="conv-c", thread_id=thread_id, assistant_id=assistant_id,
                          instructions=None, batch_id=batch_id, attempt=0, events=events, reconciling=reconciling)

    def start(self, *texts: str, thread_id: str | None = None, **options: object) -> Started:
        """start_run until it gets there (a thread first, a busy conversation waited for)."""
        deadline = time.monotonic() + DEADLINE_SECONDS
        while time.monotonic() < deadline:
            started = self.backend.start_run(self.request(thread_id, *texts, **options))  # type: ignore[arg-type]  # test options
            if isinstance(started, Started):
                return started
            if isinstance(started, ThreadOpened):
                thread_id = started.thread_id
            else:
                self.tick()
        raise AssertionError("start_run did not get to a run")

    def follow(self, thread_id: str, run_id: str) -> RunState:
        """Poll until the run needs the worker."""
        deadline = time.monotonic() + DEADLINE_SECONDS
        while time.monotonic() < deadline:
            state = self.backend.get_run(thread_id, run_id)
            if state.needs_worker:
                return state
            self.tick()
        raise AssertionError(f"{run_id} did not end")


def fake_subject() -> Subject:
    clock = FakeClock()
    fake = FakeBackend(clock, run_seconds=0.5, max_content_chars=MAX_CONTENT_CHARS)
    return Subject("fake", fake, lambda: clock.advance(0.1), fake.user_texts, fake.lose_thread)


def emulated_subject(name: str, srv: EmulatorServer) -> Subject:
    client = openai_client(srv)
    backend: RunBackend
    if name == "assistants":
        backend = AssistantsBackend(client)
        lose: Callable[[str], object] = client.beta.threads.delete
    else:
        backend = ResponsesBackend(client, model="gpt-4o", instructions=None, tools=[ADD])
        lose = client.conversations.delete
    api = "assistants" if name == "assistants" else "responses"
    return Subject(name, backend, lambda: time.sleep(0.02),
                   lambda thread: threads.user_texts(srv.base_url, api, thread), lambda thread: _discard(lose(thread)))


# "responses+list": a server that also lists responses (GET /responses, found by tag).
@pytest.fixture(params=["fake", "assistants", "responses", "responses+list"])
def subject(request: pytest.FixtureRequest, make_emulator: Callable[..., EmulatorServer]) -> Iterator[Subject]:  # noqa: F811 - the fixture
    lists = request.param == "responses+list"
    made = fake_subject() if request.param == "fake" else emulated_subject(
        request.param, make_emulator(run_seconds=0.1, max_content_chars=MAX_CONTENT_CHARS, list_responses=lists))
    yield made
    made.backend.close()


def test_a_new_conversation_gets_a_thread_and_a_run_that_answers(subject: Subject) -> None:
    started = subject.start("hello")
    assert not started.adopted
    state = subject.follow(started.thread_id, started.run.id)
    assert state.status == "completed"
    messages = subject.backend.run_messages(started.thread_id, state.id)
    assert [m["role"] for m in messages] == ["assistant"] and "hello" in messages[0]["text"]
    assert subject.user_texts(started.thread_id) == ["hello"]


def test_a_batch_s_messages_go_in_with_its_run_once(subject: Subject) -> None:
    first = subject.start("one")
    subject.follow(first.thread_id, first.run.id)
    second = subject.start("two", "three", thread_id=first.thread_id, batch_id="batch-2")
    state = subject.follow(second.thread_id, second.run.id)
    assert state.status == "completed"
    assert subject.user_texts(first.thread_id) == ["one", "two", "three"]


def test_a_create_whose_answer_was_lost_is_found_not_repeated(subject: Subject) -> None:
    thread = subject.start("hello").thread_id
    subject.follow(thread, subject.start("warm up", thread_id=thread, batch_id="b0").run.id)
    lost = subject.backend.start_run(subject.request(thread, "was it created?"))  # its answer is "lost"
    assert isinstance(lost, Started)
    again = subject.start("was it created?", thread_id=thread, reconciling=True)
    state = subject.follow(thread, again.run.id)
    assert state.status == "completed"
    assert subject.user_texts(thread) == ["hello", "warm up", "was it created?"]


def test_a_tool_round_is_submitted_and_followed_to_the_answer(subject: Subject) -> None:
    started = subject.start('call:add{"a": 1, "b": 2}')
    state = subject.follow(started.thread_id, started.run.id)
    assert state.status == "requires_action" and [c.name for c in state.tool_calls] == ["add"]
    outputs = [{"tool_call_id": c.id, "output": "3"} for c in state.tool_calls]
    follow = subject.backend.submit_tool_outputs(started.thread_id, state.id, outputs).run_id
    assert (follow != state.id) == subject.backend.capabilities.tool_round_starts_run
    done = subject.follow(started.thread_id, follow)
    assert done.status == "completed"
    assert "3" in subject.backend.run_messages(started.thread_id, done.id)[0]["text"]


def test_a_cancelled_run_stops(subject: Subject) -> None:
    started = subject.start("sleep:30")
    subject.backend.cancel_run(started.thread_id, started.run.id)
    assert subject.follow(started.thread_id, started.run.id).status == "cancelled"


def test_a_thread_busy_with_another_run_is_busy_not_an_error(subject: Subject) -> None:
    started = subject.start("sleep:30")
    busy = subject.backend.start_run(subject.request(started.thread_id, "me too", batch_id="batch-2"))
    assert isinstance(busy, Busy)
    assert (busy.foreign is not None) == subject.backend.capabilities.lists_runs
    if busy.foreign is not None:
        assert busy.foreign.id == started.run.id


def test_find_run_finds_this_batch_s_run_only(subject: Subject) -> None:
    started = subject.start("hello")
    subject.follow(started.thread_id, started.run.id)
    found = subject.backend.find_run(subject.request(started.thread_id, "hello", reconciling=True))
    assert found is not None and found.status == "completed"
    other = subject.request(started.thread_id, "something else", batch_id=uuid.uuid4().hex, reconciling=True)
    assert subject.backend.find_run(other) is None


def test_an_unknown_assistant_is_the_request_s_fault_where_runs_name_one(subject: Subject) -> None:
    """Where runs name an assistant, an unknown one is refused (the batch is rejected);
    where they do not, the assistant id is not sent and the run starts."""
    if subject.backend.capabilities.needs_assistant:
        with pytest.raises(InvalidRequestError):
            subject.backend.start_run(subject.request(None, "hello", assistant_id="asst_nobody"))
    else:
        assert subject.start("hello", assistant_id="asst_nobody").run.id


def test_an_unknown_run_is_an_api_error(subject: Subject) -> None:
    thread = subject.start("hello").thread_id
    with pytest.raises((PermanentApiError, TransientApiError)):
        subject.backend.get_run(thread, "run_does_not_exist")


def _discard(value: object) -> None:
    """What a delete answers is not needed."""


def test_a_message_longer_than_the_api_takes_is_the_event_s_fault_with_the_api_s_code(subject: Subject) -> None:
    started = subject.start("hello")
    thread = subject.follow(started.thread_id, started.run.id) and started.thread_id
    with pytest.raises(InvalidRequestError) as refused:
        subject.backend.start_run(subject.request(thread, "x" * (MAX_CONTENT_CHARS + 1), batch_id="batch-2"))
    assert refused.value.code == "string_above_max_length" and refused.value.status == 400
    assert "string too long" in str(refused.value)
    assert subject.user_texts(thread) == ["hello"], "nothing was appended"


def test_a_thread_the_server_lost_is_thread_not_found(subject: Subject) -> None:
    """Every call on the thread raises ThreadNotFoundError naming it. On Responses a
    response outlives its conversation: it is still read."""
    started = subject.start("hello")
    done = subject.follow(started.thread_id, started.run.id)
    subject.lose(started.thread_id)
    with pytest.raises(ThreadNotFoundError) as lost:
        subject.backend.start_run(subject.request(started.thread_id, "again", batch_id="batch-2"))
    assert lost.value.thread_id in (None, started.thread_id) and lost.value.code == "thread_not_found"
    if subject.name != "responses+list":  # a listed response is found by its tag, conversation or not
        with pytest.raises(ThreadNotFoundError):
            subject.backend.find_run(subject.request(started.thread_id, "hello", reconciling=True))
    if subject.name.startswith("responses"):
        assert subject.backend.get_run(started.thread_id, done.id).status == "completed"
    else:
        with pytest.raises(ThreadNotFoundError):
            subject.backend.get_run(started.thread_id, done.id)


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_an_unknown_route_is_route_not_found_through_the_sdk_and_the_reader(
        make_emulator: Callable[..., EmulatorServer], method: str) -> None:  # noqa: F811 - the fixture
    api = ApiCalls(openai_client(make_emulator()))
    try:
        with pytest.raises(RouteNotFoundError) as missing:
            if method == "POST":
                api.call("nothing.create", True, lambda: api.client.post("/threads/x/nothing", cast_to=object, body={}))
            else:
                api.read("nothing.list", "threads/x/nothing")
        assert missing.value.code == "route_not_found" and missing.value.final
        assert str(missing.value) == f"Invalid URL ({method} /v1/threads/x/nothing)"
    finally:
        api.close()


def test_a_lost_create_still_running_is_found_or_refuses_a_second(subject: Subject) -> None:
    """Where runs (or responses) can be listed, a create whose answer was lost is found by
    its tag while it still runs; where they cannot, a server that locks the conversation
    (learnt by a probe) refuses a second create: busy, look again later."""
    first = subject.start("hello")
    thread = first.thread_id
    subject.follow(thread, first.run.id)
    text = "sleep:0.5 am I there?"
    lost = subject.backend.start_run(subject.request(thread, text, batch_id="b-lost"))
    assert isinstance(lost, Started)
    again = subject.backend.start_run(subject.request(thread, text, batch_id="b-lost", reconciling=True))
    if subject.name == "responses":
        assert isinstance(again, Busy) and again.foreign is None
    else:
        assert isinstance(again, Started) and again.adopted and again.run.id == lost.run.id
    subject.follow(thread, lost.run.id)
    assert subject.user_texts(thread) == ["hello", text]


@pytest.mark.parametrize("lists", [True, False])
def test_whether_responses_are_listed_is_probed_once(make_emulator: Callable[..., EmulatorServer],  # noqa: F811
                                                    lists: bool) -> None:
    srv = make_emulator(list_responses=lists)
    known = CapabilityStore(None, srv.base_url, {}, ttl_seconds=60.0)
    backend = ResponsesBackend(openai_client(srv), model="gpt-4o", instructions=None, tools=[], known=known)
    try:
        assert backend.listing.available() is lists
        assert backend.listing.available() is lists
        assert srv.stats()["calls"].get("listResponses") == 1
        learnt = known.get(Capability.LIST_RESPONSES)
        assert learnt.value is lists and "GET /responses" in learnt.reason
        assert backend.capabilities.leaves_late_copies is not lists  # the lock is not known
    finally:
        backend.close()


def test_a_forced_listing_setting_is_not_probed(make_emulator: Callable[..., EmulatorServer]) -> None:  # noqa: F811
    srv = make_emulator(list_responses=True)
    known = CapabilityStore(None, srv.base_url, {Capability.LIST_RESPONSES: "off"}, ttl_seconds=60.0)
    backend = ResponsesBackend(openai_client(srv), model="gpt-4o", instructions=None, tools=[], known=known)
    try:
        assert backend.listing.available() is False
        assert "listResponses" not in srv.stats()["calls"]
    finally:
        backend.close()


def test_the_listing_finds_a_create_by_its_batch_and_attempt(make_emulator: Callable[..., EmulatorServer]) -> None:  # noqa: F811
    srv = make_emulator(list_responses=True, conversation_lock=False)
    subject = emulated_subject("responses", srv)
    try:
        thread = subject.start("hello").thread_id
        other = subject.start("elsewhere").thread_id
        ours = subject.backend.start_run(subject.request(thread, "mine", batch_id="b-mine"))
        subject.backend.start_run(subject.request(other, "same tag, other conversation", batch_id="b-mine"))
        for _ in range(3):  # newer responses of others: the look pages back past them
            subject.backend.start_run(subject.request(other, "noise", batch_id=uuid.uuid4().hex))
        assert isinstance(ours, Started)
        found = subject.backend.find_run(subject.request(thread, "mine", batch_id="b-mine", reconciling=True))
        assert found is not None and found.id == ours.run.id
        retry = dataclasses.replace(subject.request(thread, "mine", batch_id="b-mine", reconciling=True), attempt=1)
        assert subject.backend.find_run(retry) is None  # another attempt's create is not ours
        started = subject.backend.start_run(retry)  # not listed: never made, created at once
        assert isinstance(started, Started) and not started.adopted
        assert srv.stats()["model_responses"]["total"] == 8  # hello, elsewhere, mine, its namesake, 3 noise, retry
    finally:
        subject.backend.close()


@pytest.mark.parametrize("locks", [True, False])
def test_whether_a_conversation_locks_is_probed_once_and_decides_a_lost_create(
        make_emulator: Callable[..., EmulatorServer], locks: bool) -> None:  # noqa: F811 - the fixture
    """Probed on a conversation of its own (two responses at once, both cancelled); where
    it does not lock, a lost create that still runs is Unseen: nothing is created again."""
    srv = make_emulator(conversation_lock=locks, run_seconds=0.5)
    subject = emulated_subject("responses", srv)
    backend = subject.backend
    assert isinstance(backend, ResponsesBackend)
    try:
        first = subject.start("hello")
        thread = first.thread_id
        subject.follow(thread, first.run.id)
        lost = backend.start_run(subject.request(thread, "still running?", batch_id="b-lost"))
        assert isinstance(lost, Started)
        again = backend.start_run(subject.request(thread, "still running?", batch_id="b-lost", reconciling=True))
        assert isinstance(again, Busy if locks else Unseen)
        learnt = backend.known.get(Capability.CONVERSATION_LOCK)
        assert learnt.value is locks
        assert backend.lock.locks(probe=True) is locks  # learnt: not probed again
        probes = [r for r in srv.runs() if r["thread_id"] != thread]
        assert len(probes) == (1 if locks else 2) and {r["status"] for r in probes} == {"cancelled"}
        assert srv.stats()["calls"]["createConversation"] == 2  # ours, and the probe's
    finally:
        backend.close()
