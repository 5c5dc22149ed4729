"""The services of the quirk runner (tests/quirks.py): a private redis-server and the emulator
(`assistant-emulator`), each a child process, and what the runner asks of them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from tests.conftest import free_port, redis_pings

OUTBOUND = "assistant:outbound"


@dataclass
class Stack:
    redis_url: str
    url: str  # the emulator's root, where /_emulator/ lives

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def configure(self, **fields: Any) -> dict[str, Any]:
        """Change emulator config fields at runtime (POST /_emulator/config)."""
        answer: dict[str, Any] = _call(f"{self.url}/_emulator/config", fields)
        return answer

    def stats(self) -> dict[str, Any]:
        answer: dict[str, Any] = _call(f"{self.url}/_emulator/stats")
        return answer

    def entries(self) -> list[dict[str, Any]]:
        with redis.Redis.from_url(self.redis_url) as client:
            return [json.loads(f[b"data"]) for _, f in client.xrange(OUTBOUND)]

    def wait_answered(self, wanted: set[str], timeout: float) -> float | None:
        """Wait until every event of `wanted` is in an entry: the monotonic time that was seen,
        or None when `timeout` seconds passed first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if wanted <= {e for entry in self.entries() for e in entry["event_ids"]}:
                return time.monotonic()
            time.sleep(0.5)
        return None


@contextmanager
def started(seed: int, run_seconds: float, switches: dict[str, Any]) -> Iterator[Stack]:
    """Redis and the emulator (with `switches` applied), stopped at the end."""
    folder = tempfile.mkdtemp(prefix="quirks-redis-")
    rport, eport = free_port(), free_port()
    children = [subprocess.Popen(["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
                                  "--appendonly", "no", "--dir", folder], stdout=subprocess.DEVNULL)]
    try:
        children.append(subprocess.Popen(
            [str(Path(sys.executable).parent / "assistant-emulator"), "--port", str(eport),
             "--run-seconds", str(run_seconds), "--jitter", "0.3", "--seed", str(seed)],
            stdout=subprocess.DEVNULL))
        stack = Stack(f"redis://127.0.0.1:{rport}/0", f"http://127.0.0.1:{eport}")
        with redis.Redis(port=rport) as client:
            _wait(lambda: redis_pings(client), 10, "redis-server")
        _wait(lambda: _answers(f"{stack.url}/_emulator/health"), 10, "the emulator")
        stack.configure(**switches)
        yield stack
    finally:
        for child in reversed(children):
            child.terminate()
            child.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


def _call(url: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="GET" if data is None else "POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return json.load(reply)
    except urllib.error.HTTPError as exc:
        raise SystemExit(f"quirks: the emulator refused {url}: {exc.read().decode(errors='replace')}") from None


def _answers(url: str) -> bool:
    try:
        _call(url)
    except OSError:
        return False
    return True


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"quirks: {what} did not start")
        time.sleep(0.05)
