"""How the two flavours differ on the wire: ids, timestamps, nulls, status codes, content shape, cancels."""

from __future__ import annotations

import random
import string
import uuid
from dataclasses import dataclass

_ALPHABET = string.ascii_letters + string.digits
_id_rng = random.Random()  # never seeded: ids stay unique across emulator restarts


@dataclass(frozen=True)
class Flavour:
    name: str
    prefixed_ids: bool  # asst_/thread_/msg_/run_/step_/call_/conv_/resp_/fc_/fco_ + 24 alphanumerics, else uuid4 hex
    float_timestamps: bool
    omit_nulls: bool  # drop None fields and empty metadata
    active_run_status: int  # HTTP status of "thread has an active run"
    user_content_as_string: bool  # user messages' content as one string instead of parts
    free_error_codes: bool  # last_error.code may be any string (strict: the spec's enum)
    thread_and_run: bool = True  # createThreadAndRun is offered (loose: 404, as an unknown route)
    # Responses / Conversations APIs
    cancel_in_progress: bool = True  # cancelResponse accepts an in_progress response (loose: only queued)
    echo_conversation: bool = True  # a response carries `conversation: {"id"}` (loose: null)
    conversation_object_param: bool = True  # createResponse takes `conversation` as {"id"} too (loose: id only)

    def new_id(self, prefix: str) -> str:
        if not self.prefixed_ids:
            return uuid.uuid4().hex
        return prefix + "_" + "".join(_id_rng.choices(_ALPHABET, k=24))

    def ts(self, value: float | None) -> float | int | None:
        if value is None:
            return None
        return round(value, 6) if self.float_timestamps else int(value)

    def deadline(self, value: float | None) -> float | int | None:
        """Like ts(), but rounds up, so a client never sees a deadline earlier than the real one."""
        if value is None or self.float_timestamps:
            return self.ts(value)
        return -int(-value // 1)


STRICT = Flavour("strict", True, False, False, 400, False, False)
LOOSE = Flavour("loose", False, True, True, 409, True, True, thread_and_run=False, cancel_in_progress=False,
                echo_conversation=False, conversation_object_param=False)
FLAVOURS = {"strict": STRICT, "loose": LOOSE}
