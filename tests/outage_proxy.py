"""A TCP forwarder in front of the emulator that an outage turns into connection resets.

`outage(True)` resets every open connection and every new one (RST, no answer: the API
unreachable mid-request); `outage(False)` forwards again. The emulator behind keeps its
state and its runs' clocks, as a real API does while the network between is down.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from types import TracebackType
from typing import Self

TICK = 0.1  # how often a pump looks at the outage switch


class OutageProxy:
    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.target = (host, target_port)
        self._listener = socket.create_server((host, 0))
        self._listener.settimeout(TICK)
        self._down = threading.Event()
        self._stopped = threading.Event()
        self._generation = 0  # connections of an earlier generation are reset
        self._thread = threading.Thread(target=self._accept, name="outage-proxy", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://{self.target[0]}:{self._listener.getsockname()[1]}/v1"

    def outage(self, down: bool) -> None:
        if down:
            self._generation += 1
            self._down.set()
        else:
            self._down.clear()

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._generation += 1
        self._thread.join(5)
        self._listener.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self._down.is_set():
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _reset(client)
                continue
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle delay
                sock.settimeout(TICK)
            generation = self._generation
            threading.Thread(target=self._pump, args=(client, upstream, generation, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, generation, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, generation: int, from_client: bool) -> None:
        """Copy one direction until EOF, an error or an outage (a new generation)."""
        try:
            while self._generation == generation:
                try:
                    data = source.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass  # the other side went away or was reset: this direction is done
        outage = self._generation != generation
        if from_client:  # source: the client's socket, reset in an outage (never a clean close)
            _reset(source) if outage else source.close()
            sink.close()
            return
        if not outage:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)  # the API closed: the client sees it close
        source.close()


def _reset(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
