"""The pieces of a run's stream: the two APIs' events as the worker reads them, what a
reader stores for the next step, and the Lua that fences a reader by its ownership
(stream_writes.lua, and stream_due.lua's due time) on a real Redis."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis

from tests.unit.harness import FakeClock
from tests.unit.test_delta_scripts import started
from tests.unit.test_lua_scripts import CID
from worker import keys
from worker.backends import assistants, responses
from worker.backends.base import RunState, StreamTarget, ToolCall
from worker.batch import Batch
from worker.conversation import deltas
from worker.store.batches import Batches
from worker.store.deltas import DeltaConfig, DeltaStreams
from worker.store.scripts import LuaScript
from worker.streams import sse, state
from worker.streams.events import AssistantsEvents, ResponsesEvents, Text
from worker.streams.reader import StreamReader, StreamSpec, TextDelta
from worker.streams.streams import env_proxy

OWNER = "host:1:abc/1"


def ev(name: str, data: object) -> sse.Event:
    return sse.Event(name, data.encode() if isinstance(data, str) else json.dumps(data).encode())


def test_assistants_events_give_text_parts_and_the_run_s_end() -> None:
    events = AssistantsEvents()
    created = events.read(ev("thread.run.created", {"id": "run_1", "status": "queued"}))
    assert created.run == {"id": "run_1", "status": "queued"} and not created.ended

    def delta(index: int, value: str) -> sse.Event:
        return ev("thread.message.delta", {"id": "msg_1", "object": "thread.message.delta", "delta": {
            "content": [{"index": index, "type": "text", "text": {"value": value, "annotations": []}}]}})

    updates = [events.read(e) for e in (delta(0, "Hel"), delta(0, "lo"), delta(1, "second"))]
    texts = [t.text for u in updates if u is not None for t in u.texts]
    assert texts == ["Hel", "lo", "\nsecond"]  # a new part starts a new line, as the outbound entry joins them
    assert events.read(ev("thread.run.step.created", {"id": "step_1"})) is None  # nothing to the worker
    ended = events.read(ev("thread.run.requires_action", {"id": "run_1", "status": "requires_action"}))
    assert ended is not None and ended.ended and ended.run is not None
    done, error = events.read(ev("done", "[DONE]")), events.read(ev("error", {"error": {"message": "boom"}}))
    assert done is not None and done.done and error is not None and error.error == "boom"


def test_text_deltas_of_an_unusual_shape_are_read_with_care_and_others_are_not_text() -> None:
    events = AssistantsEvents()
    odd = ev("thread.message.delta", {"id": "msg_1", "delta": {"content": [
        {"index": "1", "type": "text", "text": {"value": "a"}},  # an index as a string
        {"type": "text", "text": {}},  # no value: nothing
        {"index": 0, "type": "image_file", "image_file": {"file_id": "f"}}]}})
    found = events.texts(odd)
    assert found is not None and [(t.message_id, t.text) for t in found[0]] == [("msg_1", "a")]
    assert events.texts(ev("thread.message.delta", {"id": 7, "delta": None})) == ([], None)
    assert events.texts(ev("thread.run.created", {"id": "run_1", "status": "queued"})) is None
    responses = ResponsesEvents()
    text = ev("response.output_text.delta", {"type": "response.output_text.delta", "item_id": "msg_1",
                                             "content_index": 0, "delta": "Hi", "sequence_number": 4})
    assert responses.texts(text) == ([Text("msg_1", "Hi")], 4)
    assert responses.texts(sse.Event("", text.raw)) is None  # unnamed: `read` finds its type in its data
    unnamed = responses.read(sse.Event("", text.raw))
    assert unnamed is not None and unnamed.texts == [Text("msg_1", "Hi")] and unnamed.cursor == 4


def test_a_create_s_stream_brings_its_run_s_finished_messages_with_the_end() -> None:
    message = {"id": "msg_1", "role": "assistant", "content": [{"type": "text", "text": {"value": "Hi"}}]}
    whole, part = AssistantsEvents.of_create(), AssistantsEvents()
    for events in (whole, part):
        assert events.read(ev("thread.message.completed", message)) is None
    ending = ev("thread.run.completed", {"id": "run_1", "status": "completed"})
    carried, not_carried = whole.read(ending), part.read(ending)
    assert carried is not None and carried.messages == [message]
    assert not_carried is not None and not_carried.messages is None  # a tool round's stream: read them
    state_of = assistants._streamed_run({"id": "run_1", "status": "completed"}, [message])
    assert state_of.messages is not None and [m["text"] for m in state_of.messages] == ["Hi"]
    waiting = assistants._streamed_run({"id": "run_1", "status": "requires_action"}, [message])
    assert waiting.messages is None  # only an ended run's messages answer it


def test_an_ended_response_s_stream_brings_its_output_s_messages() -> None:
    body = {"id": "resp_1", "status": "completed", "created_at": 5, "output": [
        {"type": "reasoning", "id": "rs_1"},
        {"type": "message", "id": "msg_1", "role": "assistant", "content": [{"type": "output_text", "text": "Hi"}]}]}
    ended = responses._streamed_response(body, None)
    assert ended.messages is not None and [(m["id"], m["text"]) for m in ended.messages] == [("msg_1", "Hi")]
    assert responses._streamed_response({**body, "status": "in_progress"}, None).messages is None


def test_a_stored_state_keeps_its_messages_beside_the_run() -> None:
    messages = [{"id": "msg_1", "role": "assistant", "text": "Hi", "annotations": [], "created_at": 1}]
    run = RunState(id="run_1", status="completed", messages=messages)
    document = state.encode_run(run)
    assert "messages" not in json.loads(document)["run"]  # an older worker reads `run` alone
    assert state.decode(document).run == run
    plain = state.decode(state.encode_run(RunState(id="run_1", status="completed"))).run
    assert plain is not None and plain.messages is None


def test_the_stream_client_finds_the_environment_s_proxy_once(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy",
                 "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert env_proxy("https://api.example.com/v1/") == (None, None)
    monkeypatch.setenv("HTTPS_PROXY", "http://user:p%40ss@proxy.local:3128")
    proxy, headers = env_proxy("https://api.example.com/v1/")
    assert proxy == "http://proxy.local:3128"
    assert headers == {"Proxy-Authorization": "Basic " + base64.b64encode(b"user:p@ss").decode()}
    assert env_proxy("http://api.example.com/v1/") == (None, None)  # HTTPS_PROXY is for https only
    monkeypatch.setenv("ALL_PROXY", "proxy.local:8080")
    assert env_proxy("http://api.example.com/v1/") == ("http://proxy.local:8080", None)
    monkeypatch.setenv("NO_PROXY", "api.example.com")
    assert env_proxy("https://api.example.com/v1/") == (None, None)


def test_responses_events_give_text_cursor_and_end() -> None:
    events = ResponsesEvents()
    created = events.read(ev("response.created", {"type": "response.created", "sequence_number": 0,
                                                  "response": {"id": "resp_1", "status": "queued"}}))
    assert created is not None and created.run is not None and created.cursor == 0 and not created.ended
    text = events.read(ev("response.output_text.delta", {"type": "response.output_text.delta", "item_id": "msg_1",
                                                         "content_index": 0, "delta": "Hi", "sequence_number": 4}))
    assert text is not None and [(t.message_id, t.text) for t in text.texts] == [("msg_1", "Hi")]
    assert text.cursor == 4
    ended = events.read(ev("response.completed", {"type": "response.completed", "sequence_number": 9,
                                                  "response": {"id": "resp_1", "status": "completed"}}))
    assert ended is not None and ended.ended and ended.cursor == 9


def test_server_sent_events_are_split_on_blank_lines() -> None:
    text = b'event: thread.run.created\r\ndata: {"id": "run_1"}\r\n\r\n: a comment\n\nevent: done\ndata: [DONE]'
    parser = sse.Parser()
    events = [e for at in range(0, len(text), 7) for e in parser.feed(text[at:at + 7])]  # split anywhere
    events += parser.end()  # the last event, without its blank line
    assert [(e.name, e.data) for e in events] == [("thread.run.created", {"id": "run_1"}), ("done", "[DONE]")]


def test_unusual_events_are_read_as_the_usual_ones() -> None:
    text = b'event:thread.run.created\ndata:{"id": "run_1"}\n\ndata: {"a":\ndata: 1}\nevent: x\n\nevent: y\n\n'
    events = sse.Parser().feed(text)  # no spaces; data on two lines, before its name; an event without data
    assert [(e.name, e.data) for e in events] == [("thread.run.created", {"id": "run_1"}), ("x", {"a": 1})]


def test_a_stored_state_counts_only_for_the_batch_s_current_stream() -> None:
    run = RunState(id="run_1", status="requires_action", tool_calls=[ToolCall("c1", "add", "{}")], stream_owner=OWNER)
    document = state.encode_run(run)
    assert state.decode(document).run == run
    assert state.stored(OWNER, f"{OWNER} 12.5", document) is not None
    assert state.stored("host:1:abc/2", f"{OWNER} 12.5", document) is None  # an earlier stream's
    assert state.stored(None, f"{OWNER} 12.5", document) is None
    broken = state.stored(OWNER, f"{OWNER} 13", state.encode_broken("cut"))
    assert broken is not None and broken.run is None and broken.broken == "cut"


class Scripts:
    """The reader's writes, one per call of stream_writes.lua (as writes.py sends a window's)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.deltas = DeltaStreams(client, DeltaConfig())
        self._script = LuaScript(client, "stream_writes")

    def call(self, owner: str, writes: list[list[object]], now: float = 0.0) -> list[int]:
        return [int(r) for r in self._script(
            keys={"owned": keys.owned_streams(owner.rpartition("/")[0]), "schedule": keys.SCHEDULE, "wake": keys.WAKE},
            args={"now": now, "maxlen": 100, "ttl": 60, "batch_prefix": keys.batch(""),
                  "deltas_prefix": self.deltas.key(""), "lengths_prefix": keys.delta_lengths(""),
                  "writes": json.dumps(writes, ensure_ascii=False)})]

    def texts(self, batch: Batch, owner: str, cursor: str, items: list[TextDelta]) -> list[object]:
        return ["d", batch.batch_id, owner, CID, cursor, items]

    def write(self, batch: Batch, owner: str, cursor: str, items: list[TextDelta]) -> int:
        return self.call(owner, [self.texts(batch, owner, cursor, items)])[0]

    def store(self, batch: Batch, owner: str, document: str, now: float) -> int:
        return self.call(owner, [["s", batch.batch_id, owner, CID, document]], now)[0]


def text(batch: Batch, value: str, at: int = -1) -> TextDelta:
    fields = {"type": "message.delta", "conversation_id": CID, "run_id": batch.run_id, "message_id": "msg_1"}
    return "msg_1", json.dumps(fields), value, at


def test_a_reader_writes_only_while_the_batch_names_it_owner(redis_client: redis.Redis, clock: FakeClock) -> None:
    token, batch = started(redis_client, clock)
    scripts = Scripts(redis_client)
    scripts.deltas.write(batch, deltas.run_started(batch), token=token)
    assert scripts.write(batch, OWNER, "", [text(batch, "early")]) == -2  # not recorded yet: it waits
    owned = batch.evolve(stream_owner=OWNER)
    assert Batches(redis_client).save(owned, token=token).written
    assert scripts.write(batch, OWNER, "resp_1 7", [text(batch, "Hel"), text(batch, "lo")]) == 2
    assert redis_client.hget(keys.batch(CID), "stream_cursor") == b"resp_1 7"
    assert [(d["type"], d["seq"], d.get("text")) for d in scripts.deltas.read(CID)] == [
        ("run.started", 1, None), ("message.delta", 2, "Hel"), ("message.delta", 3, "lo")]
    assert scripts.write(batch, "host:2:def/1", "", [text(batch, "x")]) == -2  # another owner's: refused
    taken = owned.evolve(stream_owner="host:2:def/1")
    assert Batches(redis_client).save(taken, token=token).written
    assert scripts.write(batch, OWNER, "", [text(batch, "late")]) == -2  # taken over: refused for good
    redis_client.hset(keys.batch(CID), "published", "1")
    assert scripts.write(batch, "host:2:def/1", "", [text(batch, "after")]) == -1  # answered
    assert len(scripts.deltas.read(CID)) == 3


def test_a_stored_end_makes_the_batch_due_and_outlives_the_step_s_own_due_time(redis_client: redis.Redis,
                                                                                clock: FakeClock) -> None:
    token, batch = started(redis_client, clock)
    scripts = Scripts(redis_client)
    owned = batch.evolve(stream_owner=OWNER)
    assert Batches(redis_client).save(owned, token=token).written
    ended = RunState(id="run_1", status="completed")
    assert scripts.store(batch, OWNER, state.encode_run(ended), now=100.0) == 1
    assert redis_client.zscore(keys.SCHEDULE, CID) == 100.0 and redis_client.llen(keys.WAKE) == 1
    # The step that recorded the owner ends after that, with the safety poll's due time: the end wins.
    assert Batches(redis_client).save(owned, token=token, due=130.0).written
    assert redis_client.zscore(keys.SCHEDULE, CID) == 100.0
    loaded = Batches(redis_client).load(CID)
    assert loaded is not None and state.stored(loaded.stream_owner, loaded.stream_ended, loaded.stream_run) is not None
    # Once the next step took the state (the owner cleared), its own due time counts again.
    assert Batches(redis_client).save(owned.evolve(stream_owner=None), token=token, due=140.0).written
    assert redis_client.zscore(keys.SCHEDULE, CID) == 140.0
    assert scripts.store(batch, "host:9:zzz/1", state.encode_broken("x"), now=150.0) == -2


class Sink:
    """A reader's writes, recorded; the owner is recorded after `record_after` refusals."""

    def __init__(self, record_after: int = 0, lose_after: int | None = None) -> None:
        self.record_after, self.lose_after = record_after, lose_after
        self.writes: list[list[str]] = []
        self.stored: list[str] = []
        self.calls = 0

    def _answer(self) -> int:
        self.calls += 1
        if self.calls <= self.record_after:
            return -2
        return -2 if self.lose_after is not None and self.calls > self.lose_after else 0

    def send(self, target: StreamTarget, owner: str, cursor: str, items: list[TextDelta],
             done: Callable[[int | BaseException], None]) -> None:
        code = self._answer()
        if code == 0:
            self.writes.append([d[2] for d in items])
        # answered later, as the writer's call comes back
        asyncio.get_running_loop().call_soon(done, code if code < 0 else len(items))

    async def store(self, target: StreamTarget, owner: str, document: str) -> int:
        code = self._answer()
        if code == 0:
            self.stored.append(document)
        return code


def follow(sink: Sink, names: list[tuple[str, object]]) -> None:
    chunks = [f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in names]

    async def run() -> None:
        spec = StreamSpec(StreamTarget(CID, "b1", ["e1"]), OWNER, AssistantsEvents(),
                          lambda run, _messages: RunState(id=str(run["id"]), status=str(run["status"])), 0.0)
        reader = StreamReader(sink, spec)
        asyncio.get_running_loop().create_task(feed(reader))
        await reader.first()
        await reader.follow()

    async def feed(reader: StreamReader) -> None:
        for chunk in chunks:
            await asyncio.sleep(0.001)  # as from the network: the reader's writes are answered meanwhile
            reader.feed(chunk)
        reader.ended(None)

    asyncio.run(run())


def message(value: str) -> tuple[str, object]:
    return ("thread.message.delta", {"id": "msg_1", "delta": {"content": [
        {"index": 0, "type": "text", "text": {"value": value}}]}})


RUN = [("thread.run.created", {"id": "run_1", "status": "queued"}), message("Hel"), message("lo"),
       ("thread.run.completed", {"id": "run_1", "status": "completed"})]


def test_a_reader_holds_its_text_until_it_is_recorded_then_stores_the_end() -> None:
    sink = Sink(record_after=2)
    follow(sink, RUN)
    # "Hel" waited for the owner to be recorded; "lo", come meanwhile, went with it, in order
    assert sink.writes == [["Hel", "lo"]]
    (document,) = sink.stored
    assert json.loads(document)["run"]["status"] == "completed"


def test_a_reader_that_lost_its_stream_writes_nothing_more() -> None:
    sink = Sink(lose_after=1)
    follow(sink, RUN)
    assert sink.writes == [["Hel"]] and sink.stored == []


def test_a_stream_that_ends_before_the_run_says_it_broke() -> None:
    sink = Sink()
    follow(sink, RUN[:3])
    (document,) = sink.stored
    assert "broken" in json.loads(document)


def test_a_re_attached_stream_writes_each_event_once(redis_client: redis.Redis, clock: FakeClock) -> None:
    """A reader taken over while it still wrote may have written past the cursor the new
    reader re-attached from: the events it wrote are skipped, by their sequence numbers."""
    token, batch = started(redis_client, clock, run_id="resp_1")
    scripts = Scripts(redis_client)
    scripts.deltas.write(batch, deltas.run_started(batch), token=token)
    assert Batches(redis_client).save(batch.evolve(stream_owner=OWNER), token=token).written

    def at(seq: int, value: str) -> TextDelta:
        return text(batch, value, seq)

    assert scripts.write(batch, OWNER, "resp_1 5", [at(4, "a"), at(5, "b")]) == 2
    other = "host:2:def/1"
    assert Batches(redis_client).save(batch.evolve(stream_owner=other), token=token).written
    assert scripts.write(batch, other, "resp_1 6", [at(4, "a"), at(5, "b"), at(6, "c")]) == 1
    assert scripts.write(batch, other, "resp_1 3", [at(3, "x")]) == 0  # older: neither written nor kept
    assert redis_client.hget(keys.batch(CID), "stream_cursor") == b"resp_1 6"
    assert "".join(texts(scripts.deltas.read(CID))) == "abc"


def texts(stream: list[dict[str, object]]) -> list[str]:
    return [str(d["text"]) for d in stream if d["type"] == "message.delta"]


def test_one_call_carries_many_streams_writes_each_answered_in_order(redis_client: redis.Redis,
                                                                     clock: FakeClock) -> None:
    token, batch = started(redis_client, clock)
    scripts = Scripts(redis_client)
    scripts.deltas.write(batch, deltas.run_started(batch), token=token)
    assert Batches(redis_client).save(batch.evolve(stream_owner=OWNER), token=token).written
    answers = scripts.call(OWNER, [scripts.texts(batch, OWNER, "", [text(batch, "Hél")]),
                                   ["s", "an-earlier-batch", OWNER, CID, "{}"],  # moved on: refused
                                   scripts.texts(batch, OWNER, "", [text(batch, "lo"), text(batch, "!")]),
                                   ["s", batch.batch_id, OWNER, CID, state.encode_broken("cut")]], now=50.0)
    assert answers == [1, -1, 2, 1]
    assert "".join(texts(scripts.deltas.read(CID))) == "Héllo!"
    # what a catch-up counts from: the text's UTF-8 bytes
    assert redis_client.hget(keys.delta_lengths(CID), "msg_1") == str(len("Héllo!".encode())).encode()
    assert redis_client.zscore(keys.SCHEDULE, CID) == 50.0  # the stored break made it due


def test_writes_that_come_together_go_in_one_call_and_survive_a_script_flush(redis_url: str) -> None:
    import redis.asyncio

    from worker.streams.direct import DirectConnection
    from worker.streams.writes import BatchedWrites

    async def run() -> tuple[int, list[int]]:
        client, direct = redis.asyncio.Redis.from_url(redis_url), DirectConnection(redis_url)
        writes = BatchedWrites(direct, "host:1:abc", DeltaConfig(maxlen=100, ttl_seconds=60))
        writer = asyncio.get_running_loop().create_task(writes.run())
        calls = [0]
        real = direct.script

        def counted(*args: Any) -> Any:
            calls[0] += 1
            return real(*args)

        direct.script = counted  # type: ignore[method-assign]

        def call(n: int) -> Awaitable[int]:
            return writes.call(["s", "x", "o", f"c{n}", "{}"])

        first = list(await asyncio.gather(*(call(n) for n in range(20))))
        sent = calls[0]
        await client.script_flush()  # as after a Redis restart: the next write loads it again
        second = [await call(0)]
        writer.cancel()
        await client.aclose()
        await direct.close()
        return sent, [*first, *second]

    sent, answers = asyncio.run(run())
    assert sent == 1 and answers == [-1] * 21  # no such batch: refused, each answered


class _HeldConnection:
    """A Redis connection whose calls wait until the test lets them answer (each write: 0)."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, int]] = []  # when each call was sent (loop time), its writes
        self.sent = asyncio.Event()
        self.release = asyncio.Event()

    async def script(self, script: LuaScript, keys: Any, args: dict[str, Any]) -> list[int]:
        writes = json.loads(args["writes"])
        self.calls.append((asyncio.get_running_loop().time(), len(writes)))
        self.sent.set()
        await self.release.wait()
        return [0] * len(writes)


def test_writes_that_come_while_a_call_is_out_wait_their_window_and_go_together() -> None:
    from worker.streams.writes import WINDOW_SECONDS, BatchedWrites

    async def run() -> tuple[float, list[tuple[float, int]]]:
        connection = _HeldConnection()
        writes = BatchedWrites(connection, "host:1:abc", DeltaConfig(maxlen=100, ttl_seconds=60))  # type: ignore[arg-type]
        writer = asyncio.get_running_loop().create_task(writes.run())
        first = asyncio.ensure_future(writes.call(["s", "x", "o", "c0", "{}"]))
        await asyncio.wait_for(connection.sent.wait(), 5)  # the first call goes out a window later, and is held
        queued_at = asyncio.get_running_loop().time()
        later = [asyncio.ensure_future(writes.call(["s", "x", "o", f"c{n}", "{}"])) for n in range(1, 4)]
        await asyncio.sleep(0)
        connection.release.set()  # the first call answers: the three wait for their own window
        await asyncio.gather(first, *later)
        writer.cancel()
        return queued_at, connection.calls

    queued_at, calls = asyncio.run(run())
    assert [count for _, count in calls] == [1, 3]
    assert calls[1][0] - queued_at >= WINDOW_SECONDS * 0.99  # not sent the moment the first answered


def test_a_silent_process_s_conversations_are_made_due_by_another_s_beat(redis_url: str) -> None:
    import redis.asyncio

    from worker.streams.registry import HEARTBEAT_TTL_SECONDS, Registry

    now = [1000.0]

    async def run() -> tuple[int, int, float | None, bool]:
        client = redis.asyncio.Redis.from_url(redis_url)
        dead, alive = Registry(client, "host:1:aaa", lambda: now[0]), Registry(client, "host:2:bbb", lambda: now[0])
        await dead.beat()
        await client.sadd(keys.owned_streams("host:1:aaa"), "conv-1", "conv-2")
        now[0] += 3
        await alive.beat()
        early = await alive.sweep()  # it beat 3 s ago: still its own
        await client.delete(keys.streamer("host:1:aaa"))  # killed: its key expired
        now[0] += HEARTBEAT_TTL_SECONDS
        await alive.beat()
        released = await alive.sweep()
        due = await client.zscore(keys.SCHEDULE, "conv-1")
        gone = not await client.zscore(keys.STREAMERS, "host:1:aaa") and not await client.exists(
            keys.owned_streams("host:1:aaa"))
        await client.aclose()
        return early, released, due, gone

    early, released, due, gone = asyncio.run(run())
    assert (early, released, due, gone) == (0, 2, now[0], True)
