"""The conversation service: one step of one conversation at a time.

`advance(conversation_id)` is called whenever the conversation is due on the schedule (a
new event, a poll, a retry, a cancel request). Holding the conversation's lease, it looks at
the active batch and takes exactly one step of its state machine:

    idle --(events waiting)--> creating --(run created or adopted)--> running
    running --(requires_action)--> tools dispatched --(outputs submitted)--> running
    running --(terminal)--> published, released --> next batch or idle
    creating/running --(cancel, timeout)--> published --> cancelling --(API stopped)--> released

Between two steps nothing holds a thread: the next step is a due time in Redis.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from typing import Any

import structlog

from worker import metrics
from worker.backends.base import RunBackend, RunRequest, RunState, ToolCall
from worker.batch import CANCELLING, CREATING, RUNNING, Batch
from worker.errors import InvalidRequestError, PermanentApiError, ThreadBusyError, TransientApiError
from worker.events import InboundEvent, InvalidEvent, salvage_ids
from worker.outcomes import STATUS_TYPES, batch_entry, rejection_entry
from worker.polling import PollPlanner
from worker.settings import Settings
from worker.store import ConversationStore
from worker.tools import ToolRunner

log = structlog.get_logger("worker.service")

RETRYABLE_RUN_ERRORS = frozenset({"rate_limit_exceeded", "server_error"})
MAX_STEP_CRASHES = 3
ToolDispatch = Callable[[str, str, str, list[ToolCall]], None]


class ConversationService:
    def __init__(self, store: ConversationStore, backend: RunBackend, settings: Settings,
                 dispatch_tools: ToolDispatch, tool_runner: ToolRunner | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.backend = backend
        self.settings = settings
        self.dispatch_tools = dispatch_tools
        self.tool_runner = tool_runner or ToolRunner(settings.tool_timeout_seconds,
                                                     settings.tool_output_max_chars)
        self.clock = clock
        self._rng = random.Random()  # jitter; private, so it never disturbs the global one
        self.planner = PollPlanner(settings, self._rng)

    # --- entry points ----------------------------------------------------------------
    def advance(self, conversation_id: str, claimed: float | None = None) -> None:
        """Take the next step of a conversation that is due (`claimed`: the schedule score
        of the claim this call answers; a changed score means the call is stale)."""
        step = self.store.begin_step(conversation_id, self.settings.lease_seconds, claimed,
                                     retry_due=self.clock() + 1.0,
                                     inbox_head=self.settings.max_batch_events)
        if step.token <= 0:
            return  # stale, or another worker holds the lease (the claim comes due again)
        batch = step.batch
        try:
            batch = self._advance_held(conversation_id, step.token, batch, step.cancel_at,
                                       step.inbox_head, step.thread_id)
        except Exception as exc:  # noqa: BLE001 - a step must never crash-loop a conversation
            self._step_crashed(conversation_id, step.token, exc)
        finally:
            if batch is None or not batch.lease_released:  # the step's last write may have
                self.store.end_step(conversation_id, step.token)  # given it back already

    def _step_crashed(self, cid: str, token: int, exc: Exception) -> None:
        """An unexpected error: retry the step with backoff; after MAX_STEP_CRASHES the batch
        is answered with `run.failed` / `internal_error` so the conversation moves on."""
        log.exception("step crashed", conversation_id=cid, error=f"{type(exc).__name__}: {exc}")
        batch = self.store.load_batch(cid)
        if batch is None:
            self.store.schedule(cid, self.clock() + self._backoff(2))
            return
        batch.fence = token
        batch.step_crashes += 1
        if batch.step_crashes < MAX_STEP_CRASHES:
            self._save_and_schedule(batch, self._backoff(batch.step_crashes + 1))
            return
        if batch.published:
            self._release(batch)
        else:
            self._give_up(batch, "internal_error", f"the worker failed on this batch: {type(exc).__name__}")

    def run_tools(self, conversation_id: str, batch_id: str, run_id: str,
                  calls: list[ToolCall]) -> None:
        """Execute one requires_action step's tool calls and submit all outputs at once."""
        batch = self.store.load_batch(conversation_id)
        if batch is None or batch.batch_id != batch_id or batch.run_id != run_id or batch.published:
            return  # the batch moved on (cancelled, finished): its tools are not wanted
        results = self.tool_runner.run(calls)
        for result in results:
            metrics.observe_tool(result.tool, result.outcome, result.duration)
            log.info("tool called", conversation_id=conversation_id, run_id=run_id,
                     tool=result.tool, outcome=result.outcome, duration_ms=int(result.duration * 1000))
        outputs = [{"tool_call_id": r.call_id, "output": r.output} for r in results]
        self._submit(batch, outputs)

    # --- the state machine -----------------------------------------------------------
    def _advance_held(self, cid: str, token: int, batch: Batch | None,
                      cancel_at: float | None = None, inbox_head: list[bytes] | None = None,
                      thread_id: str | None = None) -> Batch | None:
        """One step; returns the batch it worked on (None when the conversation is idle)."""
        if batch is not None and cancel_at is not None and not batch.published \
                and batch.created_at <= cancel_at:
            self._cancel(batch, "cancelled", "the conversation was cancelled")
            return batch
        if batch is None:
            batch = self._open_next_batch(cid, token, inbox_head, thread_id)
            if batch is None:
                if not self.store.retire_if_idle(cid):
                    self.store.schedule(cid, self.clock())  # an event arrived meanwhile
                return None
        try:
            self._step(batch)
        except (TransientApiError, PermanentApiError) as exc:
            self._api_failed(batch, exc)
        return batch

    def _step(self, batch: Batch) -> None:
        if batch.published or batch.state == CANCELLING:
            self._step_cancelling(batch)
        elif batch.state == CREATING:
            self._start_run(batch)
        else:
            self._poll(batch)

    # --- opening a batch -------------------------------------------------------------
    def _open_next_batch(self, cid: str, token: int, inbox_head: list[bytes] | None,
                         thread_id: str | None) -> Batch | None:
        events: list[InboundEvent] = []
        if inbox_head is None:
            inbox_head = self.store.peek_inbox(cid, self.settings.max_batch_events)
            thread_id = self.store.thread_id(cid)
        for raw in inbox_head:
            try:
                event = InboundEvent.parse(raw)
                if event.conversation_id != cid:
                    raise InvalidEvent("conversation_id", "does not match the inbox it is in")
            except InvalidEvent as exc:
                if events:
                    break  # rejected once it reaches the head, after this batch
                self._reject_raw(cid, raw, str(exc))
                continue
            if events and event.batch_key() != events[0].batch_key():
                break
            events.append(event)
        if not events:
            return None
        batch = Batch.new(uuid.uuid4().hex, cid, events, created_at=self.clock(),
                          thread_id=thread_id, fence=token, create_sent=0, fresh=True)
        if not self.store.open_batch(batch, taken=len(events)):
            return None
        log.debug("batch opened", conversation_id=cid, event_ids=batch.event_ids,
                 batch_id=batch.batch_id, **self._content(events))
        return batch

    def _reject_raw(self, cid: str, raw: bytes, reason: str) -> None:
        _, event_ids = salvage_ids(raw)
        entry = rejection_entry(cid, event_ids, reason)
        if self.store.reject_head(cid, raw, entry.to_json(), reason):
            metrics.observe_outcome("event.rejected", None, [], None)
            log.warning("event rejected", conversation_id=cid, event_ids=event_ids, reason=reason)

    # --- creating the run ------------------------------------------------------------
    def _start_run(self, batch: Batch) -> None:
        assistant_id = batch.first.assistant_id or self.settings.assistant_id
        if not assistant_id:
            self._reject_batch(batch, "no assistant_id on the event and ASSISTANT_ID is not set")
            return
        new_thread = batch.thread_id is None
        if new_thread:
            # A worker that died between creating a thread and recording it leaves that
            # thread unused: harmless, and no message was appended to it.
            batch.thread_id = self._create_thread(batch)
        # A previous attempt may have created the run although its answer was lost, or its
        # worker died before recording it: the intent recorded below says so.
        found = None
        if batch.api_failures or (batch.create_sent == batch.run_attempt and not batch.fresh):
            found = self.backend.find_run(batch.thread_id, batch.batch_id, batch.run_attempt)
        if found is None:
            # Record the intent before the call. A batch opened by this very step already
            # carries it (written with the batch), unless a thread had to be created first.
            already_recorded = batch.create_sent == batch.run_attempt and batch.fresh
            batch.create_sent = batch.run_attempt
            if (new_thread or not already_recorded) and not self.store.save_batch(batch):
                return  # a newer lease holder owns the batch now
            request = RunRequest(thread_id=batch.thread_id, assistant_id=assistant_id,
                                 instructions=batch.first.instructions, batch_id=batch.batch_id,
                                 attempt=batch.run_attempt,
                                 events=[] if batch.messages_appended else batch.events)
            try:
                found = self.backend.create_run(request)
            except ThreadBusyError:
                found = self._run_in_the_way(batch)
                if found is None:
                    return
            except InvalidRequestError as exc:
                self._reject_batch(batch, str(exc))
                return
        self._adopt(batch, found)

    def _create_thread(self, batch: Batch) -> str:
        thread_id = self.backend.create_thread(batch.conversation_id)
        log.info("thread created", conversation_id=batch.conversation_id, thread_id=thread_id)
        return thread_id

    def _run_in_the_way(self, batch: Batch) -> RunState | None:
        """The thread has an active run. Ours (a lost answer) is adopted; another client's is
        waited for, then cancelled, so the conversation is never stuck."""
        assert batch.thread_id is not None
        active = self.backend.active_run(batch.thread_id)
        if active is not None and active.metadata.get("batch_id") == batch.batch_id:
            return active
        batch.api_failures += 1
        if active is not None and batch.api_failures >= self.settings.api_max_attempts // 2:
            log.warning("cancelling a foreign run", conversation_id=batch.conversation_id,
                        thread_id=batch.thread_id, run_id=active.id)
            self.backend.cancel_run(batch.thread_id, active.id)
        self._save_and_schedule(batch, self._backoff(batch.api_failures))
        return None

    def _adopt(self, batch: Batch, run: RunState) -> None:
        batch.run_id = run.id
        batch.state = RUNNING
        batch.messages_appended = True
        batch.api_failures = 0
        batch.polls = 0
        batch.run_started_at = batch.run_started_at or self.clock()
        batch.phase_started_at = self.clock()
        log.info("run created", conversation_id=batch.conversation_id, event_ids=batch.event_ids,
                 thread_id=batch.thread_id, run_id=run.id, attempt=batch.run_attempt)
        if run.terminal or run.status == "requires_action":
            self.store.save_batch(batch)
            self._on_run_state(batch, run)
            return
        self._save_and_schedule(batch, self._poll_delay(batch, run))

    # --- following the run -----------------------------------------------------------
    def _poll(self, batch: Batch) -> None:
        assert batch.thread_id is not None and batch.run_id is not None
        run = self.backend.get_run(batch.thread_id, batch.run_id)
        metrics.RUN_POLLS.inc()
        failures_before, batch.api_failures = batch.api_failures, 0
        self._on_run_state(batch, run, failures_before)

    def _on_run_state(self, batch: Batch, run: RunState, failures_before: int = 0) -> None:
        log.debug("polled", conversation_id=batch.conversation_id, run_id=run.id, status=run.status)
        if (run.terminal or run.status == "requires_action") and batch.phase_started_at:
            # Observed when seen: an upper bound, which keeps the learnt window from opening
            # before runs can end (a midpoint guess after a long gap would open it too early).
            self.planner.observe(self.clock() - batch.phase_started_at)
        if run.terminal:
            self._finish(batch, run)
            return
        if batch.run_started_at and self.clock() - batch.run_started_at > self.settings.run_timeout_seconds:
            self._cancel(batch, "timeout",
                         f"the run did not finish within {self.settings.run_timeout_seconds:g} s")
            return
        if run.status == "requires_action":
            self._requires_action(batch, run)
            return
        delay = self._poll_delay(batch, run)
        batch.polls += 1
        if failures_before:
            self._save_and_schedule(batch, delay)
        else:
            self.store.record_poll(batch, self.clock() + delay)

    def _requires_action(self, batch: Batch, run: RunState) -> None:
        key = f"{run.id}:{','.join(sorted(c.id for c in run.tool_calls))}"
        now = self.clock()
        window = self.settings.tool_timeout_seconds + 10
        if batch.tools_key == key and batch.tools_at and now - batch.tools_at < window:
            self.store.schedule(batch.conversation_id, batch.tools_at + window)
            return
        batch.tools_key, batch.tools_at = key, now
        self._save_and_schedule(batch, window)
        self.dispatch_tools(batch.conversation_id, batch.batch_id, run.id, run.tool_calls)

    def _submit(self, batch: Batch, outputs: list[dict[str, str]]) -> None:
        assert batch.thread_id is not None and batch.run_id is not None
        now = self.clock()
        try:
            self.backend.submit_tool_outputs(batch.thread_id, batch.run_id, outputs)
            log.info("tool outputs submitted", conversation_id=batch.conversation_id,
                     run_id=batch.run_id, outputs=len(outputs))
            fields = {"phase_started_at": str(now), "polls": "0"}
        except (TransientApiError, PermanentApiError) as exc:
            # Either it went through after all, or the run moved on (expired, cancelled):
            # the next poll tells, and re-dispatches the tools if still required.
            log.warning("tool output submission failed", conversation_id=batch.conversation_id,
                        run_id=batch.run_id, error=str(exc))
            fields = {"tools_key": ""}
        # Some fields only, not a whole save: tools run without the lease.
        self.store.set_fields(batch, fields, due=now + self.planner.next_delay(0.0, 0))

    # --- endings ---------------------------------------------------------------------
    def _finish(self, batch: Batch, run: RunState) -> None:
        kind, default_code = STATUS_TYPES.get(run.status, ("run.failed", "server_error"))
        error = run.error or ({"code": default_code, "message": f"the run ended {run.status}"}
                              if default_code else None)
        batch.add_usage(run.usage)
        if kind == "run.failed" and error and error["code"] in RETRYABLE_RUN_ERRORS \
                and batch.run_attempt < self.settings.run_retry_limit:
            log.warning("run failed, starting it again", conversation_id=batch.conversation_id,
                        run_id=run.id, code=error["code"], attempt=batch.run_attempt + 1)
            batch.run_attempt += 1
            batch.state, batch.run_id, batch.tools_key = CREATING, None, None
            self._save_and_schedule(batch, self._backoff(batch.run_attempt))
            return
        assert batch.thread_id is not None
        messages = self.backend.run_messages(batch.thread_id, run.id) \
            if kind in ("run.completed", "run.incomplete", "run.cancelled") else []
        steps = self.backend.run_steps(batch.thread_id, run.id) if self.settings.include_run_steps else None
        entry = batch_entry(batch, kind, error=None if kind == "run.completed" else error,
                            messages=messages, steps=steps, now=self.clock())
        self._publish(batch, entry, release=True)

    def _cancel(self, batch: Batch, code: str, message: str) -> None:
        """Answer the batch now (cancelled or timed out); the API run is stopped after."""
        messages: list[dict[str, Any]] = []
        if batch.run_id and batch.thread_id:
            try:
                messages = self.backend.run_messages(batch.thread_id, batch.run_id)
            except (TransientApiError, PermanentApiError):
                messages = []  # the answer must not wait: partial messages are best effort
        entry = batch_entry(batch, "run.cancelled", error={"code": code, "message": message},
                            messages=messages, now=self.clock())
        batch.state = CANCELLING
        batch.cancel_deadline = self.clock() + self.settings.cancel_wait_seconds
        self.store.save_batch(batch)
        self._publish(batch, entry, release=False)
        batch.published = True
        if batch.run_id and batch.thread_id:
            try:
                self.backend.cancel_run(batch.thread_id, batch.run_id)
            except (TransientApiError, PermanentApiError) as exc:
                log.info("cancel request failed; polling until the run stops",
                         conversation_id=batch.conversation_id, run_id=batch.run_id, error=str(exc))
        self.store.schedule(batch.conversation_id, self.clock() + self.settings.poll_initial_delay_seconds)

    def _step_cancelling(self, batch: Batch) -> None:
        """Keep the conversation closed until the API reports the run stopped, or give up."""
        if batch.thread_id and batch.run_id is None:
            found = self.backend.find_run(batch.thread_id, batch.batch_id, batch.run_attempt)
            if found is not None and found.active:
                batch.run_id = found.id
                self.backend.cancel_run(batch.thread_id, found.id)
        stopped = True
        if batch.thread_id and batch.run_id:
            stopped = self.backend.get_run(batch.thread_id, batch.run_id).terminal
        deadline = batch.cancel_deadline or 0.0
        if stopped or self.clock() >= deadline:
            self._release(batch)
        else:
            batch.state = CANCELLING
            self._save_and_schedule(batch, self.settings.poll_initial_delay_seconds)

    def _reject_batch(self, batch: Batch, reason: str) -> None:
        entry = rejection_entry(batch.conversation_id, batch.event_ids, reason, batch.oldest_sent_at)
        self.store.dead_letter([e.model_dump_json() for e in batch.events], reason)
        self._publish(batch, entry, release=True)

    def _api_failed(self, batch: Batch, exc: Exception) -> None:
        batch.api_failures += 1
        retry_after = getattr(exc, "retry_after", None)
        log.warning("api step failed", conversation_id=batch.conversation_id, run_id=batch.run_id,
                    state=batch.state, failures=batch.api_failures, error=str(exc))
        if batch.api_failures >= self.settings.api_max_attempts and not batch.published:
            self._give_up(batch, "api_error", f"the API failed {batch.api_failures} times: {exc}")
            return
        if batch.api_failures >= self.settings.api_max_attempts:
            self._release(batch)  # already answered, and the API keeps failing: give up waiting
            return
        delay = max(retry_after or 0.0, self._backoff(batch.api_failures))
        self._save_and_schedule(batch, delay)

    def _give_up(self, batch: Batch, code: str, message: str) -> None:
        """Answer the batch with `run.failed`; a run that may still be going is stopped
        before the conversation moves on."""
        entry = batch_entry(batch, "run.failed", error={"code": code, "message": message})
        self._publish(batch, entry, release=batch.run_id is None)
        if batch.run_id is not None:
            batch.state = CANCELLING
            batch.cancel_deadline = self.clock() + self.settings.cancel_wait_seconds
            self._save_and_schedule(batch, self._backoff(1))

    def _publish(self, batch: Batch, entry: Any | None, *, release: bool) -> None:
        published, events_wait = self.store.publish(batch, entry.to_json() if entry else "",
                                                     release=release)
        batch.published = True
        if published and entry is not None:
            now = self.clock()
            run_seconds = now - batch.run_started_at if batch.run_started_at else None
            metrics.observe_outcome(entry.type, run_seconds, [now - e.sent_at for e in batch.events],
                                    entry.usage)
            log.info("published", conversation_id=batch.conversation_id, event_ids=batch.event_ids,
                     thread_id=batch.thread_id, run_id=batch.run_id, type=entry.type,
                     total_ms=entry.timings.total_ms)
        if release and events_wait:
            self._advance_held(batch.conversation_id, batch.fence, None)

    def _release(self, batch: Batch) -> None:
        """Close an answered batch and start the next one."""
        self._publish(batch, None, release=True)

    # --- timing ----------------------------------------------------------------------
    def _save_and_schedule(self, batch: Batch, delay: float) -> None:
        """The last write of a step: progress, next due time and the lease, in one go."""
        self.store.save_batch(batch, due=self.clock() + delay, release=True)

    def _poll_delay(self, batch: Batch, run: RunState) -> float:
        elapsed = self.clock() - (batch.phase_started_at or batch.run_started_at or self.clock())
        return self.planner.next_delay(elapsed, batch.polls, run.poll_after_ms)

    def _backoff(self, failures: int) -> float:
        s = self.settings
        base = min(30.0, s.poll_initial_delay_seconds * 2 ** max(0, failures - 1))
        return base * self._rng.uniform(1 - s.poll_jitter, 1 + s.poll_jitter)

    def _content(self, events: list[InboundEvent]) -> dict[str, Any]:
        if self.settings.log_message_content:
            return {"content": [e.content for e in events]}
        return {}
