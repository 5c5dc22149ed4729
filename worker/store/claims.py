"""Claims on one tool round, so that a duplicated dispatch neither runs the tools again nor
submits their outputs twice; and the outputs of a submission that failed, kept to submit
again without running the tools again."""

from __future__ import annotations

import json

import redis

from worker import keys

Outputs = list[dict[str, str]]
RUNNING = b"1"  # the claim's value while the tools run


class ToolClaims:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def claim(self, conversation_id: str, key: str, ttl: float) -> bool:
        """Claim the round `key` (run and call ids) for `ttl` seconds; False when claimed."""
        return bool(self.redis.set(keys.tools_claim(conversation_id, key), RUNNING, nx=True,
                                   px=int(ttl * 1000)))

    def keep_outputs(self, conversation_id: str, key: str, outputs: Outputs, ttl: float) -> None:
        """Keep the outputs whose submission failed, for the next poll to submit."""
        self.redis.set(keys.tools_claim(conversation_id, key), json.dumps(outputs), px=int(ttl * 1000))

    def kept_outputs(self, conversation_id: str, key: str) -> Outputs | None:
        value = self.redis.get(keys.tools_claim(conversation_id, key))
        if not value or value == RUNNING:
            return None  # no claim, or the tools are still running
        outputs = json.loads(value)
        return outputs if isinstance(outputs, list) else None

    def forget(self, conversation_id: str, key: str) -> None:
        self.redis.delete(keys.tools_claim(conversation_id, key))
