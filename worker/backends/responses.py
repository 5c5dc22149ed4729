"""OpenAI's Responses API in background mode, with one Conversation per conversation.

| worker (Assistants words) | Responses API                                                   |
|---------------------------|-----------------------------------------------------------------|
| thread                    | a Conversation (`conversations.create`)                         |
| create run (+ messages)   | `responses.create(background, store, conversation, input=...)`  |
| poll the run              | `GET /responses/{id}` while `queued` / `in_progress`            |
| requires_action           | a `completed` response whose output holds `function_call` items |
| submit tool outputs       | a new background response with `function_call_output` items     |
| cancel                    | `responses.cancel`                                              |

A response's input and output items are added to the conversation once it completes.
Every create is tagged (`metadata`: batch_id, attempt). A create whose answer was lost (or
whose worker died) is resolved by what the server offers (each learnt once for the fleet,
capabilities.py, or forced by its setting):

- **It lists responses** (`GET /responses`, not in OpenAI's spec; LIST_RESPONSES, probed
  once): ours is found by its tag, running or not, and followed by its id; one not listed
  never went through, and is created again (responses_search.py).
- **It locks a conversation while a response runs** (OpenAI; CONVERSATION_LOCK, learnt
  from a `conversation_locked` answer, or probed the first time it matters,
  responses_lock.py): the conversation's items decide. The batch's user
  messages after the previous batch's last output mean our create went through, and what
  follows them is adopted (a reply, or function calls to answer) as a run whose response id
  is unknown (a `RunRef` by the last of our user items, published with `run_id` null).
  Otherwise the create is sent again: a response of ours still running refuses it
  (`conversation_locked`: look again later).
- **Neither** (assumed while the lock is not known, so that the safe path is the
  default): a running response shows nowhere. Nothing is created again until its items show (adopted
  as above) or the caller's wait is over (`Unseen` until `repeat_ok`: the core waits the
  longer of 30 s and three times the 99th percentile of response durations). A create sent
  again then may still meet a late copy of the first: the core watches the conversation
  after publication and the copy's items are deleted (`remove_late_copies`,
  responses_copies.py).

No look closes the race of an earlier create completing just before a second create goes
through: the second is then confirmed (`confirm_run`) before it is followed: cancelled, or
once it has added its copy of the messages, that copy is deleted from the conversation.

Writes go through the SDK (`client.responses`, `client.conversations`), reads are plain
GETs (api.py, responses_items.py). Servers differ: some leave `response.conversation` null, return user
content as a plain string, or refuse to cancel a response in progress (the worker then
waits for it to end).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import openai
import structlog

from worker.backends import responses_confirm, responses_copies
from worker.backends.api import (
    ApiCalls,
    ApiObserver,
    json_object,
)
from worker.backends.base import (
    Busy,
    Capabilities,
    RunRequest,
    RunStart,
    RunState,
    Started,
    StreamTarget,
    Submitted,
    ThreadOpened,
    Unseen,
)
from worker.backends.responses_items import (
    ConversationReads,
    InputMatcher,
    items_marker,
    items_state,
    outbound_message,
    output_steps,
    outputs_input,
    pending_calls,
    response_state,
    responses_tool,
    stamped_output,
    user_input,
    user_item,
)
from worker.backends.responses_lock import LockProbe
from worker.backends.responses_search import METADATA_VALUE_CHARS, ResponseListing, submission_tag
from worker.backends.streaming import StreamedCalls, streamed
from worker.capabilities import Capability, CapabilityStore
from worker.errors import (
    InvalidRequestError,
    PermanentApiError,
    ThreadBusyError,
    TransientApiError,
)
from worker.streams.events import ResponsesEvents
from worker.streams.streams import Streams

log = structlog.get_logger(__name__)


class ResponsesBackend:
    def __init__(self, client: openai.OpenAI, *, model: str, instructions: str | None,
                 tools: list[dict[str, Any]], observe: ApiObserver | None = None,
                 known: CapabilityStore | None = None, streams: Streams | None = None) -> None:
        self.api = ApiCalls(client, observe)
        self.client = self.api.client
        self.model = model
        self.instructions = instructions
        self.tools = [responses_tool(t) for t in tools]
        self.reads = ConversationReads(self.api)
        self.known = known or CapabilityStore(None, str(client.base_url), {}, ttl_seconds=3600.0)
        self.listing = ResponseListing(self.api, self.known)
        self.streamed = StreamedCalls(streams, self.known)
        self.lock = LockProbe(self.known, lambda: self.create_thread("probe:conversation_lock"),
                              self.create_response, self._cancel)

    @property
    def capabilities(self) -> Capabilities:
        # Model, instructions, tools from the settings; a conversation's responses are not listed.
        unseen = not self.locks() and not self.known.supports(Capability.LIST_RESPONSES, default=False)
        return Capabilities(needs_assistant=False, thread_with_first_run=False, messages_with_run=True,
                            lists_runs=False, tool_round_starts_run=True, leaves_late_copies=unseen,
                            stream=self.streamed.available())

    def locks(self) -> bool:
        """Whether a running response locks its conversation (assumed not until known)."""
        return self.lock.locks(probe=False)

    # --- the interface -----------------------------------------------------------------
    def start_run(self, request: RunRequest) -> RunStart:
        """The conversation first (recorded before its first response); then, after an unknown
        outcome, what an earlier create made is adopted (`search`); else, unless it may be running
        unseen (`Unseen` until `repeat_ok`), a response is created (which reconciles once more
        against a race, see create_run). A locked conversation is busy: look again later."""
        if request.thread_id is None:
            return ThreadOpened(self.create_thread(request.conversation_id))
        if request.reconciling:
            found, listed, certain = self.search(request, probe=not request.repeat_ok)
            if found is not None:
                return Started(found, request.thread_id, adopted=True)
            if not certain and not request.repeat_ok:
                return Unseen()
            if listed:  # a complete listing shows none: nothing went through, none can race
                request = dataclasses.replace(request, reconciling=False)
        try:
            return Started(self.create_run(request), request.thread)
        except ThreadBusyError:
            self.known.learn(Capability.CONVERSATION_LOCK, True, "a create answered conversation_locked")
            return Busy(None)

    def search(self, request: RunRequest, *, probe: bool = True) -> tuple[RunState | None, bool, bool]:
        """What an earlier create of this attempt made; whether a complete listing said so; whether
        one not found cannot be running unseen (`probe`: learn now whether the server locks)."""
        if self.listing.available():
            body, complete = self.listing.find(request)
            if body is not None:
                return response_state(body, None), True, True
            if complete:
                return None, True, True
        found = self._items_run(request)
        return found, False, found is not None or self.lock.locks(probe=probe)

    # --- the calls behind start_run ----------------------------------------------------
    def create_thread(self, conversation_id: str) -> str:
        raw = self.api.call("conversations.create", True, lambda: self.client.conversations.with_raw_response.create(
            metadata={"conversation_id": conversation_id[:METADATA_VALUE_CHARS]}))
        return str(json_object(raw)["id"])

    def create_run(self, request: RunRequest) -> RunState:
        items = [user_item(e.content) for e in request.events]
        metadata = {"batch_id": request.batch_id, "attempt": str(request.attempt)}
        if not request.append or request.reconciling:
            # What the conversation holds decides: never the user messages twice.
            block, after, last = self.reads.our_items(request)
            if block is not None and after:
                return items_state(block, after)  # an earlier create completed meanwhile
            if block is not None:
                items = []
            metadata["since"] = last  # what an earlier create adds from now on comes after it
        try:
            created = self.create_response(request.thread, items, request.instructions, metadata, request.stream_to)
        except InvalidRequestError as exc:
            if "no tool output found" not in str(exc).lower():
                raise
        else:
            if request.reconciling and items:
                return self._confirmed(request.thread, metadata["since"], user_input(request), created)
            return created
        if request.reconciling:  # an earlier create of ours may have completed with function calls
            block, after, _ = self.reads.our_items(request)
            if block is not None and after:
                return items_state(block, after)
        # A cancelled batch left function calls unanswered, and the API refuses a new turn
        # until they are: answer them as abandoned (the refused create did nothing).
        pending = pending_calls(self.reads.items_after(request.thread, ""))
        abandoned = [{"type": "function_call_output", "call_id": call.id,
                      "output": "abandoned: the conversation moved on"} for call in pending]
        try:
            return self.create_response(request.thread, abandoned + items, request.instructions, metadata,
                                        request.stream_to)
        except InvalidRequestError as exc:  # the API counts the input items: ours come after those
            if exc.event_index is not None:
                exc.event_index = exc.event_index - len(abandoned) if exc.event_index >= len(abandoned) else None
            raise

    def _confirmed(self, thread_id: str, since: str, expected: InputMatcher, created: RunState) -> RunState:
        """This create went through, so the conversation was free: an earlier create of ours
        that was still running when we looked (`since`: the last item then) may have
        completed just before, and its items are there now. Confirm now, or leave it to the
        next poll (`confirm_run`)."""
        try:
            return self._confirm(thread_id, since, expected, created, [], in_conversation=False)
        except (TransientApiError, PermanentApiError) as exc:
            log.warning("a second response for the same input is not confirmed yet",
                        conversation=thread_id, response_id=created.id, error=str(exc))
            return dataclasses.replace(created, confirmed=False)

    def confirm_run(self, request: RunRequest, run_id: str) -> RunState:
        body, state = self.reads.retrieve_state(run_id)
        output_ids = [str(item.get("id")) for item in body.get("output") or [] if isinstance(item, dict)]
        in_conversation = body.get("status") in ("completed", "incomplete")
        metadata = body.get("metadata") or {}
        if metadata.get("after"):  # a tool round: its input is the outputs of these calls
            since = self.reads.last_output_id(str(metadata["after"]))
            expected = outputs_input(str(metadata.get("calls") or "").split(","))
        else:  # a create: its input is the batch's user messages
            since = str(metadata["since"]) if "since" in metadata else self.reads.marker(request)
            expected = user_input(request)
        return self._confirm(request.thread, since, expected, state, output_ids, in_conversation=in_conversation)

    def _confirm(self, thread_id: str, since: str, expected: InputMatcher, state: RunState, output_ids: list[str],
                 *, in_conversation: bool) -> RunState:
        return responses_confirm.confirm(self.reads, self._cancel, self._delete_item, thread_id, since, expected,
                                         state, output_ids, in_conversation=in_conversation)

    def find_run(self, request: RunRequest) -> RunState | None:
        return self.search(request, probe=False)[0]

    def _items_run(self, request: RunRequest) -> RunState | None:
        """Our user items (after the previous batch's output) and what followed them."""
        block, after, _ = self.reads.our_items(request)
        if block is None or not after:
            return None  # not there, or there without an answer: nothing to follow
        return items_state(block, after)

    def get_run(self, thread_id: str, run_id: str) -> RunState:
        marker = items_marker(run_id)
        if marker is not None:
            after = self.reads.items_after(thread_id, marker)
            state = items_state(marker, after)
            if state.terminal:
                self.reads.outputs.put(run_id, after)  # for the messages and steps published next
            return state
        body, state = self.reads.retrieve_state(run_id)
        if state.status == "requires_action":
            # Were these calls answered already (a submission whose answer was lost, or
            # whose worker died)? Then follow what that submission started.
            after = self.reads.items_after(thread_id, str(body["output"][-1].get("id") or ""))
            outputs = [k for k, item in enumerate(after) if item.get("type") == "function_call_output"]
            if {c.id for c in state.tool_calls} <= {str(after[k].get("call_id")) for k in outputs}:
                return items_state(str(after[outputs[-1]]["id"]), after[outputs[-1] + 1:])
        return state

    def submit_tool_outputs(self, thread_id: str, run_id: str, outputs: list[dict[str, str]],
                            instructions: str | None = None, stream_to: StreamTarget | None = None) -> Submitted:
        items = [{"type": "function_call_output", "call_id": o["tool_call_id"], "output": o["output"]} for o in outputs]
        tag = submission_tag(run_id, [o["tool_call_id"] for o in outputs])
        created = self.create_response(thread_id, items, instructions, tag, stream_to)
        return Submitted(created.id, created.stream_owner)

    def follow_stream(self, thread_id: str, run_id: str, cursor: str | None, target: StreamTarget) -> str | None:
        """Re-attach from the cursor (the events after its sequence number are replayed)."""
        if items_marker(run_id) is not None:
            return None  # known by its items only: no id to re-attach to
        response_id, _, seq = (cursor or "").partition(" ")
        after = f"&starting_after={seq}" if response_id == run_id and seq else ""
        return self.streamed.resume(f"responses/{run_id}?stream=true{after}", target, ResponsesEvents,
                                    _streamed_response, run_id)

    def find_submission(self, thread_id: str, run_id: str, call_ids: list[str], sent_at: float) -> str | Unseen | None:
        """Listed: found by its tag; else a lock (probed now if unknown) would refuse a second one."""
        listed = self.listing.available()
        body, complete = self.listing.find_submission(run_id, call_ids, sent_at) if listed else (None, False)
        if body is not None or complete:
            return str(body["id"]) if body is not None else None
        return None if self.lock.locks(probe=True) else Unseen()

    def cancel_run(self, thread_id: str, run_id: str) -> None:
        if items_marker(run_id) is None:  # else its response id is unknown: wait for it to end
            self._cancel(run_id)

    def _delete_item(self, conversation: str, item_id: str) -> None:
        self.api.call("conversations.items.delete", True, lambda: self.client.conversations.items.with_raw_response
                      .delete(item_id, conversation_id=conversation))

    def _cancel(self, response_id: str) -> str:
        """Cancel a response; its status after."""
        raw = self.api.call("responses.cancel", True, lambda: self.client.responses.with_raw_response.cancel(
            response_id))
        return str(json_object(raw).get("status") or "")

    def run_messages(self, thread_id: str, run_id: str) -> list[dict[str, Any]]:
        return _assistant_messages(self.reads.output(thread_id, run_id))

    def run_steps(self, thread_id: str, run_id: str) -> list[dict[str, Any]]:
        return output_steps(self.reads.output(thread_id, run_id))

    def copy_watch(self, request: RunRequest, run_id: str) -> dict[str, Any] | None:
        return responses_copies.watch(self.reads, request, run_id)

    def remove_late_copies(self, thread_id: str, watch: dict[str, Any]) -> int:
        items = self.reads.items_after(thread_id, str(watch.get("marker") or ""))
        return responses_copies.remove(items, list(watch["texts"]), set(watch.get("kept") or []),
                                       lambda item_id: self._delete_item(thread_id, item_id))

    def close(self) -> None:
        self.api.close()

    # --- plumbing --------------------------------------------------------------------
    def create_response(self, conversation: str, items: list[dict[str, Any]], instructions: str | None,
                        metadata: dict[str, str], stream_to: StreamTarget | None = None) -> RunState:
        """One background response on the conversation (a POST: may be applied when it raises),
        followed by its stream where it can be (`stream_to`)."""
        body: dict[str, Any] = {"model": self.model, "background": True, "store": True,
                                "conversation": conversation, "input": items, "metadata": metadata}
        if instructions or self.instructions:
            body["instructions"] = instructions or self.instructions
        if self.tools:
            body["tools"] = self.tools
        opened = self.streamed.post("responses.create", "responses", body, stream_to, ResponsesEvents,
                                    _streamed_response)
        if opened is not None:
            return streamed(response_state(opened.object, None), opened)
        raw = self.api.call("responses.create", True, lambda: self.client.responses.with_raw_response.create(**body))
        return response_state(json_object(raw), raw.headers)


def _streamed_response(body: dict[str, Any], messages: list[dict[str, Any]] | None) -> RunState:
    """A response's state from its stream; an ended one brings its output's messages."""
    state = response_state(body, None)
    if not state.terminal or not isinstance(body.get("output"), list):
        return state
    return dataclasses.replace(state, messages=_assistant_messages(stamped_output(body)))


def _assistant_messages(output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A response's output messages as the outbound entry has them."""
    return [outbound_message(item) for item in output
            if item.get("type") == "message" and item.get("role", "assistant") == "assistant"]
