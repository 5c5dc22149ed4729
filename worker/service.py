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

import logging
import random
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis
import structlog

from worker import metrics, polling
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


# Between looks at a conversation another response keeps busy (Responses).
BUSY_WAIT_MAX_SECONDS = 5.0


def tools_key(run_id: str, calls: list[ToolCall]) -> str:
    """One requires_action step: the run and its call ids."""
    return f"{run_id}:{','.join(sorted(c.id for c in calls))}"


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
        key = tools_key(run_id, calls)
        if not self.store.claim_tools(conversation_id, key, self.settings.tool_timeout_seconds + 10):
            return  # a duplicate delivery: another worker runs (or just ran) these calls
        results = self.tool_runner.run(calls)
        for result in results:
            metrics.observe_tool(result.tool, result.outcome, result.duration)
            log.info("tool called", conversation_id=conversation_id, event_ids=batch.event_ids,
                     thread_id=batch.thread_id, run_id=run_id, tool=result.tool,
                     outcome=result.outcome, duration_ms=int(result.duration * 1000))
        outputs = [{"tool_call_id": r.call_id, "output": r.output} for r in results]
        if not self._submit(batch, outputs, again=batch.tools_redispatched):
            # Kept for the next poll to submit again: the tools do not run twice.
            self.store.keep_tool_outputs(conversation_id, key, outputs, self.settings.run_timeout_seconds)

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
        if not self._assistant_id(batch) and self.backend.needs_assistant:
            self._reject_batch(batch, "no assistant_id on the event and ASSISTANT_ID is not set")
            return
        new_thread = batch.thread_id is None
        if new_thread and batch.fresh and batch.create_sent == batch.run_attempt and not batch.api_failures:
            if self._create_thread_and_run(batch):
                return
        if new_thread:
            # A worker that died between creating a thread and recording it leaves that
            # thread unused: harmless, and no message was appended to it.
            batch.thread_id = self._create_thread(batch)
        # A previous attempt may have created the run although its answer was lost, or its
        # worker died before recording it: the intent recorded below says so.
        found = None
        request = self._run_request(batch)
        if batch.api_failures or (batch.create_sent == batch.run_attempt and not batch.fresh):
            found = self.backend.find_run(request)
        if found is None:
            # Record the intent before the call. A batch opened by this very step already
            # carries it (written with the batch), unless a thread had to be created first.
            already_recorded = batch.create_sent == batch.run_attempt and batch.fresh
            batch.create_sent = batch.run_attempt
            if (new_thread or not already_recorded) and not self.store.save_batch(batch):
                return  # a newer lease holder owns the batch now
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

    def _create_thread_and_run(self, batch: Batch) -> bool:
        """A new conversation's first run: thread, user messages and run in one call (False:
        the backend has no such call). Its intent went in with the batch. A lost answer leaves
        a thread no one knows (its run's tokens are spent; nothing of it is published, its
        tool calls never run): the retry creates the thread first, so it can reconcile."""
        try:
            started = self.backend.create_thread_and_run(batch.conversation_id, self._run_request(batch, ""))
        except InvalidRequestError as exc:
            self._reject_batch(batch, str(exc))
            return True
        if started is None:
            return False
        batch.thread_id, run = started
        log.info("thread created", conversation_id=batch.conversation_id, thread_id=batch.thread_id)
        self._adopt(batch, run)
        return True

    def _run_request(self, batch: Batch, thread_id: str | None = None) -> RunRequest:
        """The batch's run request (on `thread_id`: "" for a thread created with the run)."""
        thread_id = batch.thread_id if thread_id is None else thread_id
        assert thread_id is not None
        # Only reconciliation needs the conversation's previous run (one Redis read).
        reconciling = bool(batch.api_failures or not batch.fresh or batch.state == CANCELLING)
        return RunRequest(thread_id=thread_id, assistant_id=self._assistant_id(batch),
                          instructions=batch.first.instructions, batch_id=batch.batch_id,
                          attempt=batch.run_attempt, events=batch.events,
                          append=not batch.messages_appended, reconciling=reconciling,
                          after_run_id=self.store.last_run_id(batch.conversation_id) if reconciling else None)

    def _assistant_id(self, batch: Batch) -> str:
        return batch.first.assistant_id or self.settings.assistant_id or ""

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
        if active is None:
            # Not listable (Responses): our own create still running, or another client's.
            # Look again soon (reconciliation runs first), for at most RUN_TIMEOUT_SECONDS.
            if self.clock() - batch.created_at > self.settings.run_timeout_seconds:
                self._give_up(batch, "api_error", "the conversation stayed busy with another response "
                              f"for {self.settings.run_timeout_seconds:g} s")
                return None
            batch.busy_waits += 1
            self._save_and_schedule(batch, min(BUSY_WAIT_MAX_SECONDS, self._backoff(batch.busy_waits)))
            return None
        batch.api_failures += 1
        if batch.api_failures >= self.settings.api_max_attempts // 2:
            log.warning("cancelling a foreign run", conversation_id=batch.conversation_id,
                        thread_id=batch.thread_id, run_id=active.id)
            self.backend.cancel_run(batch.thread_id, active.id)
        self._save_and_schedule(batch, self._backoff(batch.api_failures))
        return None

    def _adopt(self, batch: Batch, run: RunState) -> None:
        batch.run_id = run.id
        batch.unconfirmed = not run.confirmed
        batch.state = RUNNING
        batch.messages_appended = True
        batch.api_failures = batch.busy_waits = 0
        batch.polls = 0
        batch.run_started_at = batch.run_started_at or self.clock()
        batch.phase_started_at = self.clock()
        # The user messages go in with the run (additional_messages): created = appended.
        log.info("run created", conversation_id=batch.conversation_id, event_ids=batch.event_ids,
                 thread_id=batch.thread_id, run_id=run.id, attempt=batch.run_attempt,
                 appended=len(batch.events), waited_ms=int((self.clock() - batch.oldest_sent_at) * 1000))
        if (run.terminal or run.status == "requires_action") and run.confirmed:
            self.store.save_batch(batch)
            self._on_run_state(batch, run)
            return
        self._save_and_schedule(batch, self._poll_delay(batch, run))

    # --- following the run -----------------------------------------------------------
    def _poll(self, batch: Batch) -> None:
        assert batch.thread_id is not None and batch.run_id is not None
        unsaved = bool(batch.api_failures)  # record_poll writes only the poll count
        if batch.unconfirmed:
            run = self.backend.confirm_run(self._run_request(batch), batch.run_id)
            batch.unconfirmed = not run.confirmed
            unsaved = True
        else:
            run = self.backend.get_run(batch.thread_id, batch.run_id)
        metrics.RUN_POLLS.inc()
        batch.api_failures = 0
        self._on_run_state(batch, run, unsaved)

    def _on_run_state(self, batch: Batch, run: RunState, unsaved: bool = False) -> None:
        if log.isEnabledFor(logging.DEBUG):  # event_ids parses the events: not on every poll
            log.debug("polled", conversation_id=batch.conversation_id, event_ids=batch.event_ids,
                      thread_id=batch.thread_id, run_id=run.id, status=run.status,
                      age_ms=int((self.clock() - (batch.phase_started_at or self.clock())) * 1000))
        if batch.phase_started_at:
            age = self.clock() - batch.phase_started_at
            if run.terminal or run.status == "requires_action":
                self.planner.ended(batch.batch_id, age)
                self._share_phase_durations()
            else:
                self.planner.running(batch.batch_id, age)
        if batch.run_id is not None and run.id != batch.run_id:
            # The backend found that the run went on under another id (Responses: tool
            # outputs submitted by an attempt whose answer was lost): follow that one.
            log.info("run continued elsewhere", conversation_id=batch.conversation_id,
                     run_id=batch.run_id, next_run_id=run.id)
            batch.run_id, batch.tools_key = run.id, None
            unsaved = True
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
        if unsaved:
            self._save_and_schedule(batch, delay)
        else:
            self.store.record_poll(batch, self.clock() + delay)

    def _requires_action(self, batch: Batch, run: RunState) -> None:
        key = tools_key(run.id, run.tool_calls)
        now = self.clock()
        window = self.settings.tool_timeout_seconds + 10
        kept = self.store.kept_tool_outputs(batch.conversation_id, key)
        if kept is not None:  # the tools ran, their submission failed: submit again, don't rerun
            self.store.save_batch(batch)
            self._submit_kept(batch, key, kept)
            return
        if batch.tools_key == key and batch.tools_at and now - batch.tools_at < window:
            self.store.schedule(batch.conversation_id, batch.tools_at + window)
            return
        if run.idle and run.usage:  # a response of function calls (Responses): its own usage
            batch.add_usage(run.usage)
        # Dispatched again after the window: the first dispatch's worker may have died after
        # its submission went through, so this one's submission is confirmed.
        batch.tools_redispatched = batch.tools_key == key
        batch.tools_key, batch.tools_at = key, now
        self._save_and_schedule(batch, window)
        self.dispatch_tools(batch.conversation_id, batch.batch_id, run.id, run.tool_calls)

    def _submit_kept(self, batch: Batch, key: str, outputs: list[dict[str, str]]) -> None:
        if self._submit(batch, outputs, again=True):
            self.store.forget_tool_outputs(batch.conversation_id, key)

    def _submit(self, batch: Batch, outputs: list[dict[str, str]], again: bool = False) -> bool:
        """Submit the outputs; False when the submission failed (the caller keeps them for the
        next poll to submit again). `again`: an earlier submission of them failed, maybe
        after it went through, so a new run it starts is confirmed before it is followed."""
        assert batch.thread_id is not None and batch.run_id is not None
        now = self.clock()
        submitted = True
        try:
            next_run = self.backend.submit_tool_outputs(batch.thread_id, batch.run_id, outputs,
                                                        batch.first.instructions)
            log.info("tool outputs submitted", conversation_id=batch.conversation_id,
                     event_ids=batch.event_ids, thread_id=batch.thread_id, run_id=batch.run_id,
                     next_run_id=next_run, outputs=len(outputs),
                     tools_ms=int((now - (batch.tools_at or now)) * 1000))
            fields = {"phase_started_at": str(now), "polls": "0"}
            if next_run:  # the backend goes on in a new run (Responses): follow that one
                fields["run_id"] = next_run
                fields["unconfirmed"] = "1" if again else "0"
        except (TransientApiError, PermanentApiError) as exc:
            # Either it went through after all, or the run moved on (expired, cancelled):
            # the next poll tells, and re-dispatches the tools if still required.
            log.warning("tool output submission failed", conversation_id=batch.conversation_id,
                        run_id=batch.run_id, error=str(exc))
            fields = {"tools_key": ""}
            submitted = False
        # Some fields only, not a whole save: tools run without the lease.
        self.store.set_fields(batch, fields, due=now + self.planner.next_delay(0.0, 0))
        return submitted

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
        self.planner.forget(batch.batch_id)  # a stopped run says nothing about run times
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
            found = self.backend.find_run(self._run_request(batch))
            if found is not None and found.active:
                batch.run_id = found.id
                self.backend.cancel_run(batch.thread_id, found.id)
        stopped = True
        if batch.thread_id and batch.run_id:
            run = self.backend.get_run(batch.thread_id, batch.run_id)
            stopped = run.terminal or run.idle
            if stopped and batch.unconfirmed:
                self._confirm_stopped(batch)  # the run it follows is the conversation's last one
        deadline = batch.cancel_deadline or 0.0
        if stopped or self.clock() >= deadline:
            self._release(batch)
        else:
            batch.state = CANCELLING
            self._save_and_schedule(batch, self.settings.poll_initial_delay_seconds)

    def _confirm_stopped(self, batch: Batch) -> None:
        """A stopped run that may have repeated an earlier one's input: let the backend drop
        its copy (best effort: the batch is answered already), and keep the run that stays
        in the conversation as the batch's, so that the release records it as the last."""
        assert batch.run_id is not None
        try:
            batch.run_id = self.backend.confirm_run(self._run_request(batch), batch.run_id).id
        except (TransientApiError, PermanentApiError) as exc:
            log.warning("could not confirm a stopped run", conversation_id=batch.conversation_id,
                        run_id=batch.run_id, error=str(exc))

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
                     run_ms=None if run_seconds is None else int(run_seconds * 1000),
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

    def seed_planner(self) -> None:
        """Plan polls from the fleet's recent run durations from the start, not blindly."""
        try:
            self.planner.seed(self.store.phase_durations(polling.HISTORY))
        except redis.RedisError as exc:
            log.warning("no shared run durations: polls back off until runs end", error=str(exc))

    def _share_phase_durations(self) -> None:
        durations = self.planner.take_unshared()
        if durations:  # one write per SHARE_EVERY ended phases
            self.store.share_phase_durations(durations, polling.HISTORY)

    def _backoff(self, failures: int) -> float:
        s = self.settings
        base = min(30.0, s.poll_initial_delay_seconds * 2 ** max(0, failures - 1))
        return base * self._rng.uniform(1 - s.poll_jitter, 1 + s.poll_jitter)

    def _content(self, events: list[InboundEvent]) -> dict[str, Any]:
        if self.settings.log_message_content:
            return {"content": [e.content for e in events]}
        return {}
