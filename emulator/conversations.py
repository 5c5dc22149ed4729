"""The Responses and Conversations APIs: conversations, their items, and responses that progress over time.

A response plays out like a run (see lifecycle.py): nothing moves in the background, `advance()`
applies every transition whose time has come, stamped with the time it was due. Timeline of a
response of length D created at S: queued until S + min(0.1 D, 0.2 s), in_progress until S + D,
then its outcome. There is no requires_action: a response whose plan calls tools completes with
`function_call` output items, and the client answers them in a NEW response with
`function_call_output` input items. While a response is queued or in_progress its conversation is
locked (createResponse answers `conversation_locked`), unless `conversation_lock` is off: then
responses run side by side, each adding its items when it completes. `list_responses` offers
`GET /responses` (not in OpenAI's spec).

Every method expects `store.lock` to be held, like the Store's.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from . import validate
from .errors import bad_request, not_found
from .lifecycle import reserve, schedule
from .model import CITATION_FILE_ID, Plan, count_tokens, failure_plan, tool_results_reply
from .objects import WORKING_STATUSES, Conversation, Item, ModelResponse
from .pagination import paginate

if TYPE_CHECKING:
    from .store import Store

CITATION_FILE_NAME = "source.txt"


class ConversationStore:
    """Conversations, items and responses; the Store owns one (a new one on every reset)."""

    def __init__(self, host: Store) -> None:
        self.host = host
        self.conversations: dict[str, Conversation] = {}
        self.items: dict[str, Item] = {}
        self.responses: dict[str, ModelResponse] = {}
        self.active: dict[str, ModelResponse] = {}  # queued or in_progress, by id
        self.listed: list[ModelResponse] = []  # the stored ones, in creation order (listResponses)
        self.listed_at: dict[str, int] = {}

    # -- conversations -----------------------------------------------------------------------

    def create_conversation(self, body: Mapping[str, Any], now: float) -> Conversation:
        validate.known_fields(body, validate.CONVERSATION_FIELDS, self._strict)
        inputs = self._item_inputs(body.get("items"), "items", required=False)
        conversation = Conversation(self.host.new_id("conv"), now, validate.metadata(body.get("metadata")))
        self.conversations[conversation.id] = conversation
        self._add_items(conversation, inputs, now)
        return conversation

    def get_conversation(self, conversation_id: str, now: float, param: str | None = None) -> Conversation:
        conversation = self.conversations.get(conversation_id)
        if conversation is None:
            raise not_found("conversation", conversation_id, param)
        self._settle_conversation(conversation, now)
        return conversation

    def delete_conversation(self, conversation_id: str, now: float) -> None:
        """Gone: later calls naming it answer 404; a response running on it adds nothing."""
        conversation = self.get_conversation(conversation_id, now)
        for item in conversation.items:
            self.items.pop(item.id, None)
        del self.conversations[conversation.id]

    def list_items(self, conversation_id: str, query: Mapping[str, str], now: float) -> tuple[list[Item], bool]:
        conversation = self.get_conversation(conversation_id, now)

        def index_of(item_id: str) -> int | None:
            found = self.items.get(item_id)
            return found.seq if found is not None and found.conversation_id == conversation.id else None

        return paginate(conversation.items, validate.list_query(query), index_of)

    def create_items(self, conversation_id: str, body: Mapping[str, Any], now: float) -> list[Item]:
        validate.known_fields(body, validate.CONVERSATION_ITEMS_FIELDS, self._strict)
        inputs = self._item_inputs(body.get("items"), "items", required=True)
        conversation = self.get_conversation(conversation_id, now)
        self._check_unlocked(conversation)
        return self._add_items(conversation, inputs, now)

    def get_item(self, conversation_id: str, item_id: str, now: float) -> Item:
        conversation = self.get_conversation(conversation_id, now)
        item = self.items.get(item_id)
        if item is None or item.conversation_id != conversation.id:
            raise not_found("item", item_id, "item_id")
        return item

    def delete_item(self, conversation_id: str, item_id: str, now: float) -> Conversation:
        """Remove an item; a function call whose output is deleted is open again."""
        item = self.get_item(conversation_id, item_id, now)
        conversation = self.conversations[conversation_id]
        del conversation.items[item.seq]
        for seq in range(item.seq, len(conversation.items)):
            conversation.items[seq].seq = seq
        del self.items[item.id]
        if item.type == "function_call" and item.call_id is not None:
            conversation.calls.pop(item.call_id, None)
            conversation.open_calls.pop(item.call_id, None)
        elif item.type == "function_call_output" and item.call_id in conversation.calls:
            answered = any(i.type == "function_call_output" and i.call_id == item.call_id
                           for i in conversation.items)
            if not answered:
                conversation.open_calls[item.call_id] = conversation.calls[item.call_id]
        return conversation

    # -- responses ---------------------------------------------------------------------------

    def create_response(self, body: Mapping[str, Any], now: float) -> ModelResponse:
        host, flavour = self.host, self.host.flavour
        validate.known_fields(body, validate.RESPONSE_FIELDS, self._strict)
        stream = bool(validate.optional(body, "stream", bool, False))
        model = validate.require(body, "model", str)
        background = bool(validate.optional(body, "background", bool, False))
        store = bool(validate.optional(body, "store", bool, True))
        if background and not store:
            raise bad_request("Background responses must be stored: leave 'store' unset or true.", param="store")
        inputs = validate.response_input(body.get("input"), self._strict)
        validate.input_lengths(inputs, host.config.max_content_chars or validate.RESPONSES_MAX_CHARS)
        instructions = validate.optional(body, "instructions", str)
        tools = validate.response_tools(body.get("tools"))
        metadata = validate.metadata(body.get("metadata"))
        conversation_id = validate.conversation_param(body.get("conversation"), flavour.conversation_object_param)
        previous_id = validate.optional(body, "previous_response_id", str)
        if conversation_id is not None and previous_id is not None:
            raise bad_request("Mutually exclusive parameters: Ensure you are only providing one of: "
                              "'previous_response_id' or 'conversation'.", param="conversation",
                              code="mutually_exclusive_parameters")
        previous = None
        if previous_id is not None:
            previous = self.responses.get(previous_id)
            if previous is None or not previous.store:
                raise bad_request(f"Previous response with id '{previous_id}' not found.",
                                  param="previous_response_id", code="previous_response_not_found")
        conversation = None
        if conversation_id is not None:
            conversation = self.get_conversation(conversation_id, now, "conversation")
            self._check_unlocked(conversation)
        tool_results = self._check_tool_outputs(inputs, conversation, previous)

        texts = [item.text for item in inputs if item.type == "message" and item.role == "user"]
        plan = self._response_plan(host._plan(texts, instructions or ""), tool_results)
        after_tools = any(item.type == "function_call_output" for item in inputs)
        duration = plan.duration if plan.duration is not None else host._duration()
        if after_tools and host.config.after_tools_seconds is not None:
            duration = host.config.after_tools_seconds
        response = ModelResponse(
            host.new_id("resp"), conversation, now, model, instructions, tools, plan, duration, now, now, now,
            background=background, store=store, settings=validate.response_settings(body), metadata=metadata,
            previous_response_id=previous_id, tool_results=tool_results, after_tools=after_tools, stream=stream,
        )
        schedule(response, now, duration)  # type: ignore[arg-type]  # same phase fields as a run
        # As OpenAI documents it: input and output items are added to the conversation once
        # the response completes (completed or incomplete), none when it fails or is cancelled.
        response.input_items = self._add_items(None, inputs, now)
        if conversation is not None:
            conversation.working.append(response)
        self.responses[response.id] = response
        if store:
            self.listed_at[response.id] = len(self.listed)
            self.listed.append(response)
        self.active[response.id] = response
        return response

    def get_response(self, response_id: str, now: float, poll: bool = False) -> ModelResponse:
        response = self.responses.get(response_id)
        if response is None or not response.store:
            raise not_found("response", response_id, "response_id")
        self.settle(response, now)
        if poll:
            response.polls += 1
            response.last_polled_at = now
        return response

    def list_responses(self, query: Mapping[str, str], now: float) -> tuple[list[ModelResponse], bool]:
        """A page of the stored responses (newest first by default), as they are now."""
        page, more = paginate(self.listed, validate.list_query(query), self.listed_at.get)
        for response in page:
            self.settle(response, now)
        return page, more

    def cancel_response(self, response_id: str, now: float) -> ModelResponse:
        response = self.get_response(response_id, now)
        if response.status == "cancelled":
            return response  # cancelling twice is idempotent, as OpenAI documents
        if not response.background:
            raise bad_request("Cannot cancel a synchronous response.", param="response_id")
        if response.status not in WORKING_STATUSES or (
                response.status == "in_progress" and not self.host.flavour.cancel_in_progress):
            raise bad_request(f"Cannot cancel response with status '{response.status}'.", param="response_id")
        response.usage = _usage(response.plan.prompt_tokens + _tool_tokens(response), 0)
        self._finish(response, "cancelled", now)
        return response

    # -- time --------------------------------------------------------------------------------

    def settle(self, response: ModelResponse, now: float) -> None:
        """Apply every transition of `response` due at or before `now`."""
        if response.status not in WORKING_STATUSES:
            return
        if now < response.due_at:
            if now >= response.queued_until:
                _start(response)
            return
        self._reach_outcome(response, response.due_at)

    def settle_all(self, now: float) -> None:
        """Bring every working response up to date (admin views)."""
        for response in list(self.active.values()):
            self.settle(response, now)

    def counts(self) -> dict[str, Any]:
        by_status = Counter(response.status for response in self.responses.values())
        return {"total": len(self.responses), "by_status": dict(by_status)}

    # -- helpers -----------------------------------------------------------------------------

    @property
    def _strict(self) -> bool:
        return self.host._strict

    def _settle_conversation(self, conversation: Conversation, now: float) -> None:
        for response in sorted(conversation.working, key=lambda r: r.due_at):  # items in completion order
            self.settle(response, now)

    def _check_unlocked(self, conversation: Conversation) -> None:
        if conversation.working and self.host.config.conversation_lock:
            raise bad_request(f"Another response is in progress for conversation {conversation.id}.",
                              param="conversation", code="conversation_locked")

    def _item_inputs(self, value: Any, param: str, *, required: bool) -> list[validate.InputItem]:
        if value is None and not required:
            return []
        if value is None:
            raise bad_request(f"Missing required parameter: '{param}'.", param=param,
                              code="missing_required_parameter")
        validate.expect(value, list, param)
        if len(value) > validate.MAX_CONVERSATION_ITEMS:
            raise bad_request(f"Invalid '{param}': at most {validate.MAX_CONVERSATION_ITEMS} items at a time.",
                              param=param)
        return validate.response_input(value, self._strict, param)

    def _check_tool_outputs(self, inputs: list[validate.InputItem], conversation: Conversation | None,
                            previous: ModelResponse | None) -> list[tuple[str, str]]:
        """The (function name, output) of each function_call_output; 400 unless every call is answered."""
        known: dict[str, str | None] = {}
        if conversation is not None:
            known.update((call_id, item.name) for call_id, item in conversation.calls.items())
        if previous is not None:
            known.update((item.call_id, item.name) for item in (*previous.input_items, *previous.output)
                         if item.type == "function_call" and item.call_id is not None)
        known.update((item.call_id, item.name) for item in inputs
                     if item.type == "function_call" and item.call_id is not None)
        results, answered = [], set()
        for item in inputs:
            if item.type != "function_call_output" or item.call_id is None:
                continue
            if item.call_id not in known:
                raise bad_request(f"No tool call found for function call output with call_id {item.call_id}.",
                                  param="input")
            answered.add(item.call_id)
            results.append((known[item.call_id] or item.call_id, item.output_text))
        if conversation is not None:
            for call_id in conversation.open_calls:
                if call_id not in answered:
                    raise bad_request(f"No tool output found for function call {call_id}.", param="input")
        return results

    def _response_plan(self, plan: Plan, tool_results: list[tuple[str, str]]) -> Plan:
        """The model's plan as a response plays it: tool results answered, no expired status."""
        spec_codes = not self.host.flavour.free_error_codes
        if plan.outcome == "expired":  # `expire:now` / expire_rate: a response cannot expire, it fails
            return failure_plan(plan, "server_error", spec_error_codes=spec_codes)
        if tool_results and plan.outcome == "completed":
            return dataclasses.replace(plan, replies=(tool_results_reply(plan.prefix, tool_results),),
                                       hosted_calls=())
        return plan

    def _add_items(self, conversation: Conversation | None, inputs: Iterable[validate.InputItem],
                   now: float) -> list[Item]:
        added = []
        for spec in inputs:
            if spec.type == "message":
                item = Item(self.host.new_id("msg"), "message", now, role=spec.role, content=spec.content,
                            text=spec.text)
            elif spec.type == "function_call":
                item = Item(self.host.new_id("fc"), "function_call", now, call_id=spec.call_id, name=spec.name,
                            arguments=spec.arguments)
            else:
                item = Item(self.host.new_id("fco"), "function_call_output", now, call_id=spec.call_id,
                            output=spec.output, text=spec.output_text)
            added.append(self._store_item(conversation, item))
        return added

    def _store_item(self, conversation: Conversation | None, item: Item) -> Item:
        if conversation is None or self.conversations.get(conversation.id) is not conversation:
            return item  # none, or deleted meanwhile
        item.conversation_id = conversation.id
        item.seq = len(conversation.items)
        conversation.items.append(item)
        self.items[item.id] = item
        if item.type == "function_call" and item.call_id is not None:
            conversation.calls[item.call_id] = item
            conversation.open_calls[item.call_id] = item
        elif item.type == "function_call_output" and item.call_id is not None:
            conversation.open_calls.pop(item.call_id, None)
        return item

    def _reach_outcome(self, response: ModelResponse, at: float) -> None:
        if response.started_at is None:
            response.started_at = response.queued_until
        plan = response.plan
        response.output = self.output_items(response, at)
        if plan.outcome in ("completed", "requires_action"):  # tools: a completed response of function calls
            response.completed_at = at
            status = "completed"
        elif plan.outcome == "incomplete":
            response.incomplete_reason = "max_output_tokens"
            status = "incomplete"
        else:  # failed
            response.error = {"code": plan.error_code or "server_error", "message": plan.error_message or "Failed."}
            status = "failed"
        if status in ("completed", "incomplete"):
            for item in (*response.input_items, *response.output):
                self._store_item(response.conversation, item)
        output_tokens = sum(count_tokens(item.text) for item in response.output if item.type == "message")
        output_tokens += sum(count_tokens(item.arguments or "") for item in response.output)
        response.usage = _usage(response.plan.prompt_tokens + _tool_tokens(response), output_tokens)
        self._finish(response, status, at)

    def output_items(self, response: ModelResponse, at: float) -> list[Item]:
        """The output items the response ends with (ids reserved once: a stream shows them before the end)."""
        plan, host = response.plan, self.host
        if plan.outcome in ("completed", "incomplete"):
            status = "completed" if plan.outcome == "completed" else "incomplete"
            ids = reserve(host, response, "message", "msg", len(plan.replies))
            return [_output_message(item_id, parts, at, status) for item_id, parts in zip(ids, plan.replies,
                                                                                           strict=True)]
        if plan.outcome == "requires_action":
            count = len(plan.function_calls)
            pairs = zip(reserve(host, response, "fc", "fc", count), reserve(host, response, "call", "call", count),
                        plan.function_calls, strict=True)
            return [Item(item_id, "function_call", at, call_id=call_id, name=call.name, arguments=call.arguments)
                    for item_id, call_id, call in pairs]
        return []

    def abandon(self, response: ModelResponse, now: float) -> None:
        """A synchronous streamed response whose client went away is cancelled, as OpenAI does."""
        self.settle(response, now)
        if response.status in WORKING_STATUSES:
            response.usage = _usage(response.plan.prompt_tokens + _tool_tokens(response), 0)
            self._finish(response, "cancelled", now)

    def _finish(self, response: ModelResponse, status: str, at: float) -> None:
        response.status = status
        response.finished_at = at
        response.history.append((status, at))
        self.active.pop(response.id, None)
        conversation = response.conversation
        if conversation is not None and response in conversation.working:
            conversation.working.remove(response)


def time_left(response: ModelResponse, now: float) -> float | None:
    """Seconds until a working response's outcome, else None."""
    if response.status in WORKING_STATUSES:
        return max(0.0, response.due_at - now)
    return None


def _start(response: ModelResponse) -> None:
    response.status = "in_progress"
    if response.started_at is None:
        response.started_at = response.queued_until


def _output_message(item_id: str, parts: Iterable[dict[str, Any]], at: float, status: str = "completed") -> Item:
    """An assistant message item from the model's Assistants-shape parts (text only: no images in output)."""
    content, texts = [], []
    for part in parts:
        if part["type"] != "text":
            continue
        text = part["text"]
        annotations = [_annotation(a) for a in text["annotations"]]
        content.append({"type": "output_text", "text": text["value"], "annotations": annotations, "logprobs": []})
        texts.append(text["value"])
    return Item(item_id, "message", at, role="assistant", content=content, text="\n".join(texts), status=status)


def _annotation(annotation: dict[str, Any]) -> dict[str, Any]:
    if annotation.get("type") == "file_citation":
        file_id = annotation.get("file_citation", {}).get("file_id", CITATION_FILE_ID)
        return {"type": "file_citation", "file_id": file_id, "filename": CITATION_FILE_NAME,
                "index": annotation.get("end_index", 0)}
    return dict(annotation)


def _tool_tokens(response: ModelResponse) -> int:
    return sum(count_tokens(output) for _, output in response.tool_results)


def _usage(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }
