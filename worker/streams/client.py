"""The stream readers' HTTP/1.1 client: requests sent on the process's loop, responses
parsed by httptools (llhttp, in C), and a streamed body's chunks handed to their reader as
they arrive, in the connection's own callback (`Connection.deliver`). A general client
(aiohttp, before) parks each chunk in a buffer and wakes the reading task for it. Measured
(slow host hour): `python -m bench.stream_path`, reading alone, 43 -> 20 us of loop CPU per
chunk (200 streams, a chunk each every 100 ms; 18 of them the socket's own);
`python -m bench.threads`, the worker's CPU per streamed run 26.7 -> 19.4 ms.

Plain HTTP and TLS (the SDK's trust), through the environment's proxy where it names one
(a CONNECT tunnel for https, an absolute request target for http). Connections whose
response ended cleanly are kept for the next request; a body silent for `read_timeout`
fails with a timeout.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import cast

import httptools

IDLE_SECONDS = 15.0  # a kept connection older than this is closed, not reused (servers drop them)
SWEEP_SECONDS = 5.0  # how often silent bodies are looked for

Chunk = Callable[[bytes], None]
End = Callable[[BaseException | None], None]  # None: the body ended cleanly


class StreamError(ConnectionError):
    """The connection failed, or the server broke HTTP."""


class Origin:
    """Where requests go: the API's scheme, host and port, and the proxy on the way."""

    def __init__(self, url: str, proxy: str | None, proxy_headers: Mapping[str, str] | None) -> None:
        parts = urllib.parse.urlsplit(url)
        self.tls = parts.scheme == "https"
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (443 if self.tls else 80)
        self.authority = parts.netloc.rpartition("@")[2]
        self.prefix = url if proxy and not self.tls else parts.path  # an http proxy takes the whole URL
        self.proxy = urllib.parse.urlsplit(proxy) if proxy else None
        self.proxy_headers = dict(proxy_headers or {})


class Connection(asyncio.Protocol):
    """One connection and the response being read on it (httptools calls back here)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.last_data_at = time.monotonic()
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers: dict[str, str] = {}
        self.complete = False
        self.keep_alive = False
        # The head's arrival, or the connection's failure before it (a value: nobody may wait).
        self._head: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
        self._buffered: list[bytes] = []
        self._on_chunk: Chunk | None = None
        self._on_end: End | None = None
        self._ended = False  # the body ended (cleanly, or with `_failure`)
        self._failure: BaseException | None = None
        self._informational = False  # a 1xx answer is being read: the response comes after it
        self.idle = False

    # --- asyncio's calls --------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not its subclasses

    def data_received(self, data: bytes) -> None:
        self.last_data_at = time.monotonic()
        if self.idle:  # nothing is asked of a kept connection: bytes on it mean it is out of step
            self.close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.fail(StreamError(f"the server broke HTTP: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self._ended and self._head.done() and exc is None and self._ends_with_close():
            self._end(None)  # a body that lasts until the connection closes (HTTP/1.0 style)
        else:
            self.fail(StreamError(f"the connection closed: {exc}" if exc else "the server closed the connection"))

    def _ends_with_close(self) -> bool:
        """The answer gives neither a length nor chunks: its body ends with the connection."""
        return "content-length" not in self.headers and "chunked" not in self.headers.get("transfer-encoding", "")

    # --- httptools' calls --------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        if self.status < 200:  # 100 Continue, 103 Early Hints: not the answer
            self._informational, self.headers = True, {}
            return
        self.keep_alive = self._parser.should_keep_alive()
        if not self._head.done():
            self._head.set_result(None)

    def on_body(self, body: bytes) -> None:
        if self._on_chunk is not None:
            self._on_chunk(body)
        else:
            self._buffered.append(body)

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        self.complete = True
        self._end(None)

    # --- the client's ------------------------------------------------------------------
    async def head(self) -> None:
        failure = await self._head
        if failure is not None:
            raise failure

    def deliver(self, on_chunk: Chunk, on_end: End) -> None:
        """From now on, each chunk of the body to `on_chunk` as it comes (those that came
        already at once), and its end (or the connection's failure) to `on_end`."""
        buffered, self._buffered = self._buffered, []
        for chunk in buffered:
            on_chunk(chunk)
        self._on_chunk, self._on_end = on_chunk, on_end
        if self._ended:
            on_end(self._failure)

    async def read(self) -> bytes:
        """The whole body."""
        done: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
        parts: list[bytes] = []

        def ended(failure: BaseException | None) -> None:
            if not done.done():
                done.set_result(failure)

        self.deliver(parts.append, ended)
        failure = await done
        if failure is not None:
            raise failure
        return b"".join(parts)

    def fail(self, exc: BaseException) -> None:
        if self.transport is not None:
            self.transport.abort()
        if not self._head.done():
            self._head.set_result(exc)
        self._end(exc)

    def _end(self, failure: BaseException | None) -> None:
        if self._ended:
            return
        self._ended, self._failure = True, failure
        if self._on_end is not None:
            self._on_end(failure)

    def alive(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def reusable(self) -> bool:
        """Its response was read to its end, and the server keeps the connection."""
        return self.complete and self.keep_alive and self.alive()

    def keep(self) -> None:
        """Kept for a later request: idle from now, told nothing more (its response's status
        and headers stay readable until it is taken again)."""
        self.idle, self.idle_since = True, time.monotonic()
        self._on_chunk = self._on_end = None

    def take(self) -> Connection:
        """Taken for a new request: a new response to read."""
        self._reset()
        return self

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class HttpClient:
    def __init__(self, base_url: str, headers: Mapping[str, str], tls: ssl.SSLContext | None, *,
                 proxy: str | None, proxy_headers: Mapping[str, str] | None,
                 connect_timeout: float, read_timeout: float) -> None:
        self.origin = Origin(base_url, proxy, proxy_headers)
        self._tls = tls if self.origin.tls else None
        proxied = self.origin.proxy_headers if self.origin.proxy is not None and not self.origin.tls else {}
        self._head = _lines({"Host": self.origin.authority, "Content-Type": "application/json", **headers,
                             "Accept-Encoding": "identity", **proxied})
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._idle: list[Connection] = []
        self._busy: set[Connection] = set()
        self._sweeper: asyncio.Task[None] | None = None

    async def request(self, method: str, path: str, body: bytes | None,
                      headers: Mapping[str, str] | None = None) -> Connection:
        """Send the request; the connection once the response's head came (its body to read)."""
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        connection = await self._connection()
        connection.last_data_at = time.monotonic()  # the silence counts from the request
        self._busy.add(connection)
        extra = _lines(headers or {})
        length = f"Content-Length: {len(body)}\r\n" if body is not None else ""
        head = f"{method} {self.origin.prefix}{path} HTTP/1.1\r\n{self._head}{extra}{length}\r\n"
        assert connection.transport is not None
        connection.transport.write(head.encode("latin-1") + (body or b""))
        try:
            await connection.head()
        except BaseException:
            self.release(connection)
            raise
        return connection

    def release(self, connection: Connection) -> None:
        """The response is done with: its connection kept for the next request, or closed."""
        self._busy.discard(connection)
        if connection.reusable():
            connection.keep()
            self._idle.append(connection)
        else:
            connection.close()

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for connection in [*self._idle, *self._busy]:
            connection.close()
        self._idle.clear()

    async def _connection(self) -> Connection:
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if connection.alive() and now - connection.idle_since < IDLE_SECONDS:
                return connection.take()
            connection.close()
        return await asyncio.wait_for(self._connect(), self.connect_timeout)

    async def _connect(self) -> Connection:
        loop, origin = asyncio.get_running_loop(), self.origin
        if origin.proxy is None:
            _, connection = await loop.create_connection(Connection, origin.host, origin.port, ssl=self._tls,
                                                         server_hostname=origin.host if self._tls else None)
            return connection
        proxy_host, proxy_port = origin.proxy.hostname or "localhost", origin.proxy.port or 80
        transport, connection = await loop.create_connection(Connection, proxy_host, proxy_port)
        if self._tls is None:
            return connection
        try:  # a tunnel through the proxy, TLS inside it
            await self._tunnel(connection)
            tls = await loop.start_tls(transport, connection, self._tls, server_hostname=origin.host)
        except BaseException:  # refused, timed out, cancelled: the proxy's socket goes too
            transport.close()
            raise
        connection.transport = cast(asyncio.Transport, tls)
        return connection

    async def _tunnel(self, connection: Connection) -> None:
        authority = f"{self.origin.host}:{self.origin.port}"
        lines = _lines(self.origin.proxy_headers)
        assert connection.transport is not None
        connection.transport.write(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n{lines}\r\n".encode())
        await connection.head()
        if connection.status != 200:
            connection.close()
            raise StreamError(f"the proxy refused the tunnel: HTTP {connection.status}")
        connection.take()  # the tunnel's answer read: the API's response comes next

    async def _sweep(self) -> None:
        """Bodies silent for `read_timeout` fail (one look every few seconds for all of
        them, not a timer reset per chunk)."""
        while True:
            await asyncio.sleep(min(SWEEP_SECONDS, self.read_timeout))
            silent_since = time.monotonic() - self.read_timeout
            for connection in [c for c in self._busy if c.last_data_at < silent_since]:
                connection.fail(TimeoutError(f"no data for {self.read_timeout:.0f} s"))


def _lines(headers: Mapping[str, str]) -> str:
    """Header lines, each name once (the last of those differing only in case wins); the
    body's length and the connection's framing are the client's own."""
    merged = {name.lower(): (name, value) for name, value in headers.items()
              if name.lower() not in ("content-length", "transfer-encoding", "connection")}
    return "".join(f"{name}: {value}\r\n" for name, value in merged.values())
