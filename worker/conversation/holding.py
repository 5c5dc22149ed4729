"""Holding a batch while the API circuit is open (worker/circuit.py).

Before a phase handler runs, `gate` asks the circuit. While it is open the step makes no
API call: the batch waits until the next probe is due (a Wait, spread by jitter), and its
failure count (`api_failures`) stays as it was: the outage's failures are not the batch's,
so API_MAX_ATTEMPTS counts only failures of an API that answers others. One step at a
time is let through as the probe. The batch keeps when its hold began (`held_at`); once
the circuit closes, the next step adds the hold to `held_seconds` (one write) and goes on.
Held time does not count toward RUN_TIMEOUT_SECONDS. A batch held without a break for
API_OUTAGE_HOLD_SECONDS is answered `run.failed` / `api_unavailable`; an answered batch
(STOPPING) waits at most until its cancel deadline, then is released.
"""

from __future__ import annotations

from worker.batch import Batch
from worker.conversation import endings
from worker.conversation.context import Context
from worker.conversation.transitions import Checkpoint, Finish, Transition, Wait
from worker.errors import TransientApiError

HOLD_JITTER = 0.25  # held steps come back spread over +25 %, not all at the probe's time
MIN_HOLD_SECONDS = 0.2


def gate(ctx: Context, batch: Batch) -> Transition | None:
    """None: the step may call the API; else what the batch does instead."""
    admission = ctx.circuit.admit()
    if not admission.go:
        return hold(ctx, batch, admission.delay)
    if batch.held_at is not None and not admission.probe:  # closed again: the hold ends
        now = ctx.clock()
        ctx.planner.forget(batch.batch_id)  # its phase's age is the outage's, not the run's
        return Checkpoint(batch.evolve(held_at=None, held_seconds=batch.held_for(now)))
    return None


def api_failed(ctx: Context, batch: Batch, exc: TransientApiError) -> Transition:
    """A transient API failure: the outage's while the circuit is open (held, not counted),
    else the batch's (endings.api_failed)."""
    if ctx.circuit.is_open:
        return hold(ctx, batch, ctx.circuit.retry_in())
    return endings.api_failed(ctx, batch, exc)


def hold(ctx: Context, batch: Batch, delay: float) -> Transition:
    """Come back after `delay` (with jitter), with the hold recorded; or give up."""
    now = ctx.clock()
    delay = max(MIN_HOLD_SECONDS, delay) * ctx.rng.uniform(1.0, 1.0 + HOLD_JITTER)
    if batch.published:  # answered: only the stop of its run waits, until its deadline
        deadline = batch.cancel_deadline or now
        return Finish(batch) if now >= deadline else Wait(batch, min(delay, deadline - now))
    held_at = now if batch.held_at is None else batch.held_at
    limit = ctx.settings.api_outage_hold_seconds
    if now - held_at >= limit:
        message = (f"the API did not answer for {now - held_at:.0f} s (API_OUTAGE_HOLD_SECONDS "
                   f"{limit:g}): last error {ctx.circuit.last_error or 'unknown'}")
        return endings.give_up(ctx, batch, "api_unavailable", message)
    return Wait(batch.evolve(held_at=held_at), min(delay, held_at + limit - now))


def run_started(batch: Batch, now: float) -> Batch:
    """A run's first start: held time counts from here on (RUN_TIMEOUT_SECONDS counts
    from here too); a hold going on restarts now."""
    if batch.run_started_at is not None:
        return batch
    return batch.evolve(held_seconds=0.0, held_at=None if batch.held_at is None else now)
