"""The process's run streams: opened from a step thread on the process's loop, read there,
and owned through the batch (`stream_owner`: this process and a generation) while this
process's heartbeat lives in Redis.

A step calls `open` with the create (or tool-output submission, or re-attach) and gets the
run's object from the stream's first event; the stream is read on from then on by a
`StreamReader`. A server that answers JSON instead of an event stream is answered by the
same call (`Opened.owner` None: nothing streams).
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import itertools
import json
import os
import resource
import secrets
import socket
import ssl
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis
import redis.asyncio
import structlog

from worker import metrics
from worker.backends.api import ApiObserver, status_outcome, translate
from worker.backends.base import StreamTarget
from worker.backends.run_reader import httpx_lib
from worker.errors import TransientApiError
from worker.settings import Settings
from worker.store.deltas import DeltaStreams
from worker.streams.client import Connection, HttpClient
from worker.streams.direct import DirectConnection
from worker.streams.events import Parse, Translator, Update
from worker.streams.loop import StreamLoop
from worker.streams.reader import StreamReader, StreamSpec, TextDelta, Written
from worker.streams.registry import Registry
from worker.streams.writes import BatchedWrites

log = structlog.get_logger("worker.streams")

HEARTBEAT_SECONDS = 2.0  # each process beats, and looks for silent ones (registry.py)
HAND_OVER_SECONDS = 5.0
BROKEN = (OSError, asyncio.TimeoutError)  # a connection that failed (client.StreamError), or went silent


@dataclass(frozen=True)
class OpenRequest:
    operation: str  # for metrics, as ApiCalls names it
    method: str
    path: str  # under the API's base URL
    body: dict[str, Any] | None
    target: StreamTarget
    translator: Translator
    parse: Parse
    run_id: str | None = None  # known already (a re-attach, an Assistants tool round)
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Opened:
    object: dict[str, Any]  # the run (response) the stream's first event, or the JSON answer, carried
    owner: str | None  # the stream's owner; None: the server answered JSON, nothing streams


class Streams:
    def __init__(self, settings: Settings, deltas: DeltaStreams, headers: dict[str, str],
                 observe: ApiObserver) -> None:
        self.settings = settings
        self.deltas = deltas
        self.headers = headers
        self.observe = observe
        self.process_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.loop = StreamLoop()
        self.open_count = 0
        self._generations = itertools.count(1)
        self._readers: dict[StreamReader, asyncio.Task[None]] = {}
        self._http: HttpClient | None = None
        self._aredis: redis.asyncio.Redis | None = None
        self._direct: DirectConnection | None = None
        self._beat: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._writes: BatchedWrites | None = None
        self._registry: Registry | None = None

    # --- the process's life ------------------------------------------------------------
    def start(self) -> None:
        """At process boot: the loop, its clients, the heartbeat."""
        if self.loop.running:
            return
        _raise_file_limit(self.settings.stream_max_open)
        self.loop.start()
        self.loop.call(self._start(), timeout=10.0)

    async def _start(self) -> None:
        s = self.settings
        base_url = s.api_base_url.rstrip("/") + "/"
        # Our own client, not the SDK's httpx: a small part of its CPU per event (client.py).
        # A stream waits its safety poll twice over for an event before it counts as broken.
        proxy, proxy_headers = env_proxy(base_url)  # found once, as the SDK's client finds it
        self._http = HttpClient(base_url, self.headers, _trust(), proxy=proxy, proxy_headers=proxy_headers,
                                connect_timeout=s.api_timeout_seconds,
                                read_timeout=max(60.0, 2 * s.stream_safety_poll_seconds))
        # The heartbeat's connection (a few commands every 2 s), and the writer's own.
        self._aredis = redis.asyncio.Redis.from_url(s.redis_url, single_connection_client=True,
                                                    socket_connect_timeout=5)
        self._direct = DirectConnection(s.redis_url)
        self._writes = BatchedWrites(self._direct, self.process_id, self.deltas.config)
        self._registry = Registry(self._aredis, self.process_id)
        loop = asyncio.get_running_loop()
        self._beat, self._writer = loop.create_task(self._heartbeat()), loop.create_task(self._writes.run())

    async def _heartbeat(self) -> None:
        assert self._registry is not None
        while True:
            try:
                await self._registry.beat()
                released = await self._registry.sweep()
                if released:
                    log.warning("streams of a silent process taken over", conversations=released)
            except redis.RedisError as exc:
                log.warning("stream heartbeat failed", error=str(exc))
            await asyncio.sleep(HEARTBEAT_SECONDS)

    def can_open(self) -> bool:
        return self.loop.running and self.open_count < self.settings.stream_max_open

    def close(self) -> None:
        """Hand the streams over (their batches are due at once) and stop the loop."""
        if not self.loop.running:
            return
        try:
            self.loop.call(self._close(), timeout=HAND_OVER_SECONDS + 2)
        except Exception as exc:  # noqa: BLE001 - stopping goes on: the owners' heartbeat expires
            log.warning("streams not handed over", error=repr(exc))
        self.loop.stop()

    async def _close(self) -> None:
        if self._beat is not None:
            self._beat.cancel()
        readers = list(self._readers.items())
        for _, task in readers:
            task.cancel()
        await asyncio.wait_for(asyncio.gather(*(r.broken_off("the worker process stopped") for r, _ in readers),
                                              return_exceptions=True), HAND_OVER_SECONDS)
        if self._writer is not None:
            self._writer.cancel()
        if self._direct is not None:
            await self._direct.close()
        if self._http is not None:
            await self._http.close()
        if self._aredis is not None:
            if self._registry is not None:
                await self._registry.leave()
            await self._aredis.aclose(close_connection_pool=True)

    # --- opening ---------------------------------------------------------------------
    def open(self, request: OpenRequest) -> Opened:
        """Send the request on the loop; the run's object once the stream's first event
        carries it. Raises as ApiCalls.call does (a POST whose stream broke before the run's
        object came may have gone through: `maybe_applied`)."""
        owner = f"{self.process_id}/{next(self._generations)}"
        try:
            return self.loop.call(self._open(request, owner), timeout=self.settings.api_timeout_seconds + 5)
        except RuntimeError as exc:  # the loop stopped meanwhile (the process is stopping)
            raise TransientApiError(f"{request.operation}: {exc}") from None
        except concurrent.futures.TimeoutError:
            raise TransientApiError(f"{request.operation}: no answer in time", maybe_applied=True) from None

    async def _open(self, request: OpenRequest, owner: str) -> Opened:
        assert self._http is not None
        is_post = request.method == "POST"
        body = orjson.dumps(request.body) if request.body is not None else None
        try:
            response = await self._http.request(request.method, request.path, body, request.headers)
        except BROKEN as exc:
            self.observe(request.operation, "connection_error")
            raise TransientApiError(f"{request.operation}: {_describe(exc)}", maybe_applied=is_post) from None
        if response.status >= 400 or "text/event-stream" not in response.headers.get("content-type", ""):
            return await self._answered(request, response, is_post)
        spec = StreamSpec(request.target, owner, request.translator, request.parse, time.time(), request.run_id)
        reader = StreamReader(self, spec, self.loop.pace)
        try:
            response.deliver(reader.feed, reader.ended)
            first = await self._first(request, reader, is_post)
        except BaseException:  # a break, or the step stopped waiting (the call cancelled): nothing follows
            self._http.release(response)
            raise
        self.observe(request.operation, "ok")
        self._readers[reader] = asyncio.get_running_loop().create_task(self._follow(reader, response))
        return Opened(first.run if first is not None and first.run is not None else {}, owner)

    async def _first(self, request: OpenRequest, reader: StreamReader, is_post: bool) -> Update | None:
        """A create's first event with the run (None: a re-attach, whose run is known)."""
        if request.run_id is not None:
            return None
        try:
            first = await reader.first()
        except BROKEN as exc:
            self.observe(request.operation, "connection_error")
            raise TransientApiError(f"{request.operation}: {_describe(exc)}", maybe_applied=is_post) from None
        if first.run is None:
            self.observe(request.operation, "server_error")
            raise TransientApiError(f"{request.operation}: {first.error}", maybe_applied=is_post)
        return first

    async def _answered(self, request: OpenRequest, response: Connection, is_post: bool) -> Opened:
        """An error, or a JSON answer where a stream was asked for."""
        assert self._http is not None
        try:
            content = await response.read()
        except BROKEN as exc:
            self.observe(request.operation, "connection_error")
            raise TransientApiError(f"{request.operation}: {_describe(exc)}", maybe_applied=is_post) from None
        finally:
            self._http.release(response)
        try:
            body = json.loads(content)
        except ValueError:
            body = None
        if response.status >= 400:
            self.observe(request.operation, status_outcome(response.status))
            raise translate(response.status, body, response.headers, is_post)
        if not isinstance(body, dict):
            self.observe(request.operation, "client_error")
            raise TransientApiError(f"{request.operation}: the API answered something that is not a JSON object")
        self.observe(request.operation, "ok")
        return Opened(body, None)

    async def _follow(self, reader: StreamReader, response: Connection) -> None:
        self.open_count += 1
        metrics.STREAMS_OPEN.inc()
        try:
            await reader.follow()
        except BROKEN as exc:
            await reader.broken_off(_describe(exc))
        except redis.RedisError as exc:
            log.warning("stream reader could not write", error=str(exc))
            await reader.broken_off(f"Redis failed: {exc}")
        except Exception as exc:  # a reader must never take the loop down
            log.error("stream reader failed", error=repr(exc), exc_info=exc)
            await reader.broken_off(f"the reader failed: {exc!r}")
        finally:
            self.open_count -= 1
            metrics.STREAMS_OPEN.dec()
            self._readers.pop(reader, None)
            assert self._http is not None
            self._http.release(response)

    # --- the reader's writes (Sink) ------------------------------------------------------
    def send(self, target: StreamTarget, owner: str, cursor: str, deltas: list[TextDelta], done: Written) -> None:
        assert self._writes is not None
        texts = deltas if self.deltas.config.enabled else []  # DELTAS=off: the cursor only
        item = ["d", target.batch_id, owner, target.conversation_id, cursor, texts]
        self._writes.send(item, done)

    async def store(self, target: StreamTarget, owner: str, document: str) -> int:
        assert self._writes is not None
        return await self._writes.call(["s", target.batch_id, owner, target.conversation_id, document])


def _trust() -> ssl.SSLContext:
    """The SDK's own trust (its HTTP client's default context: SSL_CERT_FILE, SSL_CERT_DIR)."""
    return httpx_lib.create_ssl_context()


def env_proxy(url: str) -> tuple[str | None, dict[str, str] | None]:
    """The proxy HTTPS_PROXY / HTTP_PROXY / ALL_PROXY name for `url` (NO_PROXY heeded), as
    the SDK's HTTP client finds it; credentials in its URL become its Proxy-Authorization."""
    parsed = urllib.parse.urlsplit(url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parsed.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(parsed.hostname or ""):
        return None, None
    if "://" not in proxy:
        proxy = "http://" + proxy
    address = urllib.parse.urlsplit(proxy)
    if not address.username:
        return proxy, None
    credentials = f"{urllib.parse.unquote(address.username)}:{urllib.parse.unquote(address.password or '')}"
    authorization = "Basic " + base64.b64encode(credentials.encode()).decode()
    return address._replace(netloc=address.netloc.rpartition("@")[2]).geturl(), {"Proxy-Authorization": authorization}


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _raise_file_limit(streams: int) -> None:
    """Each open stream is a socket: the soft limit goes up to what they need (the hard one allows)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = streams + 1024
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
