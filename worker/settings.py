"""Every setting of the worker and the producers, read once from the environment."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

OPENAI_API_URL = "https://api.openai.com/v1"  # the SDK's default base URL
# A capability of the API server (worker/capabilities.py): learnt (auto), or forced.
CapabilityMode = Literal["auto", "on", "off"]


class Settings(BaseSettings):
    """Typed settings. Names are the environment variables (case-insensitive)."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    # The API
    assistant_backend: Literal["assistants", "responses"] = "assistants"
    openai_api_key: SecretStr = SecretStr("")
    openai_base_url: str | None = None
    assistant_id: str | None = None
    responses_model: str = "gpt-4o"
    responses_instructions: str | None = None
    api_timeout_seconds: float = Field(20.0, gt=0)
    api_max_attempts: int = Field(8, ge=1, description="attempts of one API step before api_error")
    run_retry_limit: int = Field(2, ge=0, description="new runs after rate_limit_exceeded/server_error")
    api_outage_hold_seconds: float = Field(
        900.0, gt=0, description="a batch held by the open API circuit this long: run.failed / api_unavailable")

    # What the API server can do (worker/capabilities.py): auto learns, on/off force
    additional_messages: CapabilityMode = "auto"
    create_thread_and_run: CapabilityMode = "auto"
    list_responses: CapabilityMode = "auto"  # Responses: GET /responses lists them (probed once)
    conversation_lock: CapabilityMode = "auto"  # Responses: a running response locks its conversation
    # Runs followed by their event stream (worker/streams/): auto learns whether the server streams
    streaming: CapabilityMode = "auto"
    stream_max_open: int = Field(2000, ge=1, description="streams open per worker process; beyond it runs are polled")
    stream_safety_poll_seconds: float = Field(30.0, gt=0, description="the poll kept while a run's stream is healthy")
    capability_ttl_seconds: float = Field(6 * 3600.0, gt=0, description="a learnt capability is tried again after this")

    # Assistant creation (`assistant-worker assistant create`)
    assistant_name: str = "Math Tutor"
    assistant_model: str = "gpt-4o"
    assistant_instructions: str = (
        "You are a personal math tutor. Write and run code to answer math questions."
    )

    # Redis and the outbound stream
    redis_url: str = "redis://localhost:6379/0"
    outbound_stream: str = "assistant:outbound"
    outbound_maxlen: int = Field(100_000, ge=1)
    event_dedup_ttl_seconds: int = Field(7 * 24 * 3600, ge=1)
    dead_letter_maxlen: int = Field(100_000, ge=1)
    # The per-conversation delta streams (docs/contract.md, "Deltas")
    deltas: Literal["on", "off"] = "on"
    delta_stream_prefix: str = "assistant:deltas:"
    delta_stream_maxlen: int = Field(1000, ge=1)
    delta_stream_ttl_seconds: int = Field(
        300, ge=1, description="a conversation's delta stream expires this long after its last write")

    # Runs
    worker_tool_modules: str = ""
    tool_timeout_seconds: float = Field(30.0, gt=0)
    tool_output_max_chars: int = Field(32_000, ge=100, le=512_000)
    run_timeout_seconds: float = Field(600.0, gt=0)
    cancel_wait_seconds: float = Field(30.0, gt=0)
    include_run_steps: bool = False
    max_batch_events: int = Field(32, ge=1, le=100)

    # Polling
    poll_initial_delay_seconds: float = Field(0.5, gt=0)
    poll_max_delay_seconds: float = Field(2.0, gt=0)
    poll_min_delay_seconds: float = Field(0.1, gt=0)
    poll_backoff_factor: float = Field(1.5, ge=1)
    poll_jitter: float = Field(0.05, ge=0, lt=1)
    poll_batch_size: int = Field(25, ge=1)
    scheduler_interval_seconds: float = Field(0.25, gt=0, description="longest scheduler sleep")
    worker_idle_poll_ms: int = Field(40, ge=10, description="an idle Dramatiq consumer polls this often")
    lease_seconds: float = Field(45.0, gt=0, le=300,
                                 description="claim/lease expiry: a dead worker's work comes back after this")
    worker_shutdown_seconds: float = Field(25.0, gt=0,
                                           description="SIGTERM: finish in-flight messages for at most this long")

    # Processes, logging, metrics
    worker_queue: str = "assistant"
    worker_processes: int = Field(1, ge=1)
    worker_threads: int = Field(8, ge=1)
    metrics_port: int = Field(9191, ge=0, le=65535)
    log_format: Literal["json", "console"] = "json"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_message_content: bool = False
    health_busy_limit_seconds: float = Field(
        300.0, gt=0, description="/healthz fails when a worker thread is on one step longer")
    ready_check_api: bool = False

    @field_validator("openai_base_url")
    @classmethod
    def _an_http_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"must be an http(s) URL like {OPENAI_API_URL}, got {value!r}")
        return value

    @field_validator("redis_url")
    @classmethod
    def _a_redis_url(cls, value: str) -> str:
        # Checked here, so that a typo is one line at start, not an error deep in redis-py.
        if urlsplit(value).scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"must be a redis://, rediss:// or unix:// URL like redis://localhost:6379/0, "
                             f"got {value!r}")
        return value

    @model_validator(mode="after")
    def _delays_ordered(self) -> Settings:
        if not self.poll_min_delay_seconds <= self.poll_initial_delay_seconds <= self.poll_max_delay_seconds:
            raise ValueError("POLL_MIN_DELAY_SECONDS <= POLL_INITIAL_DELAY_SECONDS <= "
                             "POLL_MAX_DELAY_SECONDS must hold")
        return self

    @property
    def api_base_url(self) -> str:
        """OPENAI_BASE_URL, or OpenAI's own API (the SDK's default) when it is not set."""
        return (self.openai_base_url or OPENAI_API_URL).rstrip("/")

    @property
    def tool_modules(self) -> list[str]:
        return [m.strip() for m in self.worker_tool_modules.split(",") if m.strip()]


class SettingsError(SystemExit):
    """A bad setting: the process stops with one clear line."""


def load_settings(**overrides: Any) -> Settings:
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(p) for p in first["loc"]).upper() or "settings"
        reason = first["msg"].removeprefix("Value error, ")  # pydantic prefixes our validators' reasons
        raise SettingsError(f"invalid setting {name}: {reason}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; tests call get_settings.cache_clear())."""
    return load_settings()
