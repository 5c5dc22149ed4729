"""Settings of the emulator: one dataclass, read from the environment or changed at runtime."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

FLAVOURS = ("strict", "loose")
_RATE_FIELDS = ("fault_429", "fault_500", "fault_lost", "fail_rate", "expire_rate", "stream_cut")
STREAM_REFUSALS = ("", "error", "json", "resume")

# environment variable -> config field, for the CLI's fallbacks
ENV_FIELDS = {
    "EMULATOR_RUN_SECONDS": "run_seconds",
    "EMULATOR_JITTER": "jitter",
    "EMULATOR_POLL_HINT": "poll_hint",
    "EMULATOR_FLAVOUR": "flavour",
    "EMULATOR_FAULT_429": "fault_429",
    "EMULATOR_FAULT_500": "fault_500",
    "EMULATOR_FAULT_LOST": "fault_lost",
    "EMULATOR_FAIL_RATE": "fail_rate",
    "EMULATOR_EXPIRE_RATE": "expire_rate",
    "EMULATOR_SEED": "seed",
    "EMULATOR_REJECTED_KEYS": "rejected_keys",
    "EMULATOR_MULTI_MESSAGE_500": "multi_message_500",
    "EMULATOR_OUTAGE_AFTER_SECONDS": "outage_after_seconds",
    "EMULATOR_OUTAGE_SECONDS": "outage_seconds",
    "EMULATOR_CONVERSATION_LOCK": "conversation_lock",
    "EMULATOR_LIST_RESPONSES": "list_responses",
    "EMULATOR_STREAM_CHUNKS": "stream_chunks",
    "EMULATOR_STREAM_CUT": "stream_cut",
    "EMULATOR_STREAM_REFUSE": "stream_refuse",
}
# The models GET /v1/models/{model} knows (any model may still be named in a create).
KNOWN_MODELS = frozenset({"emulator", "gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-5", "gpt-5-mini"})


class ConfigError(ValueError):
    """A config field is unknown or has a value of the wrong kind."""


@dataclass(frozen=True)
class EmulatorConfig:
    """Everything that shapes the emulator's behaviour; see README.md for each field."""

    run_seconds: float = 1.0  # how long a run works before its outcome
    jitter: float = 0.0  # fraction: duration is run_seconds * uniform(1 - jitter, 1 + jitter)
    after_tools_seconds: float | None = None  # phase after submit_tool_outputs; None = the run's duration
    action_ttl_seconds: float = 600.0  # requires_action -> expired after this long
    expire_rule_seconds: float = 1.0  # the `expire` rule's short deadline
    cancel_seconds: float = 0.1  # cancelling -> cancelled after this long
    poll_hint: bool = True  # send openai-poll-after-ms while a run is working
    poll_hint_ms: int | None = None  # constant hint; None = min(time left, 1000 ms)
    flavour: str = "strict"
    fault_429: float = 0.0
    fault_500: float = 0.0
    fault_lost: float = 0.0
    fault_retry_after_ms: int = 100
    fault_operations: frozenset[str] | None = None  # None = every /v1 operation
    fail_rate: float = 0.0
    expire_rate: float = 0.0
    seed: int | None = None
    rejected_keys: frozenset[str] = frozenset()  # API keys answered 401 invalid_api_key (a wrong key)
    models: frozenset[str] = KNOWN_MODELS  # what GET /v1/models/{model} finds
    multi_message_500: bool = False  # HTTP 500 to a run created with more than one message (a server's quirk)
    outage_after_seconds: float = 0.0  # the outage opens this long after the config (or its change) applies
    outage_seconds: float = 0.0  # and lasts this long, every /v1 connection reset unanswered; 0 = none
    max_content_chars: int | None = None  # longest message text; None = OpenAI's (256,000; responses 10,485,760)
    # Responses servers unlike OpenAI's: no lock on a conversation while a response runs
    # (responses run side by side, each adding its items when it completes), and a list of
    # responses (GET /v1/responses, not in OpenAI's spec; off: 404 as an unknown route).
    conversation_lock: bool = True
    list_responses: bool = False
    # Streams (`stream: true`): text deltas per message at most, spread over the working phase; the
    # probability that a stream is cut mid-way; a server that refuses streams ("error"), ignores
    # `stream` ("json") or refuses to resume one with `starting_after` ("resume").
    stream_chunks: int = 100
    stream_cut: float = 0.0
    stream_refuse: str = ""

    def __post_init__(self) -> None:
        if self.flavour not in FLAVOURS:
            raise ConfigError(f"flavour must be one of {FLAVOURS}, got {self.flavour!r}")
        for name in _RATE_FIELDS:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must be between 0 and 1, got {value!r}")
        if self.fault_429 + self.fault_500 + self.fault_lost > 1.0:
            raise ConfigError("fault_429 + fault_500 + fault_lost must not exceed 1")
        if self.stream_refuse not in STREAM_REFUSALS:
            raise ConfigError(f"stream_refuse must be one of {STREAM_REFUSALS}, got {self.stream_refuse!r}")
        if self.stream_chunks < 1:
            raise ConfigError(f"stream_chunks must be >= 1, got {self.stream_chunks!r}")
        if not 0.0 <= self.jitter < 1.0:
            raise ConfigError(f"jitter must be in [0, 1), got {self.jitter!r}")
        for name in ("run_seconds", "outage_after_seconds", "outage_seconds"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)!r}")

    def replace(self, **changes: Any) -> EmulatorConfig:
        """A copy with `changes` applied; values are coerced from JSON/strings."""
        known = {f.name: f for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - set(known))
        if unknown:
            raise ConfigError(f"unknown config field(s): {', '.join(unknown)}")
        coerced = {name: _coerce(name, known[name].type, value) for name, value in changes.items()}
        return dataclasses.replace(self, **coerced)

    def as_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        ops = data["fault_operations"]
        data["fault_operations"] = sorted(ops) if ops is not None else None
        data["rejected_keys"] = sorted(data["rejected_keys"])
        data["models"] = sorted(data["models"])
        return data


def from_env(environ: Mapping[str, str] | None = None, base: EmulatorConfig | None = None) -> EmulatorConfig:
    """The config with every EMULATOR_* variable that is set applied over `base`."""
    env = os.environ if environ is None else environ
    changes = {name: env[var] for var, name in ENV_FIELDS.items() if env.get(var, "") != ""}
    return (base or EmulatorConfig()).replace(**changes)


def _coerce(name: str, annotation: Any, value: Any) -> Any:
    """`value` (from JSON, the environment or Python) as the field's type."""
    kind = str(annotation)  # the annotation's text, e.g. "float | None"
    if value is None and "None" in kind:
        return None
    convert = next((fn for prefix, fn in _CONVERTERS if kind.startswith(prefix)), None)
    if convert is None:
        return value
    try:
        return convert(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name}: invalid value {value!r}") from exc


def _as_set(value: Any) -> frozenset[str]:
    items = value.split(",") if isinstance(value, str) else value
    return frozenset(str(item).strip() for item in items if str(item).strip())


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(value)


_CONVERTERS: tuple[tuple[str, Callable[[Any], Any]], ...] = (
    ("bool", _as_bool), ("float", float), ("int", int), ("frozenset", _as_set), ("str", str),
)
