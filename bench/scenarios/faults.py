"""Scenario: API faults (2 % lost responses, 3 % 429, 3 % 500 on every operation), 1 s runs, a
few messages to each conversation; for the worker, the SDK guide's blocking baseline and the DBOS
baseline: lost, duplicated and reordered replies, and user messages appended twice to a thread
(read from the emulator's threads once the faults are off)."""

from __future__ import annotations

import time
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai

from bench.audit import audit
from bench.context import Context
from bench.load import Outbound, Sent, make_producer, send_burst
from bench.scenarios import dbos_side
from bench.scenarios.common import polled
from bench.stack import Emulator, running_emulator, running_stack
from bench.waits import Deadline

warnings.filterwarnings("ignore", category=DeprecationWarning)  # openai marks beta.threads deprecated

TIMEOUT = 600.0
RUN_SECONDS = 1.0
MESSAGES = 3  # per conversation, in rounds
FAULTS = {"fault_lost": 0.02, "fault_429": 0.03, "fault_500": 0.03, "seed": 16}
ROUND_SECONDS = 2.5  # between rounds: longer than a run, so that each message has its own run
QUIET_SECONDS = 20.0  # no new reply for this long once the faults are on: the rest are lost


def run(ctx: Context) -> dict[str, Any]:
    deadline = Deadline(TIMEOUT, "the faults scenario")
    conversations = ctx.size(200, 40)
    result: dict[str, Any] = {"conversations": conversations, "messages_per_conversation": MESSAGES,
                              "run_seconds": RUN_SECONDS, "faults": FAULTS}
    with running_stack(ctx.logs("worker"), run_seconds=RUN_SECONDS, processes=1, threads=8,
                       worker_env=polled()) as stack:
        result["worker"] = _flow(stack, make_producer(stack.redis.url), conversations, deadline)
    if ctx.judged_only:  # a repetition: the worker's flow alone
        return result
    result["blocking_baseline"] = _blocking(ctx, ctx.size(40, 16), deadline)
    why = dbos_side.skipped()
    if why is not None:
        result["dbos"] = {"skipped": why}
        return result
    with dbos_side.checked_stack(ctx.logs("dbos"), run_seconds=RUN_SECONDS, processes=1) as dbos_stack:
        result["dbos"] = _flow(dbos_stack, dbos_stack.producer, conversations, deadline)
        result["dbos"]["correctness"] = dbos_stack.correctness
    return result


def _flow(stack: Any, producer: Any, conversations: int, deadline: Deadline) -> dict[str, Any]:
    """Faults on, the rounds of messages, the replies until all came or none for a while; faults
    off, then the audit and each thread's user messages."""
    outbound = Outbound(stack.redis.client)
    runs_before = len(stack.emulator.runs())
    stack.emulator.configure(**FAULTS)
    sent = Sent()
    started = time.monotonic()
    for round_ in range(MESSAGES):
        time.sleep(max(0.0, started + round_ * ROUND_SECONDS - time.monotonic()))
        part = send_burst(producer, (f"fault-{i}" for i in range(conversations)),
                          lambda i, r=round_: f"Message {r} of conversation {i}.")
        sent.at.update(part.at)
        sent.conversation.update(part.conversation)
    answered = _wait_answered(stack, outbound, sent, deadline.sub(240, "the replies under faults"))
    faults = stack.emulator.stats()["faults_injected"]
    stack.emulator.configure(fault_lost=0.0, fault_429=0.0, fault_500=0.0)
    outbound.read_new()
    replies = outbound.replies  # every entry since the reader was made
    threads = sorted({r.data["thread_id"] for r in replies if r.data.get("thread_id")})
    runs = len(stack.emulator.runs()) - runs_before
    return {**audit(replies, sent), "all_answered": answered, "runs": runs,
            "runs_per_message": round(runs / len(sent), 2) if sent else None,
            "faults_injected": {k: v for k, v in faults.items() if k in ("lost", "429", "500")},
            **_duplicates(stack.emulator, threads)}


def _wait_answered(stack: Any, outbound: Outbound, sent: Sent, deadline: Deadline) -> bool:
    """Until every sent event is in an entry (True), or no reply came for QUIET_SECONDS (False)."""
    answered: set[str] = set()
    last_new = time.monotonic()
    while True:
        new = outbound.read_new()
        if new:
            last_new = time.monotonic()
        answered.update(eid for r in new for eid in r.data.get("event_ids") or [])
        if all(eid in answered for eid in sent.at):
            return True
        if time.monotonic() - last_new > QUIET_SECONDS or deadline.expired():
            return False
        stack.check_alive()
        time.sleep(0.2)


def _duplicates(emulator: Emulator, threads: list[str]) -> dict[str, int]:
    """User messages whose text is in their thread more than once (the extra copies), and threads
    with any."""
    client = openai.OpenAI(base_url=emulator.base_url, api_key="sk-bench", max_retries=5)

    def copies(thread_id: str) -> int:
        page = client.beta.threads.messages.list(thread_id, limit=100)
        texts = Counter(str(m.content[0].text.value) for m in page.data  # type: ignore[union-attr]
                        if m.role == "user" and m.content and m.content[0].type == "text")
        return sum(n - 1 for n in texts.values())

    with ThreadPoolExecutor(8) as pool:
        counts = list(pool.map(copies, threads))
    client.close()
    return {"threads_checked": len(threads), "duplicate_user_messages": sum(counts),
            "threads_with_duplicates": sum(1 for n in counts if n)}


def _blocking(ctx: Context, messages: int, deadline: Deadline) -> dict[str, Any]:
    """The SDK guide's loop (bench.baseline.handle: a thread per message, create_and_poll) under
    the same faults: a message whose loop raised is a lost reply."""
    with running_emulator(ctx.logs("blocking"), RUN_SECONDS) as emulator:
        emulator.configure(**FAULTS)
        client = openai.OpenAI(base_url=emulator.base_url, api_key="sk-bench", timeout=30.0)
        threads: list[str] = []

        def handle(index: int) -> str:
            thread = client.beta.threads.create()
            threads.append(thread.id)
            client.beta.threads.messages.create(thread.id, role="user", content=f"Message of conversation {index}.")
            run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id="asst_default")
            client.beta.threads.messages.list(thread.id, run_id=run.id)
            return str(run.status)

        def attempt(index: int) -> str:
            deadline.check()
            try:
                return handle(index)
            except openai.OpenAIError as exc:
                return f"raised {type(exc).__name__}"

        with ThreadPoolExecutor(8) as pool:
            outcomes = Counter(pool.map(attempt, range(messages)))
        faults = emulator.stats()["faults_injected"]
        emulator.configure(fault_lost=0.0, fault_429=0.0, fault_500=0.0)
        client.close()
        return {"sent": messages, "outcomes": dict(outcomes),
                "lost": sum(n for status, n in outcomes.items() if status.startswith("raised")),
                "faults_injected": {k: v for k, v in faults.items() if k in ("lost", "429", "500")},
                **_duplicates(emulator, threads)}
