"""The error tree: transient errors are retried with backoff, permanent ones end in an
outcome event (and a dead letter for bad input)."""

from __future__ import annotations


class WorkerError(Exception):
    """Base of every error the worker raises on purpose."""


class TransientApiError(WorkerError):
    """The API call may succeed later (429, 5xx, timeout, connection error).

    `maybe_applied` is True when the request may have been carried out although no answer
    came back (a timeout or 5xx on a POST): the caller must reconcile before repeating it.
    """

    def __init__(self, message: str, *, retry_after: float | None = None,
                 maybe_applied: bool = False, status: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.maybe_applied = maybe_applied
        self.status = status


class ThreadBusyError(TransientApiError):
    """The thread has an active run (HTTP 400/409 'already has an active run')."""


class PermanentApiError(WorkerError):
    """The API refused the request for good (bad assistant id, invalid request)."""

    def __init__(self, message: str, *, code: str = "api_error", status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


    @property
    def refuses_the_deployment(self) -> bool:
        """401, 403: the key (or its permissions) is refused; every call will be."""
        return self.status in (401, 403)


class InvalidRequestError(PermanentApiError):
    """The request is wrong for this input: the events are rejected (`invalid_event`)."""


class ToolRegistryError(WorkerError):
    """A tool module could not be loaded or a tool is declared twice."""
