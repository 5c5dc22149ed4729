"""The baseline: what the SDK guide does, one blocking poll loop per message on a thread pool."""

from __future__ import annotations

import time
import warnings
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any

import openai

from bench.waits import BenchTimeout, Deadline

# openai 3.x marks every beta.assistants / beta.threads method deprecated.
warnings.filterwarnings("ignore", category=DeprecationWarning)


def handle(client: openai.OpenAI, text: str) -> str:
    """One message, the guide's way: thread, message, create_and_poll (default interval), list."""
    thread = client.beta.threads.create()
    client.beta.threads.messages.create(thread.id, role="user", content=text)
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id="asst_default")
    client.beta.threads.messages.list(thread.id, run_id=run.id)
    return run.status


def run_baseline(base_url: str, messages: int, threads: int, deadline: Deadline) -> dict[str, Any]:
    """`messages` messages on `threads` threads; throughput = messages / wall time."""
    client = openai.OpenAI(base_url=base_url, api_key="sk-bench", timeout=30.0)
    pool = ThreadPoolExecutor(threads, thread_name_prefix="baseline")
    started = time.time()
    try:
        futures = [pool.submit(handle, client, f"What is {i} + 1? (baseline {i})") for i in range(messages)]
        done, pending = wait(futures, timeout=max(0.0, deadline.remaining()), return_when=FIRST_EXCEPTION)
        if pending:
            for future in done:
                future.result()  # raises the first failure, if any
            raise BenchTimeout(f"baseline: {len(pending)} of {messages} messages unanswered in time")
        statuses = [future.result() for future in futures]
        wall = time.time() - started
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    client.close()
    return {"messages": messages, "threads": threads, "wall_s": round(wall, 2),
            "replies_per_s": round(messages / wall, 3),
            "completed": sum(1 for s in statuses if s == "completed")}
