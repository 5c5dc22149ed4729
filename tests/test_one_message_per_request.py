"""The Assistants backend on a server that takes one user message per request: each of a
batch's messages is appended alone, tagged with its event id, then the run is created;
after an unknown outcome the thread's tags say what is there already. Real SDK, emulator."""

from __future__ import annotations

import time
from collections.abc import Callable

from emulator import EmulatorServer
from tests import threads
from tests.emulator_fixtures import make_emulator, openai_client  # noqa: F401 - a fixture
from tests.fake_backend import KNOWN_ASSISTANT
from worker.backends.assistants import AssistantsBackend
from worker.backends.base import Appended, RunRequest, Started
from worker.capabilities import Capability, CapabilityStore
from worker.events import InboundEvent


def request(thread_id: str, texts: list[str], appended: int = 0, reconciling: bool = False) -> RunRequest:
    events = [InboundEvent(event_id=f"ev-{text}", conversation_id="conv-1", content=text, sent_at=time.time())
              for text in texts]
    return RunRequest(conversation_id="conv-1", thread_id=thread_id, assistant_id=KNOWN_ASSISTANT,
                      instructions=None, batch_id="b-1", attempt=0, events=events, appended=appended,
                      reconciling=reconciling)


def one_at_a_time(srv: EmulatorServer) -> AssistantsBackend:
    known = CapabilityStore(None, srv.base_url, {Capability.MULTI_MESSAGE_RUNS: "off"}, ttl_seconds=60)
    return AssistantsBackend(openai_client(srv), known=known)


def test_each_message_is_appended_alone_then_the_run_takes_the_last(
        make_emulator: Callable[..., EmulatorServer]) -> None:  # noqa: F811 - the fixture
    srv = make_emulator(run_seconds=0.1)
    backend = one_at_a_time(srv)
    assert not backend.capabilities.messages_with_run
    thread = backend.create_thread("conv-1")
    texts = ["one", "two", "three"]
    assert backend.start_run(request(thread, texts)) == Appended(1)
    assert backend.start_run(request(thread, texts, appended=1)) == Appended(2)
    started = backend.start_run(request(thread, texts, appended=2))
    assert isinstance(started, Started)
    assert threads.user_texts(srv.base_url, "assistants", thread) == texts
    tags = [m["metadata"].get("event_id") for m in threads.thread_messages(srv.base_url, thread)
            if m["role"] == "user"]
    assert tags == ["ev-one", "ev-two", "ev-three"]
    backend.close()


def test_after_an_unknown_outcome_the_tags_say_what_is_there(
        make_emulator: Callable[..., EmulatorServer]) -> None:  # noqa: F811 - the fixture
    srv = make_emulator(run_seconds=0.1)
    backend = one_at_a_time(srv)
    thread = backend.create_thread("conv-1")
    texts = ["one", "two", "three"]
    backend.start_run(request(thread, texts))
    backend.start_run(request(thread, texts, appended=1))  # its answer "lost": not recorded
    assert backend.start_run(request(thread, texts, appended=1, reconciling=True)) == Appended(2)
    started = backend.start_run(request(thread, texts, appended=2, reconciling=True))
    assert isinstance(started, Started) and not started.adopted
    assert threads.user_texts(srv.base_url, "assistants", thread) == texts
    backend.close()
