"""The error tree: transient errors are retried with backoff, permanent ones end in an
outcome event (and a dead letter for bad input)."""

from __future__ import annotations

ROUTE_NOT_FOUND = "route_not_found"
THREAD_NOT_FOUND = "thread_not_found"
INVALID_REQUEST = "invalid_request"  # the code of a refused request whose answer named none


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
    """The API refused the request for good: the same request fails again. `code` is the
    API's own code when it gave one."""

    def __init__(self, message: str, *, code: str = "api_error", status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status

    @property
    def refuses_the_deployment(self) -> bool:
        """401, 403: the key (or its permissions) is refused; every call will be."""
        return self.status in (401, 403)

    @property
    def final(self) -> bool:
        """No retry can change the answer and nothing in the worker learns from it: the
        batch is answered at once (`run.failed` with `code`, and a dead letter)."""
        return self.refuses_the_deployment


class InvalidRequestError(PermanentApiError):
    """The request is wrong for this input (the event's content, attachments, instructions
    or assistant): the events are rejected with the API's `code`. `event_index`: which of
    the request's user messages (the batch's events, in order) the API named; None when it
    named none (the request as a whole)."""

    def __init__(self, message: str, *, code: str = INVALID_REQUEST, status: int | None = None,
                 event_index: int | None = None) -> None:
        super().__init__(message, code=code, status=status)
        self.event_index = event_index


class RequestRefusedError(PermanentApiError):
    """A 400/422 about what the worker itself sends (its tools, model or metadata, a
    parameter the server does not take): the deployment's fault, not the event's. Every
    event would meet it: final at once."""

    @property
    def final(self) -> bool:
        return True


class RouteNotFoundError(PermanentApiError):
    """The server has no such endpoint (a 404 that is not the API's JSON, `Invalid URL
    (...)`, a 405): a capability it lacks. A backend that can do without the route learns
    from it; where nothing does, the batch is answered at once."""

    def __init__(self, message: str, *, status: int | None = 404) -> None:
        super().__init__(message, code=ROUTE_NOT_FOUND, status=status)

    @property
    def final(self) -> bool:
        return True


class ThreadNotFoundError(PermanentApiError):
    """The API does not know a thread (Responses: a conversation) a call named: deleted or
    expired on the server. `thread_id` is the id the API named (None when it named none)."""

    def __init__(self, message: str, *, thread_id: str | None, status: int | None = 404) -> None:
        super().__init__(message, code=THREAD_NOT_FOUND, status=status)
        self.thread_id = thread_id


class ToolRegistryError(WorkerError):
    """A tool module could not be loaded or a tool is declared twice."""
