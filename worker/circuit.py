"""The API circuit breaker: when the API stops answering, steps wait instead of failing.

It is fed every API call's outcome (`record`, the backends' observe hook). Only transient
failures count against the API: connection errors, timeouts, 5xx and 429. It **opens**
when at least OPEN_FAILURES of the process's last WINDOW_CALLS calls, all within the last
WINDOW_SECONDS, failed that way (8 of 10 within 30 s: an outage under load opens it within
a second; the 2 % of faults a healthy API throws never do). A lone conversation makes too
few calls to open it: API_MAX_ATTEMPTS covers that case as before.

While it is **open** a step that would call the API asks `admit()` first and is told to
come back later (its batch waits, its failure count frozen, see
worker/conversation/holding.py), except one step at a time, the **probe**: the first to ask
once the probe is due makes its real request. Probes are spaced 1 s after opening, then
twice as far apart after each failed one, up to 15 s. Any answer of the API (a success, or
a 4xx: the API is there) **closes** it, whoever's call brought it; the steps held come back
within one spacing. A probe whose step made no call is handed back at the step's end
(`release_probe`), and one that never resolves is given up after PROBE_LEASE_SECONDS. An
open circuit that no step asks about for IDLE_CLOSE_SECONDS closes by itself: nothing
waits on it, and the next call tests the API again.

**Per worker process**, not shared by the fleet in Redis: every call already passes
through it, and a decision from memory costs no round trip; an outage reaches every
process alike, and each opens within a second of its own failures; a partition that cuts
off one pod stops only that pod; a fleet-wide probe would need a Redis lease for each
probe, and Redis may be failing too. The cost: each process probes on its own (one request
per process every 15 s at most). The state is published for the pod's /readyz through the
heartbeat files (worker/health.py; `snapshot` and `readiness_problems` here), with the
last API refusal of the key (HTTP 401/403), which /readyz reports until a later call
succeeds.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

log = structlog.get_logger("worker.circuit")

TRANSIENT = frozenset({"rate_limited", "server_error", "timeout", "connection_error"})
WINDOW_CALLS = 10
WINDOW_SECONDS = 30.0
OPEN_FAILURES = 8  # of the last WINDOW_CALLS within WINDOW_SECONDS: 80 %
PROBE_FIRST_SECONDS = 1.0
PROBE_MAX_SECONDS = 15.0
PROBE_LEASE_SECONDS = 60.0  # above API_TIMEOUT_SECONDS: a probe's call has ended by then
IDLE_CLOSE_SECONDS = 30.0  # above PROBE_MAX_SECONDS and a held step's longest wait


@dataclass(frozen=True)
class Admission:
    """`go`: the step may call the API (`probe`: as the open circuit's one probe); else it
    comes back after `delay` seconds."""

    go: bool
    probe: bool = False
    delay: float = 0.0


GO = Admission(go=True)


class Circuit:
    """One worker process's circuit (see the module's text). Thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.time,
                 on_change: Callable[[bool], None] | None = None,
                 ident: Callable[[], int] = threading.get_ident) -> None:
        self.clock = clock
        self._on_change = on_change or (lambda is_open: None)
        self._ident = ident  # the calling thread: a probe's outcome is its own thread's
        self._lock = threading.Lock()
        self._window: deque[tuple[float, bool]] = deque(maxlen=WINDOW_CALLS)
        self.opened_at: float | None = None
        self._next_probe_at = 0.0
        self._spacing = PROBE_FIRST_SECONDS
        self._prober: int | None = None
        self._probe_started = 0.0
        self._last_demand = 0.0
        self.last_error: str | None = None
        self._last_ok_at: float | None = None
        self._refused: dict[str, Any] | None = None

    # --- outcomes -------------------------------------------------------------------------
    def record(self, operation: str, outcome: str) -> None:
        """One API call's outcome (ok, rate_limited, server_error, client_error, timeout,
        connection_error)."""
        now = self.clock()
        with self._lock:
            if outcome in TRANSIENT:
                self._failed(f"{operation}: {outcome}", now)
                return
            if outcome == "ok":
                self._last_ok_at = now
            if self.opened_at is not None:
                self._close(now, f"the API answered {operation} ({outcome})")
            else:
                self._window.append((now, False))

    def refused(self, code: str, status: int | None) -> None:
        """The API refused the key (HTTP 401/403): reported until a call succeeds."""
        self._refused = {"at": self.clock(), "status": status, "code": code}

    def _failed(self, error: str, now: float) -> None:
        self.last_error = error
        if self.opened_at is None:
            self._window.append((now, True))
            recent = [failed for at, failed in self._window if now - at <= WINDOW_SECONDS]
            if sum(recent) >= OPEN_FAILURES:
                self._open(now)
            return
        self._last_demand = now
        if self._prober == self._ident():  # the probe failed: the next one waits longer
            self._prober = None
            self._spacing = min(PROBE_MAX_SECONDS, self._spacing * 2)
            self._next_probe_at = now + self._spacing

    def _open(self, now: float) -> None:
        self.opened_at, self._last_demand = now, now
        self._spacing, self._next_probe_at, self._prober = PROBE_FIRST_SECONDS, now + PROBE_FIRST_SECONDS, None
        self._window.clear()
        log.warning("api circuit open: steps wait, one probe at a time", last_error=self.last_error)
        self._on_change(True)

    def _close(self, now: float, why: str) -> None:
        opened_at, self.opened_at, self._prober = self.opened_at, None, None
        self._window.clear()
        log.warning("api circuit closed", reason=why, open_seconds=round(now - (opened_at or now), 1))
        self._on_change(False)

    # --- admission ------------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        with self._lock:
            self._close_if_idle(self.clock())
            return self.opened_at is not None

    def admit(self) -> Admission:
        """May this step call the API? (Asked before each phase handler.)"""
        now = self.clock()
        with self._lock:
            self._close_if_idle(now)
            if self.opened_at is None:
                return GO
            self._last_demand = now
            me = self._ident()
            if self._prober == me:
                return Admission(go=True, probe=True)  # the probe's step goes on
            if self._prober is not None and now - self._probe_started < PROBE_LEASE_SECONDS:
                return Admission(go=False, delay=self._spacing)
            if now >= self._next_probe_at:
                self._prober, self._probe_started = me, now
                return Admission(go=True, probe=True)
            return Admission(go=False, delay=self._next_probe_at - now)

    def retry_in(self) -> float:
        """How long a step held now should wait: until the next probe is due."""
        with self._lock:
            return max(self._next_probe_at - self.clock(), 0.0) or self._spacing

    def release_probe(self) -> None:
        """The calling thread's step ended: a probe it held without an outcome goes back."""
        if self._prober is not None:
            with self._lock:
                if self._prober == self._ident():
                    self._prober = None

    def _close_if_idle(self, now: float) -> None:
        if self.opened_at is not None and now - self._last_demand > IDLE_CLOSE_SECONDS:
            self._close(now, f"no step asked for the API for {IDLE_CLOSE_SECONDS:g} s")

    # --- what /readyz reads ---------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """This process's state, for its heartbeat file."""
        with self._lock:
            self._close_if_idle(self.clock())
            return {"open_since": self.opened_at, "last_error": self.last_error,
                    "last_ok_at": self._last_ok_at, "refused": self._refused}


def readiness_problems(states: list[dict[str, Any]], now: float) -> list[str]:
    """What /readyz says about the API from the pod's processes' snapshots (empty: nothing).
    A refusal counts until any process's call succeeds after it."""
    problems = []
    opened = [s for s in states if s.get("open_since")]
    if opened:
        first = min(opened, key=lambda s: float(s["open_since"]))
        since = float(first["open_since"])
        problems.append(f"the API circuit is open since {_iso(since)} ({now - since:.0f} s, "
                        f"{len(opened)} of {len(states)} worker processes): steps wait; "
                        f"last probe error: {first.get('last_error') or 'none'}")
    refusals = [s["refused"] for s in states if s.get("refused")]
    last_ok = max((float(s.get("last_ok_at") or 0.0) for s in states), default=0.0)
    if refusals:
        latest = max(refusals, key=lambda r: float(r["at"]))
        if float(latest["at"]) > last_ok:
            problems.append(f"OPENAI_API_KEY is refused by the API (HTTP {latest.get('status')} "
                            f"{latest.get('code')}) since {_iso(float(latest['at']))}: runs fail "
                            "until an API call with the key succeeds")
    return problems


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
