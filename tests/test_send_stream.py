"""Following a reply as it is written (contract, "Deltas"): `producers.DeltaReader` on a real
Redis, fed by the worker's own scripts (a `BatchWriter` plays the worker for one batch: the
deltas go through write_deltas.lua, the answer and run.ended through publish.lua), and
`python -m producers send --wait --stream` as a process, against that writer and against a
real worker on the emulator."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from producers.deltas import (
    Answered,
    DeltaReader,
    Ended,
    Restarted,
    Started,
    Text,
    ToolCalls,
    delta_position,
    follow_deltas,
)
from producers.live import DIM, RESET, LivePrinter
from tests.stack import BACKENDS, Stack, running_stack
from worker import keys
from worker.backends.base import ToolCall
from worker.batch import Batch
from worker.conversation import deltas
from worker.events import InboundEvent
from worker.outcomes import batch_entry
from worker.store.batches import Batches
from worker.store.deltas import Delta, DeltaConfig, DeltaStreams
from worker.store.outbound import Outbound
from worker.store.schedule import Begun, Schedule

ROOT = Path(__file__).resolve().parent.parent
OUTBOUND = "assistant:outbound"
CID = "talk-1"
# What the command may find in the caller's environment: each test says what it sets.
UNSET = ("REDIS_URL", "AW_ENV_FILE", "LOG_LEVEL", "OUTBOUND_STREAM", "DELTA_STREAM_PREFIX", "PYTHONPATH")


class BatchWriter:
    """The worker's side of one batch of `CID`, through its store: a step's lease, the batch
    opened with the events waiting in the inbox (or `event_ids`), its deltas, its answer."""

    def __init__(self, client: redis.Redis, event_ids: list[str], *, batch_id: str = "b1",
                 run_id: str = "run_1", deltas_on: bool = True) -> None:
        schedule = Schedule(client, time.time)
        begun = schedule.begin_step(CID, lease_seconds=60, claimed=None, inbox_head=10)
        assert isinstance(begun, Begun)
        self.schedule, self.token = schedule, begun.token
        events = [InboundEvent(event_id=e, conversation_id=CID, content="hi", sent_at=time.time()) for e in event_ids]
        self.batch = Batch.new(batch_id, CID, events, created_at=time.time(), create_sent=0, run_id=run_id)
        assert Batches(client).open(self.batch, taken=int(client.llen(keys.inbox(CID))), token=self.token)
        self.streams = DeltaStreams(client, DeltaConfig(enabled=deltas_on))
        self.outbound = Outbound(client, stream=OUTBOUND, maxlen=1000, dead_letter_maxlen=100, clock=time.time,
                                 deltas=self.streams)

    def started(self, run_id: str | None = None) -> None:
        if run_id is not None:
            self.batch = self.batch.evolve(run_id=run_id)
        self._write(deltas.run_started(self.batch))

    def tools(self, *names: str) -> None:
        self._write(deltas.tool_calls(self.batch, [ToolCall(f"call_{n}", n, "{}") for n in names]))

    def text(self, message_id: str, text: str) -> None:
        fields = {"conversation_id": CID, "event_ids": self.batch.event_ids, "run_id": self.batch.run_id,
                  "message_id": message_id}
        self._write([Delta("message.delta", self.batch.run_id or "", fields, message_id=message_id, text=text)])

    def answer(self, *messages: tuple[str, str], kind: str = "run.completed") -> dict[str, Any]:
        """Publish the entry (with the catch-up deltas and run.ended); returns it."""
        entry = batch_entry(self.batch, kind, now=time.time(), messages=[  # type: ignore[arg-type]  # a test's type
            {"id": m, "role": "assistant", "text": t, "annotations": [], "created_at": 1} for m, t in messages])
        published = self.outbound.publish(self.batch, entry.to_json(), token=self.token, release=True,
                                          deltas=deltas.answered(self.batch, entry))
        assert published.published
        self.schedule.end_step(CID, self.token)
        return dict(json.loads(entry.to_json()))

    def _write(self, items: tuple[Delta, ...] | list[Delta]) -> None:
        assert self.streams.write(self.batch, items, token=self.token) is not None


def items_of(client: redis.Redis, event_id: str, position: str, timeout: float = 10.0) -> list[Any]:
    return list(follow_deltas(client, CID, event_id, position=position, timeout=timeout))


# --- the reader ------------------------------------------------------------------------------
def test_the_reader_yields_its_batchs_deltas_in_order_and_stops_at_run_ended(redis_client: redis.Redis) -> None:
    position = delta_position(redis_client, CID)
    assert position == "0-0"
    before = BatchWriter(redis_client, ["other-1"], batch_id="b0")
    before.started()
    before.text("m0", "not ours")
    before.answer(("m0", "not ours"))
    ours = BatchWriter(redis_client, ["e1", "e2"], run_id="run_7")
    ours.started()
    ours.tools("get_weather", "add")
    ours.text("m1", "Hel")
    ours.text("m1", "lo")
    ours.text("m2", "Bye")
    ours.answer(("m1", "Hello"), ("m2", "Bye"))  # all of it shown: the catch-up writes nothing more
    after = BatchWriter(redis_client, ["other-2"], batch_id="b2")
    after.started()
    reader = DeltaReader(redis_client, CID, "e2", position=position)
    started = time.monotonic()
    items = list(reader.follow(timeout=30))
    assert time.monotonic() - started < 10  # it stopped at run.ended, not at the deadline
    assert items == [Started("run_7"), ToolCalls("run_7", ("get_weather", "add")), Text("m1", "Hel", True),
                     Text("m1", "lo", False), Text("m2", "Bye", True), Ended("run.completed", ("m1", "m2"))]
    assert reader.text == "Hello\n\nBye" and reader.done
    assert (reader.entries, reader.ignored, reader.missed) == (6, 0, 0)


def test_a_retried_run_drops_what_was_shown(redis_client: redis.Redis) -> None:
    writer = BatchWriter(redis_client, ["e1"])
    writer.started()
    writer.text("m1", "Hel")
    writer.started(run_id="run_2")  # a retried run: its text comes again, whole
    writer.answer(("m1", "Hello"))
    reader = DeltaReader(redis_client, CID, "e1")
    assert list(reader.follow(timeout=10)) == [
        Started("run_1"), Text("m1", "Hel", True), Restarted("run_2", {"m1": "Hel"}), Text("m1", "Hello", True),
        Ended("run.completed", ("m1",))]
    assert reader.messages == {"m1": "Hello"} and reader.run_id == "run_2"


def test_an_entry_out_of_order_is_ignored_and_a_trimmed_one_counted(redis_client: redis.Redis) -> None:
    writer = BatchWriter(redis_client, ["e1"])
    writer.started()
    writer.text("m1", "one ")
    writer.text("m1", "two ")
    key = writer.streams.key(CID)
    rows = redis_client.xrange(key)
    redis_client.xadd(key, rows[1][1])  # a copy of the first text, seq 2, after seq 3
    redis_client.xdel(key, rows[2][0])  # seq 3 gone, as trimming would take it
    writer.text("m1", "three")
    reader = DeltaReader(redis_client, CID, "e1")
    items = reader.read()
    assert items == [Started("run_1"), Text("m1", "one ", True), Text("m1", "three", False)]
    assert (reader.ignored, reader.missed) == (1, 1)


def test_following_ends_at_the_deadline_when_no_run_ends(redis_client: redis.Redis) -> None:
    writer = BatchWriter(redis_client, ["e1"])
    writer.started()
    started = time.monotonic()
    items = items_of(redis_client, "e1", "0-0", timeout=0.5)
    assert time.monotonic() - started >= 0.5
    assert items == [Started("run_1")]


def test_with_the_outbound_stream_it_ends_with_the_answer_deltas_or_none(redis_client: redis.Redis) -> None:
    outbound_at = "0-0"
    quiet = BatchWriter(redis_client, ["e1"], deltas_on=False)
    quiet.started()
    entry = quiet.answer(("m1", "Hello"))
    reader = DeltaReader(redis_client, CID, "e1", outbound=(OUTBOUND, outbound_at))
    assert list(reader.follow(timeout=10)) == [Answered(entry)]
    assert reader.entries == 0 and reader.answer == entry
    loud = BatchWriter(redis_client, ["e2"], batch_id="b2")
    loud.started()
    for n in range(250):  # more than one read takes: the answer waits for the text written before it
        loud.text("m2", f"{n} ")
    entry = loud.answer(("m2", "".join(f"{n} " for n in range(250)) + "end"))
    reader = DeltaReader(redis_client, CID, "e2", outbound=(OUTBOUND, outbound_at))
    items = list(reader.follow(timeout=10))
    assert items[-2:] == [Ended("run.completed", ("m2",)), Answered(entry)]
    assert reader.text == entry["messages"][0]["text"]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_printer_separates_messages_and_dims_its_notes_on_a_terminal() -> None:
    out, notes = io.StringIO(), Terminal()
    printer = LivePrinter(out, notes, prefix="assistant: ")
    for item in (Started("r1"), Text("m1", "Let me look", True), ToolCalls("r1", ("get_weather",)),
                 Text("m2", "Sunny", True), Text("m2", ", 21 C", False)):
        printer.show(item)
    printer.finish({"type": "run.completed", "messages": [{"id": "m1", "text": "Let me look"},
                                                          {"id": "m2", "text": "Sunny, 21 C"}]}, streamed=True)
    assert out.getvalue() == "assistant: Let me look\n\nassistant: Sunny, 21 C\n"
    assert notes.getvalue() == f"{DIM}[calling get_weather]{RESET}\n"


# --- the command line against the writer -------------------------------------------------------
class Output:
    """A process's stdout read as it comes (chunk-wise, in a thread)."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        self.fd = process.stdout.fileno()
        self.data = b""
        self.chunks = 0
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while chunk := os.read(self.fd, 4096):
            with self.changed:
                self.data += chunk
                self.chunks += 1
                self.changed.notify_all()

    def wait_for(self, text: str, timeout: float = 10.0) -> None:
        with self.changed:
            shown = self.changed.wait_for(lambda: text.encode() in self.data, timeout)
        assert shown, f"not printed within {timeout:g} s: {text!r}; printed: {self.data!r}"

    @property
    def text(self) -> str:
        self.thread.join(30)
        return self.data.decode()


def send_stream(redis_url: str, *args: str) -> subprocess.Popen[bytes]:
    base = {k: v for k, v in os.environ.items() if k not in UNSET}
    return subprocess.Popen([sys.executable, "-m", "producers", "send", "--conversation", CID, *args],
                            env={**base, "REDIS_URL": redis_url}, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


@pytest.fixture
def streaming(redis_url: str) -> Iterator[tuple[subprocess.Popen[bytes], Output]]:
    """`send --wait --stream` of event `ev-1`, its message in the inbox (no worker runs)."""
    process = send_stream(redis_url, "--event-id", "ev-1", "--wait", "--stream", "--timeout", "60", "hello")
    try:
        output = Output(process)
        output.wait_for("ev-1\n")
        yield process, output
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)
        output.thread.join(10)
        for pipe in (process.stdout, process.stderr):
            assert pipe is not None
            pipe.close()


def finished(process: subprocess.Popen[bytes], output: Output) -> tuple[int, str, str]:
    code = process.wait(30)
    assert process.stderr is not None
    return code, output.text, process.stderr.read().decode()


def test_the_command_prints_each_delta_as_it_arrives(redis_client: redis.Redis,
                                                     streaming: tuple[subprocess.Popen[bytes], Output]) -> None:
    process, output = streaming
    writer = BatchWriter(redis_client, ["ev-1"])
    writer.started()
    chunks = [f"chunk {n} of the reply; " for n in range(8)]
    before_the_last = b""
    for chunk in chunks:
        before_the_last = output.data
        writer.text("m1", chunk)
        output.wait_for(chunk)  # printed before the next one is written
    assert "".join(chunks[:-1]).encode() in before_the_last and chunks[-1].encode() not in before_the_last
    assert process.poll() is None
    writer.tools("get_weather")
    writer.text("m2", "second ✓")
    output.wait_for("second ✓")
    entry = writer.answer(("m1", "".join(chunks)), ("m2", "second ✓"))
    code, out, err = finished(process, output)
    assert code == 0, err
    event_id, rest = out.split("\n", 1)
    streamed, answer = rest.split("\n{\n", 1)
    assert event_id == "ev-1" and streamed == "".join(chunks) + "\n\n" + "second ✓"
    assert json.loads("{\n" + answer) == entry
    assert output.chunks >= len(chunks)
    assert err.strip() == "[calling get_weather]"


def test_the_command_shows_a_retried_run_and_ends_with_its_answer(
        redis_client: redis.Redis, streaming: tuple[subprocess.Popen[bytes], Output]) -> None:
    process, output = streaming
    writer = BatchWriter(redis_client, ["ev-1"])
    writer.started()
    writer.text("m1", "first try")
    output.wait_for("first try")
    writer.started(run_id="run_2")
    writer.answer(("m1", "second try"))
    code, out, err = finished(process, output)
    assert code == 0, err
    assert out.startswith("ev-1\nfirst try\nsecond try\n{\n")
    assert "[the run was retried: the reply starts again]" in err


def test_without_deltas_the_command_prints_the_answers_text(
        redis_client: redis.Redis, streaming: tuple[subprocess.Popen[bytes], Output]) -> None:
    process, output = streaming
    writer = BatchWriter(redis_client, ["ev-1"], deltas_on=False)  # DELTAS=off
    writer.started()
    entry = writer.answer(("m1", "Hello"), ("m2", "there"), kind="run.incomplete")
    code, out, err = finished(process, output)
    assert code == 1 and err == ""  # another outcome, as with --wait
    assert out == "ev-1\nHello\n\nthere\n" + json.dumps(entry, indent=2) + "\n"


def test_text_other_than_the_answers_is_followed_by_the_answers_with_a_warning(
        redis_client: redis.Redis, streaming: tuple[subprocess.Popen[bytes], Output]) -> None:
    process, output = streaming
    writer = BatchWriter(redis_client, ["ev-1"])
    writer.started()
    writer.text("m1", "Hello")
    writer.answer(("m1", "Goodbye"))  # its catch-up adds what is past 5 bytes: "ye"
    code, out, err = finished(process, output)
    assert code == 0, err
    assert out.startswith("ev-1\nHelloye\nGoodbye\n{\n")
    assert "warning: the text streamed differs from the answer's" in err


def test_no_answer_within_the_timeout_exits_2(redis_url: str, redis_client: redis.Redis) -> None:
    process = send_stream(redis_url, "--stream", "--timeout", "1", "hello")  # --stream implies --wait
    out, err = process.communicate(timeout=60)
    assert process.returncode == 2, err
    assert out.decode().count("\n") == 1  # the event id alone
    assert err.decode().strip() == "no outcome within 1 s"
    assert redis_client.llen(keys.inbox(CID)) == 1


# --- the command line against a worker ---------------------------------------------------------
@pytest.fixture(params=BACKENDS)
def stack(request: pytest.FixtureRequest, redis_url: str) -> Iterator[Stack]:
    with running_stack(redis_url, worker_tool_modules="tests.sample_tools", assistant_backend=request.param) as s:
        yield s


def run_send(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in UNSET}
    return subprocess.run([sys.executable, "-m", "producers", "send", *args],
                          env={**base, "REDIS_URL": stack.settings.redis_url}, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_the_command_prints_a_workers_reply_then_its_entry(stack: Stack) -> None:
    done = run_send(stack, "--conversation", "s1", "--event-id", "ev-s", "--wait", "--stream", "--timeout", "30",
                    "I need to solve the equation 3x + 11 = 14")
    assert done.returncode == 0, done.stderr
    event_id, rest = done.stdout.split("\n", 1)
    text, body = rest.split("\n{\n", 1)
    entry = json.loads("{\n" + body)
    assert event_id == "ev-s" and entry["type"] == "run.completed" and entry["event_ids"] == ["ev-s"]
    assert text == "\n\n".join(m["text"] for m in entry["messages"]) and "x = 1" in text
    assert done.stderr == ""
    again = run_send(stack, "--conversation", "s1", "--event-id", "ev-s", "--stream", "hi")
    assert again.returncode == 0 and again.stdout == done.stdout  # the earlier answer, its text first
    tool = run_send(stack, "--conversation", "s2", "--stream", "--timeout", "30",
                    'Weather? call:get_weather{"city": "Paris"}')
    assert tool.returncode == 0, tool.stderr
    assert tool.stderr == "[calling get_weather]\n"
    assert 'get_weather -> {"city": "Paris"' in tool.stdout.split("\n{\n", 1)[0]
