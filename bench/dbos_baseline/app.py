"""One DBOS baseline process: `python -m bench.dbos_baseline.app` (started by `bench.dbos_baseline`).

Settings from the environment: DBOS_DATABASE_URL (the scratch system database), DBOS_EXECUTOR_ID,
REDIS_URL, OUTBOUND_STREAM, OPENAI_BASE_URL, OPENAI_API_KEY, ASSISTANT_ID, POLL_SECONDS."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import warnings
from typing import Any

import openai
import redis
import redis.asyncio as aioredis
from dbos import DBOS, DBOSConfig

from bench.dbos_baseline.entries import TERMINAL, entry_json, message
from bench.dbos_baseline.names import QUEUE, READY, THREADS, WORKFLOW

warnings.filterwarnings("ignore", category=DeprecationWarning)  # openai marks beta.threads deprecated

POLL_SECONDS = float(os.environ.get("POLL_SECONDS", "1.0"))  # the SDK's create_and_poll default
TOOLS: dict[str, Any] = {"add": lambda a, b: a + b}  # the cost scenario's tool (bench/tools.py)


class Clients:
    """The process's API and Redis clients (made once: connections are reused)."""

    api: openai.AsyncOpenAI
    redis: aioredis.Redis


clients = Clients()


# Each API call a step; DBOS retries a failed step (its defaults: 3 attempts, 1 s, x2), and the
# SDK retries each request first (its default: 2 retries).
@DBOS.step(retries_allowed=True)
async def thread_for(conversation_id: str) -> str:
    found = await clients.redis.hget(THREADS, conversation_id)
    if found:
        return str(found.decode())
    thread = await clients.api.beta.threads.create()
    await clients.redis.hset(THREADS, conversation_id, thread.id)
    return str(thread.id)


@DBOS.step(retries_allowed=True)
async def add_message(thread_id: str, text: str) -> None:
    await clients.api.beta.threads.messages.create(thread_id, role="user", content=text)


@DBOS.step(retries_allowed=True)
async def create_run(thread_id: str) -> dict[str, Any]:
    run = await clients.api.beta.threads.runs.create(thread_id, assistant_id=os.environ["ASSISTANT_ID"])
    return {"id": run.id, "status": run.status, "started_at": time.time()}


@DBOS.step(retries_allowed=True)
async def get_run(thread_id: str, run_id: str) -> dict[str, Any]:
    run = await clients.api.beta.threads.runs.retrieve(run_id, thread_id=thread_id)
    return run.model_dump(mode="json")


@DBOS.step(retries_allowed=True)
async def submit_tools(thread_id: str, run_id: str, calls: list[dict[str, Any]]) -> None:
    outputs = []
    for call in calls:
        function = call["function"]
        try:
            output: Any = TOOLS[function["name"]](**json.loads(function["arguments"] or "{}"))
        except Exception as exc:  # noqa: BLE001 - a tool's failure is the model's input, as in the worker
            output = {"error": {"type": "exception", "message": str(exc)}}
        outputs.append({"tool_call_id": call["id"], "output": json.dumps(output)})
    await clients.api.beta.threads.runs.submit_tool_outputs(run_id, thread_id=thread_id, tool_outputs=outputs)


@DBOS.step(retries_allowed=True)
async def run_messages(thread_id: str, run_id: str) -> list[dict[str, Any]]:
    page = await clients.api.beta.threads.messages.list(thread_id, run_id=run_id, order="asc")
    return [message(m.model_dump(mode="json")) for m in page.data if m.role == "assistant"]


@DBOS.step()
async def publish(entry: str) -> None:
    await clients.redis.xadd(os.environ.get("OUTBOUND_STREAM", "assistant:outbound"), {"data": entry},
                             maxlen=100_000, approximate=True)


async def follow(thread_id: str) -> dict[str, Any]:
    """Create a run and poll it to its end (tool calls answered on the way): the outcome."""
    created = await create_run(thread_id)
    run_id, status = created["id"], created["status"]
    run: dict[str, Any] = {}
    while status not in TERMINAL:
        await DBOS.sleep_async(POLL_SECONDS)
        run = await get_run(thread_id, run_id)
        status = run["status"]
        if status == "requires_action":
            await submit_tools(thread_id, run_id, run["required_action"]["submit_tool_outputs"]["tool_calls"])
    error = run.get("last_error")
    return {"status": status, "thread_id": thread_id, "run_id": run_id, "run_started_at": created["started_at"],
            "usage": run.get("usage"), "error": {"code": error["code"], "message": error["message"]} if error else None,
            "messages": await run_messages(thread_id, run_id)}


@DBOS.workflow(name=WORKFLOW)
async def answer(conversation_id: str, text: str, sent_at: float) -> str:
    """One user message: its thread, the message, a run followed to its end, the entry published.
    The workflow id is the event id (the producer's idempotency key)."""
    event_id = DBOS.workflow_id or ""
    try:
        thread_id = await thread_for(conversation_id)
        await add_message(thread_id, text)
        outcome = await follow(thread_id)
    except Exception as exc:  # noqa: BLE001 - a step that kept failing: the message is answered run.failed
        outcome = {"status": "failed", "error": {"code": "api_error", "message": f"{type(exc).__name__}: {exc}"}}
    await publish(entry_json(outcome, conversation_id, event_id, sent_at))
    return str(outcome["status"])


def main() -> None:
    executor_id = os.environ["DBOS_EXECUTOR_ID"]
    config: DBOSConfig = {"name": "bench-dbos", "system_database_url": os.environ["DBOS_DATABASE_URL"],
                          "executor_id": executor_id, "log_level": os.environ.get("DBOS_LOG_LEVEL", "WARNING")}
    DBOS(config=config)
    clients.api = openai.AsyncOpenAI(base_url=os.environ["OPENAI_BASE_URL"], api_key=os.environ["OPENAI_API_KEY"],
                                     timeout=20.0)
    clients.redis = aioredis.Redis.from_url(os.environ["REDIS_URL"])
    DBOS.launch()  # recovers this executor's pending workflows
    DBOS.register_queue(QUEUE, partition_concurrency=1)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    sync_redis = redis.Redis.from_url(os.environ["REDIS_URL"])
    sync_redis.set(READY + executor_id, os.getpid())
    stop.wait()
    sync_redis.delete(READY + executor_id)
    DBOS.destroy(workflow_completion_timeout_sec=3)


if __name__ == "__main__":
    main()
