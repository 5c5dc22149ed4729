"""Liveness of the pod's worker processes, for /healthz.

Each Dramatiq worker process writes a small heartbeat file every few seconds: when it
wrote, when its scheduler thread last went round its loop, and since when its longest-busy
worker thread has been on one conversation step (a message carries up to POLL_BATCH_SIZE
conversations; each step restarts the clock). The pod's HTTP server (another process) reads
the files: a process that stopped writing, a scheduler that stopped turning (or never
started) or a thread stuck on one step for longer than HEALTH_BUSY_LIMIT_SECONDS makes the
pod unhealthy, so that Kubernetes restarts it (its claims come due again elsewhere after
LEASE_SECONDS).

The heartbeat also carries the process's API circuit state (worker/circuit.py), which the
pod's /readyz reads with `api_states`.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dramatiq
import structlog

HEARTBEAT_SECONDS = 2.0
STALE_SECONDS = 30.0  # a heartbeat or a scheduler loop older than this: wedged
PREFIX = "health-"
# Set by `assistant-worker run` for its worker processes: the folder of the pod's metrics
# and heartbeats (explicit, so that an exported PROMETHEUS_MULTIPROC_DIR alone changes nothing).
POD_FOLDER_ENV = "ASSISTANT_WORKER_POD_FOLDER"

log = structlog.get_logger(__name__)
_busy: dict[int, float] = {}  # thread ident -> on the current step since
_tracking = threading.Event()  # set while a HealthMiddleware runs in this process


def step_started() -> None:
    """A worker thread starts a step (of a conversation, or a message's tools)."""
    if _tracking.is_set():
        _busy[threading.get_ident()] = time.time()


def heartbeat_path(folder: str | Path, pid: int) -> Path:
    return Path(folder) / f"{PREFIX}{pid}.json"


class HealthMiddleware(dramatiq.Middleware):
    """Writes this worker process's heartbeat file (see the module's text)."""

    def __init__(self, folder: str, scheduler_tick: Callable[[], float | None],
                 api_state: Callable[[], dict[str, Any]] | None = None,
                 stream_tick: Callable[[], float | None] = lambda: None) -> None:
        self.folder = folder
        self.scheduler_tick = scheduler_tick
        self.stream_tick = stream_tick
        self.api_state = api_state or dict
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started_at = time.time()

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        step_started()

    def after_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy, *,
                              result: Any = None, exception: BaseException | None = None) -> None:
        _busy.pop(threading.get_ident(), None)

    after_skip_message = after_process_message

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        _busy.clear()
        _tracking.set()
        self._stop.clear()
        self._started_at = time.time()
        self._thread = threading.Thread(target=self._beat, name="assistant-heartbeat", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stop.set()
        _tracking.clear()
        if self._thread is not None:
            self._thread.join(timeout=5)  # so that a last beat cannot write the file again
        heartbeat_path(self.folder, os.getpid()).unlink(missing_ok=True)

    def _beat(self) -> None:
        path = heartbeat_path(self.folder, os.getpid())
        while not self._stop.is_set():
            busy = list(_busy.values())
            beat = {"pid": os.getpid(), "at": time.time(), "started_at": self._started_at,
                    "scheduler_at": self.scheduler_tick(), "busy_since": min(busy) if busy else None,
                    "stream_loop_at": self.stream_tick(),
                    "api": self.api_state()}
            try:
                partial = path.with_suffix(".tmp")
                partial.write_text(json.dumps(beat))
                partial.replace(path)  # readers never see half a file
            except OSError as exc:  # /healthz will say "no heartbeat"; the log says why
                log.error("heartbeat not written", path=str(path), error=str(exc))
            self._stop.wait(HEARTBEAT_SECONDS)


def heartbeat_files(folder: str | Path) -> list[Path]:
    return list(Path(folder).glob(f"{PREFIX}*.json"))


def _beats(folder: str | Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Each heartbeat file with what it holds (one being replaced right now is skipped)."""
    for path in heartbeat_files(folder):
        try:
            yield path, json.loads(path.read_text())
        except (OSError, ValueError):
            continue


def api_states(folder: str | Path) -> list[dict[str, Any]]:
    """The API circuit states the live processes' heartbeats carry (worker/circuit.py)."""
    return [beat["api"] for _, beat in _beats(folder)
            if isinstance(beat.get("api"), dict) and _alive(beat.get("pid", 0))]


def check(folder: str | Path, busy_limit: float, now: float | None = None) -> list[str]:
    """Problems found in the heartbeats of live processes (empty: healthy). Files of
    processes that are gone are removed."""
    now = time.time() if now is None else now
    problems = []
    for path, beat in _beats(folder):
        pid = beat.get("pid", 0)
        if not _alive(pid):
            path.unlink(missing_ok=True)
            continue
        if now - beat["at"] > STALE_SECONDS:
            problems.append(f"worker process {pid}: no heartbeat for {now - beat['at']:.0f} s")
        scheduler_at = beat.get("scheduler_at")
        if scheduler_at is None and now - beat.get("started_at", now) > STALE_SECONDS:
            problems.append(f"worker process {pid}: its scheduler never started")
        elif scheduler_at is not None and now - scheduler_at > STALE_SECONDS:
            problems.append(f"worker process {pid}: scheduler stuck for {now - scheduler_at:.0f} s")
        stream_loop_at = beat.get("stream_loop_at")
        if stream_loop_at is not None and now - stream_loop_at > STALE_SECONDS:
            problems.append(f"worker process {pid}: stream loop stuck for {now - stream_loop_at:.0f} s")
        busy_since = beat.get("busy_since")
        if busy_since is not None and now - busy_since > busy_limit:
            problems.append(f"worker process {pid}: a thread busy on one step for "
                            f"{now - busy_since:.0f} s")
    return problems


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
