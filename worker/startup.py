"""What can be checked before the worker takes work: one probe of the API at start.

A definite answer that no retry can change (the key refused, the assistant or model
unknown, a base URL that is not the API) stops `assistant-worker run` with one line naming
the setting (exit 78), so that a bad rollout halts while the old pods keep serving. An
answer that may change (the network, a 5xx, a 429) only means "not ready yet": the worker
starts, `/readyz` says why, and the probe is repeated until it passes; never a crash loop.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from worker.settings import Settings

PROBE_TIMEOUT_SECONDS = 5.0
REPROBE_SECONDS = 10.0  # while not passed, /readyz probes again at most this often


@dataclass(frozen=True)
class Probe:
    """The probe's answer: `fatal` names a setting to fix (exit 78), `problem` says why the
    worker is not ready yet (it may pass later); both None: the API answers as it should."""

    fatal: str | None = None
    problem: str | None = None


def probe_target(settings: Settings) -> tuple[str, str, str]:
    """The path to ask for, the setting it checks, and that setting's value."""
    if settings.assistant_backend == "responses":
        model = settings.responses_model
        return f"models/{urllib.parse.quote(model, safe='')}", "RESPONSES_MODEL", model
    if settings.assistant_id:
        return f"assistants/{urllib.parse.quote(settings.assistant_id, safe='')}", "ASSISTANT_ID", settings.assistant_id
    return "models", "", ""  # no assistant to check: the key and the URL only


def probe(settings: Settings) -> Probe:
    path, setting, value = probe_target(settings)
    url = f"{settings.api_base_url}/{path}"
    headers = {"Authorization": f"Bearer {settings.openai_api_key.get_secret_value()}",
               "OpenAI-Beta": "assistants=v2"}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                    timeout=PROBE_TIMEOUT_SECONDS) as response:
            response.read()
            return Probe()
    except urllib.error.HTTPError as exc:
        with exc:
            return _judge(exc.code, _error_of(exc.read()), url, setting, value)
    except (OSError, ValueError) as exc:  # refused, unreachable, timed out, not HTTP
        return Probe(problem=f"the API at {settings.api_base_url} does not answer: {type(exc).__name__}: {exc}")


def _judge(status: int, error: dict[str, Any] | None, url: str, setting: str, value: str) -> Probe:
    said = f"HTTP {status}" + (f" {error.get('code') or error.get('type') or ''}: {error.get('message')}"
                               if error else "")
    if status in (401, 403):
        return Probe(fatal=f"OPENAI_API_KEY is refused by the API ({said})")
    if status == 404 and (error is None or str(error.get("message") or "").startswith("Invalid URL")):
        return Probe(fatal=f"OPENAI_BASE_URL: GET {url} answered {said}, not the API's answer "
                           "(a base URL without /v1?)")
    if status == 404 and setting:
        return Probe(fatal=f"{setting} {value!r} is not known to the API ({said})")
    if status == 429 or status >= 500 or status == 404:
        return Probe(problem=f"the API answered {said}")
    return Probe(fatal=f"the API refused the start-up check GET {url} ({said})")


def _error_of(body: bytes) -> dict[str, Any] | None:
    """OpenAI's `{"error": {...}}` object, or None when the answer is not the API's JSON."""
    try:
        document = json.loads(body)
    except ValueError:
        return None
    error = document.get("error") if isinstance(document, dict) else None
    return error if isinstance(error, dict) else None


class StartupCheck:
    """The start-up probe for /readyz: repeated (at most every REPROBE_SECONDS) until it
    passes once, then passed for good (READY_CHECK_API is for checks after that)."""

    def __init__(self, settings: Settings, first: Probe) -> None:
        self.settings = settings
        self._last = first
        self._at = time.monotonic()
        self._lock = threading.Lock()

    def problem(self) -> str | None:
        last = self._last
        if last.problem is None and last.fatal is None:
            return None
        if time.monotonic() - self._at >= REPROBE_SECONDS and self._lock.acquire(blocking=False):
            try:
                self._last, self._at = probe(self.settings), time.monotonic()
            finally:
                self._lock.release()
        return self._last.fatal or self._last.problem
