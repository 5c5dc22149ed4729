"""Reading replies (producers.ReplyReader, `python -m producers tail`) on a real Redis:
read and ack, where a new group starts, claims of a killed consumer's entries, gaps left
by trimming, and the command line as a real process stopped with Ctrl-C."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import IO, Any

import pytest
import redis

from producers import Gap, Reply, ReplyReader
from tests.conftest import wait_until
from worker.settings import Settings

STREAM = "assistant:outbound"


def entry(n: int) -> dict[str, Any]:
    return {"type": "run.completed", "conversation_id": f"user-{n}", "event_ids": [f"ev-{n}"],
            "messages": [{"id": f"msg_{n}", "role": "assistant", "text": f"answer {n}",
                          "annotations": [], "created_at": 1}], "error": None}


def publish(client: redis.Redis, count: int, first: int = 0, maxlen: int | None = None) -> list[str]:
    """XADD `count` entries as the worker does (field `data`); with `maxlen`, trimmed exactly."""
    return [client.xadd(STREAM, {"data": json.dumps(entry(n))}, maxlen=maxlen, approximate=False).decode()
            for n in range(first, first + count)]


def pending(client: redis.Redis, group: str) -> dict[str, int]:
    summary: Any = client.xpending(STREAM, group)
    return {c["name"].decode(): int(c["pending"]) for c in summary["consumers"]}


def replies(items: list[Reply | Gap]) -> list[Reply]:
    return [item for item in items if isinstance(item, Reply)]


@pytest.fixture
def make_reader(redis_url: str) -> Iterator[Any]:
    made: list[ReplyReader] = []

    def make(group: str = "backend", consumer: str = "c1", **kwargs: Any) -> ReplyReader:
        made.append(ReplyReader(group, consumer, settings=Settings(redis_url=redis_url), **kwargs))
        return made[-1]

    yield make
    for reader in made:
        reader.close()


def test_read_returns_typed_replies_and_ack_acknowledges_them(make_reader: Any, redis_client: redis.Redis) -> None:
    reader = make_reader()
    assert reader.read(block_ms=0) == []  # makes the group at the end
    ids = publish(redis_client, 3)
    items = reader.read(count=10, block_ms=0)
    assert [r.id for r in replies(items)] == ids and len(items) == 3
    first = replies(items)[0]
    assert (first.type, first.conversation_id, first.event_ids, first.text) == (
        "run.completed", "user-0", ["ev-0"], "answer 0")
    assert first.data == entry(0) and not first.claimed and first.error is None
    assert pending(redis_client, "backend") == {"c1": 3}
    assert reader.ack(items) == 3
    assert pending(redis_client, "backend") == {}
    # Acknowledged: no other consumer gets them, not even one that claims at once.
    assert make_reader(consumer="c2", claim_idle_ms=0).read(block_ms=0) == []


def test_unacknowledged_replies_go_to_the_next_claimer_first(make_reader: Any, redis_client: redis.Redis) -> None:
    """At least once: what one consumer read and did not ack is claimed (flagged) by another,
    ahead of the new entries."""
    first = make_reader(consumer="c1")
    first.ensure_group()
    old = publish(redis_client, 2)
    assert [r.id for r in replies(first.read(block_ms=0))] == old
    new = publish(redis_client, 2, first=2)
    items = make_reader(consumer="c2", claim_idle_ms=0).read(count=3, block_ms=0)
    assert [(r.id, r.claimed) for r in replies(items)] == [(old[0], True), (old[1], True), (new[0], False)]


def test_a_new_group_starts_at_the_end_unless_asked_for_the_beginning(
        make_reader: Any, redis_client: redis.Redis) -> None:
    before = publish(redis_client, 2)
    at_end = make_reader(group="from-now")
    assert at_end.read(block_ms=0) == []
    after = publish(redis_client, 1, first=2)
    assert [r.id for r in replies(at_end.read(block_ms=0))] == after
    from_start = make_reader(group="from-start", start="beginning")
    assert [r.id for r in replies(from_start.read(block_ms=0))] == before + after
    # An existing group keeps its place, whatever a new reader of it asks for.
    assert make_reader(group="from-now", consumer="c2", start="beginning").read(block_ms=0) == []


def test_read_waits_up_to_block_ms_and_returns_as_soon_as_a_reply_comes(
        make_reader: Any, redis_client: redis.Redis) -> None:
    reader = make_reader()
    started = time.monotonic()
    assert reader.read(block_ms=200) == []
    assert time.monotonic() - started >= 0.2
    published: list[str] = []
    adder = threading.Thread(target=lambda: (_wait_for_a_blocked_reader(redis_client),
                                             published.extend(publish(redis_client, 1))))
    adder.start()
    started = time.monotonic()
    items = reader.read(block_ms=20_000)
    adder.join(10)
    assert [r.id for r in replies(items)] == published
    assert time.monotonic() - started < 10


def _wait_for_a_blocked_reader(client: redis.Redis) -> None:
    wait_until(lambda: any(c.get("cmd") == "xread" and "b" in c.get("flags", "") for c in client.client_list()),
               timeout=10, what="the reader to block")


VICTIM = """
import sys
from producers import ReplyReader
from worker.settings import Settings
reader = ReplyReader("backend", "victim", start="beginning", settings=Settings(redis_url=sys.argv[1]))
print(" ".join(item.id for item in reader.read(count=10, block_ms=5000)), flush=True)
sys.stdin.read()  # holds them unacknowledged until it is killed
"""


def test_entries_a_killed_consumer_left_unacknowledged_are_claimed_after_the_idle_time(
        make_reader: Any, redis_client: redis.Redis, redis_url: str) -> None:
    ids = publish(redis_client, 3)
    victim = subprocess.Popen([sys.executable, "-c", VICTIM, redis_url], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert Lines(victim.stdout).next(timeout=60).split() == ids
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        if victim.stdin is not None:
            victim.stdin.close()
    assert pending(redis_client, "backend") == {"victim": 3}
    # The default idle time (60 s) has not passed: nothing to claim yet.
    assert make_reader(consumer="patient").read(block_ms=0) == []
    rescuer = make_reader(consumer="rescuer", claim_idle_ms=300)
    items = wait_until(lambda: rescuer.read(block_ms=100), timeout=20, what="the claim")
    assert [(r.id, r.claimed) for r in replies(items)] == [(i, True) for i in ids]
    assert rescuer.ack(items) == 3
    assert pending(redis_client, "backend") == {}


def test_entries_trimmed_before_the_group_read_them_are_one_gap(make_reader: Any, redis_client: redis.Redis) -> None:
    reader = make_reader()
    reader.ensure_group()
    read = publish(redis_client, 3)
    reader.ack(reader.read(block_ms=0))
    kept = publish(redis_client, 20, first=3, maxlen=5)[-5:]  # 15 trimmed unread
    items = reader.read(count=10, block_ms=0)
    assert items[0] == Gap("unread", 15, after=read[-1], before=kept[0])
    assert [r.id for r in items[1:]] == kept and "15 replies trimmed unread" in str(items[0])
    reader.ack(items)
    # Reported once; trimming what the group has read is no gap, nor is a group made at
    # the beginning of a stream trimmed before it existed.
    assert reader.read(block_ms=0) == []
    newest = publish(redis_client, 1, first=23, maxlen=1)
    assert reader.read(block_ms=0) == [Reply(newest[0], entry(23))]
    late = make_reader(group="late", start="beginning")
    assert late.read(block_ms=0) == [Reply(newest[0], entry(23))]


def test_a_gap_while_the_reader_waits_is_found(make_reader: Any, redis_client: redis.Redis) -> None:
    """Ten entries published in one transaction trimmed to two: the waiting reader wakes
    after all of them and still reports the eight it can no longer read."""
    reader = make_reader()
    reader.ensure_group()
    results: list[list[Reply | Gap]] = []
    waiter = threading.Thread(target=lambda: results.append(reader.read(count=10, block_ms=20_000)))
    waiter.start()
    _wait_for_a_blocked_reader(redis_client)
    pipe = redis_client.pipeline(transaction=True)
    for n in range(10):
        pipe.xadd(STREAM, {"data": json.dumps(entry(n))}, maxlen=2, approximate=False)
    ids = [i.decode() for i in pipe.execute()]
    waiter.join(20)
    (items,) = results
    assert items[0] == Gap("unread", 8, after="0-0", before=ids[8])
    assert [r.id for r in items[1:]] == ids[8:]


def test_entries_trimmed_while_unacknowledged_are_a_gap_with_their_ids(
        make_reader: Any, redis_client: redis.Redis) -> None:
    holder = make_reader(consumer="holder")
    holder.ensure_group()
    held = publish(redis_client, 3)
    assert len(holder.read(block_ms=0)) == 3  # never acknowledged
    kept = publish(redis_client, 10, first=3, maxlen=2)[-2:]
    items = make_reader(consumer="other").read(block_ms=0)
    assert items[0] == Gap("unacknowledged", 3, ids=tuple(held))
    assert items[1] == Gap("unread", 8, after=held[-1], before=kept[0])
    assert [r.id for r in items[2:]] == kept


def test_a_deleted_group_is_made_again_from_the_start_and_reported(
        make_reader: Any, redis_client: redis.Redis) -> None:
    reader = make_reader()
    reader.ensure_group()
    redis_client.xgroup_destroy(STREAM, "backend")
    ids = publish(redis_client, 2)
    assert reader.read(block_ms=0) == [Gap("group_deleted", None)]
    assert [r.id for r in replies(reader.read(block_ms=0))] == ids
    redis_client.delete(STREAM)  # the stream too: the group goes with it
    assert reader.read(block_ms=0) == [Gap("group_deleted", None)]
    again = publish(redis_client, 1, first=2)
    assert reader.read(block_ms=0) == [Reply(again[0], entry(2))]


def test_an_entry_without_json_is_returned_marked_malformed(make_reader: Any, redis_client: redis.Redis) -> None:
    reader = make_reader()
    reader.ensure_group()
    entry_id = redis_client.xadd(STREAM, {"data": "not json"}).decode()
    (item,) = reader.read(block_ms=0)
    assert isinstance(item, Reply) and item.id == entry_id
    assert item.data == {} and item.malformed and item.type == ""
    assert reader.ack([entry_id]) == 1


def test_bad_arguments_are_refused(make_reader: Any) -> None:
    with pytest.raises(ValueError, match="start"):
        make_reader(start="$")
    with pytest.raises(ValueError, match="count"):
        make_reader().read(count=0)


# --- python -m producers tail, as a real process --------------------------------------------

class Lines:
    """A child's pipe read by a thread, so that a test waits for each line with a deadline."""

    def __init__(self, pipe: IO[str] | None) -> None:
        assert pipe is not None
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, args=(pipe,), daemon=True).start()

    def _pump(self, pipe: IO[str]) -> None:
        with pipe:  # closed here, at the end of the child's output
            for line in pipe:
                self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def next(self, timeout: float) -> str:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no line within {timeout:g} s") from None
        assert line is not None, "the process closed its output"
        return line

    def rest(self, timeout: float = 10) -> list[str]:
        """Every line until the pipe closes."""
        lines = []
        while (line := self._lines.get(timeout=timeout)) is not None:
            lines.append(line)
        return lines


@pytest.fixture
def start_tail(redis_url: str) -> Iterator[Any]:
    started: list[subprocess.Popen[str]] = []

    def start(*args: str) -> tuple[subprocess.Popen[str], Lines, Lines]:
        proc = subprocess.Popen([sys.executable, "-m", "producers", "tail", *args],
                                env={**os.environ, "REDIS_URL": redis_url},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started.append(proc)
        out, err = Lines(proc.stdout), Lines(proc.stderr)
        assert err.next(timeout=60).startswith("tail: reading")  # ready: its position is taken
        return proc, out, err

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def _stop_with_ctrl_c(proc: subprocess.Popen[str], err: Lines) -> None:
    proc.send_signal(signal.SIGINT)
    assert proc.wait(10) == 0
    assert not any("Traceback" in line for line in err.rest())


def test_tail_with_a_group_prints_new_entries_acks_them_and_stops_on_ctrl_c(
        start_tail: Any, redis_client: redis.Redis) -> None:
    publish(redis_client, 2)  # before the group existed: not printed
    proc, out, err = start_tail("--group", "cli", "--consumer", "tail-1")
    ids = publish(redis_client, 3, first=2)
    lines = [json.loads(out.next(timeout=20)) for _ in ids]
    assert lines == [{"id": i, "data": entry(n)} for n, i in enumerate(ids, start=2)]
    info = {g["name"].decode(): g for g in redis_client.xinfo_groups(STREAM)}
    assert info["cli"]["last-delivered-id"].decode() == ids[-1]
    wait_until(lambda: pending(redis_client, "cli") == {}, timeout=10, what="the acks")
    _stop_with_ctrl_c(proc, err)


def test_tail_without_a_group_prints_what_is_published_from_now(
        start_tail: Any, redis_client: redis.Redis) -> None:
    old = publish(redis_client, 2)
    proc, out, err = start_tail()
    new = publish(redis_client, 2, first=2)
    assert [json.loads(out.next(timeout=20))["id"] for _ in new] == new
    _stop_with_ctrl_c(proc, err)
    assert redis_client.xinfo_groups(STREAM) == []  # nothing made, nothing acknowledged
    proc, out, err = start_tail("--from-start")
    assert [json.loads(out.next(timeout=20))["id"] for _ in old + new] == old + new
    _stop_with_ctrl_c(proc, err)
