"""The pod's HTTP server on METRICS_PORT: /metrics (all worker processes), /healthz, /readyz."""

from __future__ import annotations

import subprocess
import threading
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from socketserver import ThreadingMixIn
from typing import Any

import redis
from prometheus_client import CollectorRegistry, generate_latest, multiprocess
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from worker.settings import Settings


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return


def make_app(settings: Settings, child: subprocess.Popen[bytes] | None) -> Any:
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=2)

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/metrics":
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return _reply(start_response, "200 OK", generate_latest(registry), CONTENT_TYPE_LATEST)
        if path == "/healthz":
            alive = child is None or child.poll() is None
            return _reply(start_response, "200 OK" if alive else "503 Service Unavailable",
                          b"ok\n" if alive else b"workers exited\n")
        if path == "/readyz":
            try:
                client.ping()
            except redis.exceptions.RedisError as exc:
                return _reply(start_response, "503 Service Unavailable", f"redis: {exc}\n".encode())
            return _reply(start_response, "200 OK", b"ready\n")
        return _reply(start_response, "404 Not Found", b"not found\n")

    return app


def _reply(start_response: Any, status: str, body: bytes,
           content_type: str = "text/plain; charset=utf-8") -> list[bytes]:
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]


def start_http_server(settings: Settings, child: subprocess.Popen[bytes] | None) -> WSGIServer:
    server = make_server("0.0.0.0", settings.metrics_port, make_app(settings, child),
                         server_class=_ThreadingServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server
