"""The HTTP side: a keep-alive, TCP_NODELAY, thread-per-connection server around `App`."""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import sys
import threading
import time
import traceback
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

from .app import App
from .config import EmulatorConfig
from .sse import StreamResponse

MAX_BODY_BYTES = 32 * 1024 * 1024
HANDLER_STACK_BYTES = 512 * 1024  # per connection thread: thousands of open streams stay cheap


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that died mid-request (a killed worker) is routine, not a traceback."""
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)
    allow_reuse_address = True
    request_queue_size = 4096  # thousands of streams opened at once (the kernel caps it at somaxconn)

    def process_request(self, request: Any, client_address: Any) -> None:
        """A thread per connection, with a small stack (the handlers never recurse deeply)."""
        previous = threading.stack_size(HANDLER_STACK_BYTES)
        try:
            super().process_request(request, client_address)
        finally:
            threading.stack_size(previous)

    def __init__(self, address: tuple[str, int], app: App) -> None:
        self.app = app
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def close_connections(self) -> None:
        """Shut the keep-alive connections still open, so no request is answered after stop()."""
        with self.connections_lock:
            connections, self.connections = self.connections, set()
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "assistant-emulator"
    sys_version = ""
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """Quiet: a benchmark makes thousands of requests."""

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        if self.server.app.unanswered(self.path):
            self._reset()
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES or self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            error = {"message": "Request body too large or chunked.", "type": "invalid_request_error",
                     "param": None, "code": None}
            self._write(413, {"error": error}, {})
            return
        body = self.rfile.read(length) if length else b""
        try:
            response = self.server.app.handle(method, self.path, self.headers.get("Authorization"), body)
        except Exception as exc:  # noqa: BLE001 - a bug in the emulator: answer, and show it
            traceback.print_exc(file=sys.stderr)
            error = {"message": f"Emulator bug: {exc!r}", "type": "server_error", "param": None, "code": None}
            self._write(500, {"error": error}, {})
            return
        if isinstance(response, StreamResponse):
            self._stream(response)
        else:
            self._write(response.status, response.payload, response.headers)

    def _stream(self, response: StreamResponse) -> None:
        """Server-sent events, one chunk (chunked transfer encoding) per event, written when it is due;
        a cut closes the connection abruptly, a client gone away ends the stream."""
        lines = ["HTTP/1.1 200 OK", "Content-Type: text/event-stream; charset=utf-8", "Cache-Control: no-cache",
                 "Transfer-Encoding: chunked", *(f"{name}: {value}" for name, value in response.headers.items())]
        hub = self.server.app.streams
        chunks = response.chunks
        try:
            pending = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
            for chunk in chunks:
                if chunk.cut:
                    self.wfile.write(pending)
                    if chunk.log is not None:
                        hub.sent(chunk.log, time.time())
                    self._reset()
                    return
                self.wfile.write(pending + b"%x\r\n%s\r\n" % (len(chunk.data), chunk.data))
                pending = b""
                if chunk.log is not None:
                    hub.sent(chunk.log, time.time())
            self.wfile.write(pending + b"0\r\n\r\n")
        except OSError:
            self.close_connection = True
            response.on_disconnect()
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()

    def _reset(self) -> None:
        """No answer at all, as from a dead upstream: the connection is closed with SO_LINGER 0, so
        the client gets a reset (the socket really closes when finish() drops the last file on it)."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()

    def _write(self, status: int, payload: Any, headers: dict[str, str]) -> None:
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = ""
        lines = [f"HTTP/1.1 {status} {reason}", "Content-Type: application/json", f"Content-Length: {len(body)}"]
        lines.extend(f"{name}: {value}" for name, value in headers.items())
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(head + body)


class EmulatorServer:
    """The emulator on a real socket. `port=0` picks a free port; see `base_url`.

    >>> with EmulatorServer(EmulatorConfig(run_seconds=0.2)) as srv:
    ...     client = openai.OpenAI(base_url=srv.base_url, api_key="test")
    """

    def __init__(self, config: EmulatorConfig | None = None, host: str = "127.0.0.1", port: int = 0,
                 clock: Callable[[], float] = time.time) -> None:
        self.app = App(config, clock)
        self._httpd = _HTTPServer((host, port), self.app)
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return str(self._httpd.server_address[0])

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """The root URL, where the admin endpoints live under /_emulator/."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI base URL to give the SDK."""
        return self.url + "/v1"

    @property
    def config(self) -> EmulatorConfig:
        return self.app.config

    def start(self) -> Self:
        """Serve in a background thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                            name="assistant-emulator", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close the socket and every open connection. Idempotent."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()
        self._httpd.close_connections()

    def configure(self, **changes: Any) -> EmulatorConfig:
        """Change config fields at runtime (fault rates, run_seconds, flavour, ...)."""
        return self.app.configure(**changes)

    def stats(self) -> dict[str, Any]:
        return self.app.stats()

    def runs(self) -> list[dict[str, Any]]:
        return self.app.runs()

    def stream_log(self) -> list[dict[str, Any]]:
        """Per text delta and ending event of every stream: when it was written (see README.md)."""
        return self.app.stream_log()

    def reset(self) -> None:
        self.app.reset()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
