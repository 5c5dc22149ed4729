"""Producers: validation before anything is enqueued, the accept step, the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
import redis

from producers import InvalidEvent, Producer, SendResult
from tests.stack import Stack, running_stack
from worker.settings import Settings


@pytest.fixture
def producer(redis_url: str) -> Iterator[Producer]:
    with Producer(Settings(redis_url=redis_url)) as producer:
        yield producer


@pytest.mark.parametrize("kwargs, field", [
    ({"conversation_id": "has space", "content": "x"}, "conversation_id"),
    ({"conversation_id": "x" * 129, "content": "x"}, "conversation_id"),
    ({"conversation_id": "ok", "content": ""}, "content"),
    ({"conversation_id": "ok", "content": " \n\t "}, "content"),
    ({"conversation_id": "ok", "content": "x" * 256_001}, "content"),
    ({"conversation_id": "ok", "content": "x", "metadata": {"k": 1}}, "metadata.k"),
    ({"conversation_id": "ok", "content": "x", "metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
    ({"conversation_id": "ok", "content": "x", "attachments": [{"tools": []}]}, "attachments.0.file_id"),
])
def test_invalid_input_raises_before_anything_is_enqueued(
        producer: Producer, redis_client: redis.Redis, kwargs: dict, field: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        producer.send_user_message(**kwargs)
    assert isinstance(info.value, ValueError)
    assert info.value.field == field
    assert redis_client.keys("aw:*") == []


def test_accept_appends_in_send_order_and_dedups(producer: Producer, redis_client: redis.Redis) -> None:
    ids = [producer.send_user_message("c1", f"m{i}") for i in range(3)]
    again = producer.send_user_message("c1", "changed", event_id=ids[1])
    assert again == ids[1]
    inbox = [json.loads(raw) for raw in redis_client.lrange("aw:inbox:c1", 0, -1)]
    assert [e["event_id"] for e in inbox] == ids
    assert [e["content"] for e in inbox] == ["m0", "m1", "m2"]
    assert redis_client.zscore("aw:schedule", "c1") is not None
    assert 0 < redis_client.ttl(f"aw:event:{ids[0]}") <= 7 * 24 * 3600


def test_send_says_whether_the_event_was_new_and_cancel_whether_a_batch_was_active(
        producer: Producer, redis_client: redis.Redis) -> None:
    assert producer.send("c2", "hello", event_id="e-1") == SendResult("e-1", accepted=True)
    assert producer.send("c2", "changed", event_id="e-1") == SendResult("e-1", accepted=False)
    assert producer.send_user_message("c2", "again", event_id="e-1") == "e-1"
    assert producer.cancel_conversation("c2") is False  # a waiting event is no batch yet
    assert not redis_client.exists("aw:cancel:c2")
    redis_client.hset("aw:batch:c2", mapping={"batch_id": "b1", "published": "0"})
    assert producer.cancel_conversation("c2") is True


def test_cancel_validates_the_conversation_id(producer: Producer) -> None:
    with pytest.raises(InvalidEvent):
        producer.cancel_conversation("bad id")


@pytest.fixture
def stack(redis_url: str) -> Iterator[Stack]:
    with running_stack(redis_url) as s:
        yield s


def _cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REDIS_URL": stack.settings.redis_url}
    return subprocess.run([sys.executable, "-m", "producers", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def test_cli_send_wait_prints_the_outcome(stack: Stack) -> None:
    done = _cli(stack, "send", "--conversation", "cli-1", "--wait", "--timeout", "30", "hello there")
    assert done.returncode == 0, done.stderr
    event_id, body = done.stdout.split("\n", 1)
    entry = json.loads(body)
    assert entry["type"] == "run.completed" and entry["event_ids"] == [event_id]
    failed = _cli(stack, "send", "--conversation", "cli-2", "--wait", "--timeout", "30", "fail:invalid_prompt")
    assert failed.returncode == 1
    assert json.loads(failed.stdout.split("\n", 1)[1])["type"] == "run.failed"


def test_cli_send_wait_times_out_with_exit_2(stack: Stack) -> None:
    stack.emulator.configure(run_seconds=30)
    done = _cli(stack, "send", "--conversation", "cli-3", "--wait", "--timeout", "0.5", "slow")
    assert done.returncode == 2
    assert "no outcome" in done.stderr


def test_cli_rejects_invalid_input(stack: Stack) -> None:
    done = _cli(stack, "send", "--conversation", "no spaces allowed", "hi")
    assert done.returncode == 65
    assert "conversation_id" in done.stderr
