"""The one rule for when an earlier create may have gone through."""

from __future__ import annotations

from worker.batch import Batch


def may_exist_already(batch: Batch, *, fresh: bool) -> bool:
    """Whether a run (or thread) for this batch's current attempt may exist although the
    worker never recorded it: an API step failed (a lost answer may have been applied), or
    the create intent of this attempt was recorded by an earlier step (its worker may have
    died after the create went through, or the thread was busy). Then the backend looks for
    it before it creates anything. A batch opened by this very step has sent nothing yet."""
    return batch.api_failures > 0 or (batch.create_sent == batch.run_attempt and not fresh)
