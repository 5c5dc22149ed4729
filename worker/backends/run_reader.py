"""The hot path of polling: read a run with one plain GET.

A poll is most of a run's API calls. Through the SDK's typed method it costs about 0.6 ms
of CPU here; a GET on a kept-alive `http.client` connection (one per thread, same base
URL, key and headers as the SDK's) costs about 0.1 ms. Everything else goes through the
SDK. Behind an HTTP proxy (HTTP(S)_PROXY set) the SDK's own HTTP library is used instead,
as the SDK would.
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
import threading
import urllib.parse
from typing import TYPE_CHECKING, Any

import openai

if TYPE_CHECKING:  # checked against httpx2, which the SDK that `make install` brings uses
    import httpx2 as httpx_lib
else:
    try:  # openai 3.x sends through httpx2; older releases through httpx (same API)
        import httpx2 as httpx_lib
    except ImportError:  # pragma: no cover - depends on the installed SDK
        import httpx as httpx_lib

__all__ = ["ConnectionProblem", "RunReader", "httpx_lib", "sdk_headers"]

# What a reader raises when the server cannot be reached or the connection broke.
ConnectionProblem = (OSError, http.client.HTTPException, httpx_lib.TransportError)


def sdk_headers(client: openai.OpenAI) -> dict[str, str]:
    """The headers the SDK sends (its key included), for requests made beside it."""
    headers = {k: v for k, v in client.default_headers.items() if isinstance(v, str)}
    headers["Authorization"] = f"Bearer {client.api_key}"
    headers["OpenAI-Beta"] = "assistants=v2"
    return headers


class RunReader:
    """GET requests against the API, for the poll loop. Thread-safe."""

    def __init__(self, client: openai.OpenAI) -> None:
        headers = sdk_headers(client)
        self._headers = headers
        self._base = urllib.parse.urlsplit(str(client.base_url))
        self._prefix = self._base.path.rstrip("/") + "/"
        self._timeout = client.timeout if isinstance(client.timeout, (int, float)) else 20.0
        self._local = threading.local()
        self._connections: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._closed = False
        proxied = any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY",
                                                    "http_proxy", "ALL_PROXY", "all_proxy"))
        self._fallback = httpx_lib.Client(base_url=str(client.base_url), headers=headers,
                                          timeout=self._timeout) if proxied else None

    def get(self, path: str) -> tuple[int, Any, Any]:
        """(status, headers, decoded JSON body or None); raises a ConnectionProblem."""
        if self._fallback is not None:
            proxied_response = self._fallback.get(path)
            return proxied_response.status_code, proxied_response.headers, _decode(proxied_response.content)
        for attempt in (1, 2):
            connection, reused = self._connection()
            try:
                connection.request("GET", self._prefix + path, headers=self._headers)
                response = connection.getresponse()
                body = response.read()
                break
            except ConnectionProblem:
                connection.close()  # reconnect on the next request
                self._local.used = False
                # A kept-alive connection the server closed meanwhile: GET again, once.
                if attempt == 2 or not reused:
                    raise
        # A GET after close() (a thread finishing during shutdown) still works, but does not
        # leave a socket open that close() no longer tracks.
        if self._closed or response.getheader("connection", "").lower() == "close":
            connection.close()
            self._local.used = False
        return response.status, _Headers(response.getheaders()), _decode(body)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for connection in self._connections:
                connection.close()
            self._connections.clear()
        if self._fallback is not None:
            self._fallback.close()

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        """This thread's connection, and whether it served a request before."""
        connection = getattr(self._local, "connection", None)
        reused = getattr(self._local, "used", False)
        self._local.used = True
        if connection is None:
            host, port = self._base.hostname or "localhost", self._base.port
            if self._base.scheme == "https":
                connection = http.client.HTTPSConnection(
                    host, port, timeout=self._timeout, context=ssl.create_default_context())
            else:
                connection = http.client.HTTPConnection(host, port, timeout=self._timeout)
            self._local.connection = connection
            with self._lock:
                self._connections.append(connection)
        return connection, reused


class _Headers:
    """Case-insensitive header lookup, as the SDK's responses offer."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._values = {k.lower(): v for k, v in pairs}

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._values.get(name.lower(), default)


def _decode(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return None
