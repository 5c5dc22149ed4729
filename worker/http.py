"""The pod's HTTP server on METRICS_PORT: /metrics (all worker processes), /healthz, /readyz."""

from __future__ import annotations

import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import redis
from prometheus_client import CollectorRegistry, generate_latest, multiprocess
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from worker import circuit, health
from worker.capabilities import CapabilityStore
from worker.metrics import ClusterCollector
from worker.settings import Settings
from worker.startup import StartupCheck

API_CHECK_TTL = 10.0  # seconds a /readyz answer about the API is reused
API_CHECK_TIMEOUT = 2.0  # below a readiness probe's timeout (give it 3 s or more)


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        return


class ApiCheck:
    """Is the assistant API reachable with our key? (GET /models, at most every 10 s so that
    probes do not spend quota; while one probe checks, others get the last answer.)"""

    def __init__(self, settings: Settings) -> None:
        self.url = settings.api_base_url + "/models"
        self.headers = {"Authorization": f"Bearer {settings.openai_api_key.get_secret_value()}"}
        self._checked_at = float("-inf")
        self._problem: str | None = "not checked yet"
        self._lock = threading.Lock()

    def problem(self) -> str | None:
        if time.monotonic() - self._checked_at < API_CHECK_TTL or not self._lock.acquire(blocking=False):
            return self._problem
        try:
            self._problem = self._check()
            self._checked_at = time.monotonic()
            return self._problem
        finally:
            self._lock.release()

    def _check(self) -> str | None:
        request = urllib.request.Request(self.url, headers=self.headers)
        try:
            with urllib.request.urlopen(request, timeout=API_CHECK_TIMEOUT) as response:
                return None if response.status == 200 else f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            exc.close()  # it holds the connection
            return f"HTTP {exc.code}"
        except OSError as exc:
            return f"{type(exc).__name__}: {exc}"


class PodEndpoints:
    """The pod's WSGI app: /metrics (every worker process and the cluster gauges), /healthz
    (the worker processes live and their steps move) and /readyz (Redis and the API answer)."""

    def __init__(self, settings: Settings, child: subprocess.Popen[bytes] | None,
                 startup: StartupCheck | None = None) -> None:
        self.settings = settings
        self.child = child
        self.startup = startup
        self.client = redis.Redis.from_url(settings.redis_url, socket_timeout=2)
        self.folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        self.cluster = ClusterCollector(self.client, [settings.worker_queue])
        self.api = ApiCheck(settings) if settings.ready_check_api else None
        self.known = CapabilityStore.from_settings(settings, self.client)
        self.started = time.time()

    def metrics(self) -> bytes:
        registry = CollectorRegistry()
        if self.folder:
            multiprocess.MultiProcessCollector(registry, path=self.folder)
        registry.register(self.cluster)
        return generate_latest(registry)

    def healthz(self) -> list[str]:
        if self.child is not None and self.child.poll() is not None:
            return [f"the worker processes exited ({self.child.returncode})"]
        folder = self.folder
        problems = health.check(folder, self.settings.health_busy_limit_seconds) if folder else []
        if folder and not problems and not health.heartbeat_files(folder) \
                and time.time() - self.started > health.STALE_SECONDS:
            problems.append("no worker process has started")
        return problems

    def readyz(self) -> list[str]:
        problems = []
        try:
            self.client.ping()
        except redis.exceptions.RedisError as exc:
            problems.append(f"redis: {exc}")
        first = self.startup.problem() if self.startup is not None else None
        problem = first or (self.api.problem() if self.api is not None else None)
        if problem:
            problems.append(f"api: {problem}")
        if self.folder:  # the worker processes' API circuits and key refusals (heartbeats)
            states = health.api_states(self.folder)
            problems.extend(f"api: {p}" for p in circuit.readiness_problems(states, time.time()))
        return problems

    def capabilities(self) -> str:
        """What the fleet learnt about the API server (capabilities.py), one line each."""
        try:
            return "".join(f"capability: {line}\n" for line in self.known.listing())
        except redis.exceptions.RedisError:
            return ""  # /readyz has said so already

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/metrics":
            return _reply(start_response, "200 OK", self.metrics(), CONTENT_TYPE_LATEST)
        if path in ("/healthz", "/readyz"):
            problems = self.healthz() if path == "/healthz" else self.readyz()
            if problems:
                return _reply(start_response, "503 Service Unavailable",
                              ("\n".join(problems) + "\n").encode())
            note = "" if path == "/healthz" or self.api else "api: not checked (READY_CHECK_API=false)\n"
            if path == "/readyz":
                note += self.capabilities()
            return _reply(start_response, "200 OK", f"ok\n{note}".encode())
        return _reply(start_response, "404 Not Found", b"not found\n")


def make_app(settings: Settings, child: subprocess.Popen[bytes] | None,
             startup: StartupCheck | None = None) -> PodEndpoints:
    return PodEndpoints(settings, child, startup)


def _reply(start_response: Any, status: str, body: bytes,
           content_type: str = "text/plain; charset=utf-8") -> list[bytes]:
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]


def bind_http_server(settings: Settings) -> WSGIServer:
    """METRICS_PORT bound, not served yet: bound before any worker process starts, so that a
    port in use fails the start alone (OSError) with nothing to stop."""
    return make_server("0.0.0.0", settings.metrics_port, make_app(settings, None),
                       server_class=_ThreadingServer, handler_class=_QuietHandler)


def serve_in_background(server: WSGIServer, child: subprocess.Popen[bytes] | None,
                        startup: StartupCheck | None = None) -> None:
    """Answer on the bound port from a thread (`server.shutdown()` stops it); /healthz
    watches `child`, the Dramatiq main process, /readyz the start-up probe."""
    app = server.get_app()
    assert isinstance(app, PodEndpoints)
    app.child, app.startup = child, startup
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
