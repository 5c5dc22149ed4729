"""Wiring: builds the broker, the store, the backend and the service from settings."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import dramatiq
import openai
import redis
from dramatiq.brokers.redis import RedisBroker

from worker import health, keys, metrics
from worker.actors import Actors, declare_actors
from worker.backends.api import ApiObserver
from worker.backends.assistants import AssistantsBackend
from worker.backends.base import RunBackend
from worker.backends.responses import ResponsesBackend
from worker.backends.run_reader import sdk_headers
from worker.capabilities import CapabilityStore
from worker.circuit import Circuit
from worker.conversation.service import ConversationService
from worker.redis_client import make_redis
from worker.scheduler import Scheduler, SchedulerMiddleware
from worker.settings import Settings
from worker.store.conversation_store import Store
from worker.store.deltas import DeltaConfig
from worker.streams.streams import Streams
from worker.tools import ToolRunner, definitions, load_tool_modules
from worker.wakeup import WakeableRedisBroker


def make_store(settings: Settings, client: redis.Redis | None = None) -> Store:
    return Store(client or make_redis(settings), outbound_stream=settings.outbound_stream,
                 outbound_maxlen=settings.outbound_maxlen, dead_letter_maxlen=settings.dead_letter_maxlen,
                 deltas=DeltaConfig.from_settings(settings))


def make_openai(settings: Settings) -> openai.OpenAI:
    return openai.OpenAI(api_key=settings.openai_api_key.get_secret_value() or "unset",
                         base_url=settings.api_base_url, timeout=settings.api_timeout_seconds,
                         max_retries=0)


def make_backend(settings: Settings, client: redis.Redis | None = None,
                 observe: ApiObserver = metrics.observe_api, streams: Streams | None = None) -> RunBackend:
    """The API behind the worker (ASSISTANT_BACKEND); tool modules are loaded by then.
    `observe` sees every API call's outcome; what the backend learns about the server is
    kept in `client`'s Redis (capabilities.py). `streams`: the process's run streams."""
    known = CapabilityStore.from_settings(settings, client)
    if settings.assistant_backend == "responses":
        return ResponsesBackend(make_openai(settings), model=settings.responses_model,
                                instructions=settings.responses_instructions, tools=definitions(),
                                observe=observe, known=known, streams=streams)
    return AssistantsBackend(make_openai(settings), observe=observe, known=known, streams=streams)


def make_broker(settings: Settings) -> RedisBroker:
    """Dramatiq's Redis broker, tuned so that a dead worker's unacknowledged messages come
    back in bounded time: its heartbeat expires after LEASE_SECONDS (capped at 60 s) and
    the maintenance pass that requeues them runs on 1 % of broker calls instead of 0.1 %.
    (Conversations do not depend on it: their claims expire by themselves.)"""
    heartbeat_ms = int(min(settings.lease_seconds, 60.0) * 1000)
    return WakeableRedisBroker(url=settings.redis_url, heartbeat_timeout=heartbeat_ms,
                               maintenance_chance=10_000, namespace=keys.DRAMATIQ_NAMESPACE,
                               idle_poll_ms=settings.worker_idle_poll_ms)


@dataclass
class Runtime:
    settings: Settings
    broker: RedisBroker
    store: Store
    actors: Actors = field(init=False)
    circuit: Circuit = field(default_factory=lambda: Circuit(on_change=metrics.observe_circuit))
    _service: ConversationService | None = None
    _building: threading.Lock = field(default_factory=threading.Lock)
    streams: Streams | None = None  # the process's run streams, from its boot (STREAMING not off)

    def stream_loop_at(self) -> float | None:
        """When the process's stream loop last went round (/healthz); None without one."""
        return self.streams.loop.ticked_at() if self.streams is not None else None

    def start_streams(self) -> None:
        """At the worker process's boot (after the fork, before any step): its stream loop."""
        if self.settings.streaming == "off" or self.streams is not None:
            return
        client = make_openai(self.settings)
        streams = Streams(self.settings, self.store.deltas, sdk_headers(client), self.observe_api)
        client.close()
        streams.start()
        self.streams = streams

    def observe_api(self, operation: str, outcome: str) -> None:
        """Every API call's outcome: counted, and fed to the process's circuit breaker."""
        metrics.observe_api(operation, outcome)
        self.circuit.record(operation, outcome)

    def service(self) -> ConversationService:
        """The process's service, built on first use (after a fork, not before) by one thread:
        the worker threads' first messages arrive together, and a second service built
        meanwhile would be dropped with its API connections open."""
        service = self._service
        if service is not None:
            return service
        with self._building:
            if self._service is None:
                built = ConversationService(
                    self.store, make_backend(self.settings, self.store.redis, self.observe_api, self.streams),
                    self.settings,
                    dispatch_tools=self.actors.dispatch_tools,
                    tool_runner=ToolRunner(self.settings.tool_timeout_seconds,
                                           self.settings.tool_output_max_chars),
                    circuit=self.circuit)
                built.seed_planner()  # before any thread plans a poll with it
                self._service = built
            return self._service

    def close(self) -> None:
        """Close this process's API and Redis connections (Dramatiq's broker is closed by its
        owner). A later use reconnects; nothing is left for the garbage collector to close."""
        with self._building:
            service, self._service = self._service, None
            streams, self.streams = self.streams, None
        if streams is not None:  # handed over first: their batches are due at once elsewhere
            streams.close()
        if service is not None:
            service.backend.close()
            service.tool_runner.shutdown()
        metrics.observe_circuit(False)  # the gauge's file outlives a stopped process
        self.store.close()

    def scheduler(self) -> Scheduler:
        s = self.settings
        return Scheduler(self.store.schedule, self.actors.dispatch_claims, chunk_size=s.poll_batch_size,
                         lease_seconds=s.lease_seconds, interval=s.scheduler_interval_seconds)


class StreamsMiddleware(dramatiq.Middleware):
    """Starts the process's stream loop when its Dramatiq worker boots (streams.py); the
    runtime's close hands its streams over."""

    def __init__(self, start: Callable[[], None]) -> None:
        self.start = start

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self.start()


def build_runtime(settings: Settings) -> Runtime:
    load_tool_modules(settings.tool_modules)
    broker = make_broker(settings)
    runtime = Runtime(settings=settings, broker=broker, store=make_store(settings))
    scheduling = SchedulerMiddleware(runtime.scheduler, on_shutdown=runtime.close)
    broker.add_middleware(scheduling)
    broker.add_middleware(StreamsMiddleware(runtime.start_streams))
    folder = os.environ.get(health.POD_FOLDER_ENV)
    if folder:  # under `assistant-worker run`: the pod's /metrics and /healthz read this folder
        from worker.dramatiq_metrics import DramatiqMetrics

        broker.add_middleware(DramatiqMetrics())
        broker.add_middleware(health.HealthMiddleware(folder, scheduling.last_loop_at, runtime.circuit.snapshot,
                                                      runtime.stream_loop_at))
    runtime.actors = declare_actors(broker, settings.worker_queue, runtime.service)
    dramatiq.set_broker(broker)
    return runtime
