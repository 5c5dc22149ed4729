"""Finding a response whose create answer was lost, on servers that list responses.

OpenAI's Responses API has no list of responses; some compatible servers offer
`GET /responses` (OpenAI's list envelope, newest first). Where it is there, a create whose
answer was lost is found by its tag (`metadata`: batch_id and attempt) at once, running or
not, and a create that is not listed never went through: there is nothing to wait for.
Whether the server lists is probed once (`GET /responses?limit=1`: a list envelope means
yes, a 4xx no) and kept in the fleet's capability store (LIST_RESPONSES), so that the fleet
probes once per CAPABILITY_TTL_SECONDS; the `list_responses` setting forces it.
"""

from __future__ import annotations

import threading
import urllib.parse
from collections.abc import Callable
from typing import Any

from worker.backends.api import PAGE_LIMIT, ApiCalls
from worker.backends.base import RunRequest
from worker.capabilities import Capability, CapabilityStore
from worker.errors import PermanentApiError

METADATA_VALUE_CHARS = 512  # the API's limit on one metadata value
MAX_PAGES = 10  # at most this many pages of recent responses are looked through
CLOCK_SKEW_SECONDS = 300.0  # the server's clock may differ from ours: look back this much further


class ResponseListing:
    def __init__(self, api: ApiCalls, known: CapabilityStore) -> None:
        self.api = api
        self.known = known
        self._probing = threading.Lock()

    def available(self) -> bool:
        """Whether the server lists responses: set, learnt, or probed now (once per process:
        its threads meeting the unknown together wait for one probe)."""
        learnt = self.known.get(Capability.LIST_RESPONSES)
        if learnt.mode != "auto":
            return learnt.mode == "on"
        if learnt.value is not None:
            return learnt.value
        with self._probing:
            again = self.known.get(Capability.LIST_RESPONSES)
            return again.value if again.value is not None else self._probe()

    def _probe(self) -> bool:
        try:
            body, _ = self.api.read("responses.list", "responses?limit=1")
        except PermanentApiError as exc:
            if exc.refuses_the_deployment:
                raise
            self.known.learn(Capability.LIST_RESPONSES, False, f"GET /responses answered HTTP {exc.status}")
            return False
        listed = body.get("object") == "list" and isinstance(body.get("data"), list)
        self.known.learn(Capability.LIST_RESPONSES, listed,
                         "GET /responses answered a list" if listed else "GET /responses answered no list")
        return listed

    def find(self, request: RunRequest) -> tuple[dict[str, Any] | None, bool]:
        """The response this batch's attempt created (its body, or None), looking newest
        first back to a little before the batch opened; and whether the look was complete
        (False: MAX_PAGES were not enough to get there)."""
        return self._find(lambda body: _ours(body, request), request.opened_at or 0.0)

    def find_submission(self, run_id: str, call_ids: list[str], sent_at: float) -> tuple[dict[str, Any] | None, bool]:
        """The response a submission of these calls' outputs after `run_id` started, as `find`."""
        def submitted(body: dict[str, Any]) -> bool:
            metadata = body.get("metadata") or {}
            return (isinstance(metadata, dict) and metadata.get("after") == run_id[:METADATA_VALUE_CHARS]
                    and sorted(str(metadata.get("calls") or "").split(",")) == sorted(call_ids))
        return self._find(submitted, sent_at)

    def _find(self, ours: Callable[[dict[str, Any]], bool], since: float) -> tuple[dict[str, Any] | None, bool]:
        oldest = since - CLOCK_SKEW_SECONDS
        query: dict[str, Any] = {"order": "desc", "limit": PAGE_LIMIT}
        for _ in range(MAX_PAGES):
            page, _ = self.api.read("responses.list", f"responses?{urllib.parse.urlencode(query)}")
            data = [body for body in page.get("data") or [] if isinstance(body, dict)]
            found = next((body for body in data if ours(body)), None)
            if found is not None:
                return found, True
            if not page.get("has_more") or not data or _created_before(data[-1], oldest):
                return None, True
            query["after"] = str(page.get("last_id") or data[-1].get("id"))
        return None, False


def submission_tag(run_id: str, call_ids: list[str]) -> dict[str, str]:
    """The metadata of a tool round's response: the run it answers and the calls."""
    tag = {"after": run_id[:METADATA_VALUE_CHARS]}
    calls = ",".join(call_ids)
    if len(calls) <= METADATA_VALUE_CHARS:  # else a second submission cannot be recognised
        tag["calls"] = calls
    return tag


def _ours(body: dict[str, Any], request: RunRequest) -> bool:
    """Tagged with this batch's attempt (tool rounds carry no batch id), in its conversation
    when the server says which (some leave `conversation` null)."""
    metadata = body.get("metadata") or {}
    if not isinstance(metadata, dict) or metadata.get("batch_id") != request.batch_id:
        return False
    if metadata.get("attempt") != str(request.attempt):
        return False
    conversation = body.get("conversation")
    conversation_id = conversation.get("id") if isinstance(conversation, dict) else conversation
    return not conversation_id or conversation_id == request.thread_id


def _created_before(body: dict[str, Any], oldest: float) -> bool:
    created = body.get("created_at")
    return isinstance(created, int | float) and created < oldest
