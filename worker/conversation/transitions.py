"""What a phase decides, as values: the service applies them (the store's writes) in order.

A phase never writes the batch itself: it returns one of these, and `ConversationService`
turns it into the one batch write it names (after the `deltas` it carries, written to the
conversation's delta stream; an answer's go with it: conversation/deltas.py) and either
ends the step or goes on. (A phase does make API calls, and writes that are not the
batch's: a rejected event's dead letter, a tool round's kept outputs.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from worker.backends.base import RunState, ToolCall
from worker.batch import Batch
from worker.events import OutboundEntry
from worker.store.deltas import Delta


@dataclass(frozen=True)
class Step:
    """What one step knows beside the batch (never stored)."""

    token: int  # the lease's fencing token
    fresh: bool = False  # the batch was opened by this step: nothing of it reached the API
    known_run: RunState | None = None  # the run's state, read already by this step
    # This step recorded the create intent itself (a new attempt, or the wait for an unseen
    # earlier create is over): nothing can be running unseen since, so it may create now.
    create_now: bool = False


@dataclass(frozen=True)
class Open:
    """Open `batch`, taking its `taken` events off the inbox head, and go on with it."""

    batch: Batch
    taken: int


@dataclass(frozen=True)
class Checkpoint:
    """Write the batch (an intent before an API call, or progress) and go on with it;
    `known_run`: the run's state, handed to the next phase instead of read again."""

    batch: Batch
    known_run: RunState | None = None
    create_now: bool = False  # handed to the next phase (Step.create_now)
    deltas: tuple[Delta, ...] = ()


@dataclass(frozen=True)
class Wait:
    """Write the batch and come back after `delay` seconds: the step ends."""

    batch: Batch
    delay: float
    deltas: tuple[Delta, ...] = ()


@dataclass(frozen=True)
class Polled:
    """Only the poll count changed: count it (in Redis: `batch` is as it was read) and come
    back after `delay`: the step ends."""

    batch: Batch
    delay: float


@dataclass(frozen=True)
class DispatchTools:
    """Write the batch, come back after `delay` (the dispatch window), and hand the run's
    tool calls to the tools actor: the step ends."""

    batch: Batch
    delay: float
    run_id: str
    calls: list[ToolCall] = field(default_factory=list)
    deltas: tuple[Delta, ...] = ()


@dataclass(frozen=True)
class Answer:
    """Publish the batch's entry and keep the batch (`batch.phase` is STOPPING): the step
    goes on to stop its run."""

    batch: Batch
    entry: OutboundEntry


@dataclass(frozen=True)
class Finish:
    """Publish the entry (None: answered before) and release the batch; the next batch
    opens in the same step when events wait."""

    batch: Batch
    entry: OutboundEntry | None = None


@dataclass(frozen=True)
class RejectEvent:
    """One event of the batch was refused by the API (its own content): publish its
    rejection `entry` and dead-letter it (`raw`, `reason`) with the write of `batch`, which
    no longer holds it, and go on with the rest (`sent_at`: the refused event's send time)."""

    batch: Batch
    entry: OutboundEntry
    raw: str
    reason: str
    sent_at: float


@dataclass(frozen=True)
class Later:
    """Nothing changed: only come back at `due` (a write of the due time alone, so that it
    never overwrites what the tools actor writes meanwhile): the step ends."""

    batch: Batch
    due: float


@dataclass(frozen=True)
class Idle:
    """Nothing to do: no batch is open and the inbox is empty (or the batch could not be
    opened): the conversation leaves the schedule unless an event arrived meanwhile.
    `recheck_at`: it stays on the schedule until then instead (a watch for a late copy)."""

    recheck_at: float | None = None


Transition = Open | Checkpoint | Wait | Polled | Later | DispatchTools | Answer | Finish | RejectEvent | Idle
