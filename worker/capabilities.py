"""What the fleet has learnt about the API server it talks to, kept in Redis.

Compatible servers differ from OpenAI's in small ways: one has no createThreadAndRun, one
refuses a run created with several messages, one lists responses. The backends learn it
from the answers they get (`learn`) and shape their requests by it (`supports`). What one
worker learnt is shared by the fleet and survives restarts: one Redis key per API base URL
and capability, expiring after CAPABILITY_TTL_SECONDS, so that a server that was upgraded
is tried again (re-probed) by itself. Each capability has a setting (`auto|on|off`): `on`
and `off` force it and nothing is learnt; `auto` learns.

Reads are cached in the process for a few seconds: a step does not read Redis per call.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import redis
import structlog

from worker import keys
from worker.settings import CapabilityMode, Settings

log = structlog.get_logger(__name__)

Mode = CapabilityMode
CACHE_SECONDS = 5.0


class Capability(StrEnum):
    """The capabilities a backend learns; each value is its setting's name, lower-cased."""

    MULTI_MESSAGE_RUNS = "additional_messages"  # a run created with several user messages
    THREAD_AND_RUN = "create_thread_and_run"  # a thread and its first run in one call
    LIST_RESPONSES = "list_responses"  # GET /responses lists responses (not in OpenAI's spec)
    CONVERSATION_LOCK = "conversation_lock"  # a running response locks its conversation
    STREAM = "streaming"  # runs (responses) are followed by their event stream


# What a capability is taken to be until learnt: the richer request shape is tried first,
# but what the worker cannot see fail (a lock, a list) is not counted on before a probe.
ASSUMED = {Capability.LIST_RESPONSES: False, Capability.CONVERSATION_LOCK: False}


@dataclass(frozen=True)
class Learnt:
    """One capability as the fleet knows it (`value` None: not learnt, assumed `default`)."""

    capability: Capability
    mode: Mode
    value: bool | None
    reason: str = ""
    at: float | None = None

    def describe(self, default: bool) -> str:
        if self.mode != "auto":
            return f"{self.capability.value}={self.mode} (set)"
        if self.value is None:
            return f"{self.capability.value}={'yes' if default else 'no'} (assumed)"
        return f"{self.capability.value}={'yes' if self.value else 'no'} (learnt: {self.reason})"


class CapabilityStore:
    """The capabilities of the API at `base_url`: settings first, then what was learnt."""

    def __init__(self, client: redis.Redis | None, base_url: str, modes: dict[Capability, Mode],
                 ttl_seconds: float, clock: Callable[[], float] = time.time) -> None:
        self.client = client  # None: learnt in this process only (tests, tools)
        self.base_url = base_url
        self.modes = modes
        self.ttl_seconds = ttl_seconds
        self.clock = clock
        self._cache: dict[Capability, tuple[float, Learnt]] = {}
        self._local: dict[Capability, Learnt] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, client: redis.Redis | None) -> CapabilityStore:
        modes: dict[Capability, Mode] = {c: getattr(settings, c.value) for c in Capability}
        return cls(client, settings.api_base_url, modes, settings.capability_ttl_seconds)

    def supports(self, capability: Capability, default: bool = True) -> bool:
        """Whether requests may use `capability` now: forced, learnt, or assumed `default`."""
        known = self.get(capability)
        if known.mode != "auto":
            return known.mode == "on"
        return default if known.value is None else known.value

    def get(self, capability: Capability) -> Learnt:
        mode = self.modes.get(capability, "auto")
        if mode != "auto":
            return Learnt(capability, mode, mode == "on")
        now = self.clock()
        cached = self._cache.get(capability)
        if cached is not None and now - cached[0] < CACHE_SECONDS:
            return cached[1]
        learnt = self._read(capability)
        self._cache[capability] = (now, learnt)
        return learnt

    def learn(self, capability: Capability, value: bool, reason: str) -> None:
        """Record what an answer showed (ignored when the setting forces the capability)."""
        if self.modes.get(capability, "auto") != "auto":
            return
        learnt = Learnt(capability, "auto", value, reason, self.clock())
        before = self.get(capability)
        with self._lock:
            self._cache[capability] = (self.clock(), learnt)
            self._local[capability] = learnt
        if self.client is not None:
            document = json.dumps({"value": value, "reason": reason, "at": learnt.at})
            try:
                self.client.set(self._key(capability), document, px=int(self.ttl_seconds * 1000))
            except redis.RedisError as exc:  # still known in this process
                log.warning("capability not shared", capability=capability.value, error=str(exc))
        if before.value != value:
            log.warning("api capability learnt", capability=capability.value, value=value,
                        reason=reason, base_url=self.base_url, ttl_seconds=self.ttl_seconds)

    def listing(self) -> list[str]:
        """One line per capability, for /readyz."""
        return [self.get(c).describe(ASSUMED.get(c, True)) for c in Capability]

    def _read(self, capability: Capability) -> Learnt:
        if self.client is None:
            return self._local.get(capability) or Learnt(capability, "auto", None)
        try:
            raw = self.client.get(self._key(capability))
        except redis.RedisError:
            return self._local.get(capability) or Learnt(capability, "auto", None)
        if raw is None:
            return Learnt(capability, "auto", None)
        try:
            document = json.loads(raw)
            return Learnt(capability, "auto", bool(document["value"]), str(document.get("reason") or ""),
                          float(document.get("at") or 0.0))
        except (ValueError, KeyError, TypeError):
            return Learnt(capability, "auto", None)  # unreadable: learnt again

    def _key(self, capability: Capability) -> str:
        return keys.capability(self.base_url, capability.value)
