"""The hot path of polling: read a run with one plain GET.

A poll is most of a run's API calls. Through the SDK's typed method it costs about 0.6 ms
of CPU here; a GET on the HTTP library the SDK itself uses (same base URL, key, headers,
timeout) costs about half. Everything else goes through the SDK.
"""

from __future__ import annotations

import json
from typing import Any

import openai

try:  # openai 3.x sends through httpx2; older releases through httpx (same API)
    import httpx2 as http
except ImportError:  # pragma: no cover - depends on the installed SDK
    import httpx as http  # type: ignore[no-redef]

ConnectionProblem = http.TransportError


class RunReader:
    def __init__(self, client: openai.OpenAI, max_connections: int = 64) -> None:
        headers = {k: v for k, v in client.default_headers.items() if isinstance(v, str)}
        headers["Authorization"] = f"Bearer {client.api_key}"
        headers["OpenAI-Beta"] = "assistants=v2"
        base = str(client.base_url)
        self._http = http.Client(
            base_url=base if base.endswith("/") else base + "/", headers=headers,
            timeout=client.timeout if isinstance(client.timeout, (int, float)) else 20.0,
            limits=http.Limits(max_connections=max_connections,
                               max_keepalive_connections=max_connections))

    def get(self, path: str) -> tuple[int, Any, Any]:
        """(status, headers, decoded JSON body or None); raises ConnectionProblem."""
        response = self._http.get(path)
        try:
            body = json.loads(response.content) if response.content else None
        except ValueError:
            body = None
        return response.status_code, response.headers, body

    def close(self) -> None:
        self._http.close()
