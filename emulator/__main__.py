"""`assistant-emulator` / `python -m emulator`: serve until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from .config import ConfigError, EmulatorConfig, from_env
from .server import EmulatorServer

DEFAULT_PORT = 8090
# flag dest -> config field (only flags given on the command line override the environment)
_FLAG_FIELDS = (
    "run_seconds", "jitter", "poll_hint", "poll_hint_ms", "flavour", "after_tools_seconds", "action_ttl_seconds",
    "expire_rule_seconds", "cancel_seconds", "fault_429", "fault_500", "fault_lost", "fault_operations",
    "fault_retry_after_ms", "fail_rate", "expire_rate", "seed", "multi_message_500", "outage_after_seconds",
    "outage_seconds", "stream_chunks", "stream_cut", "stream_refuse",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="assistant-emulator",
        description="Emulator of the OpenAI Assistants v2, Responses and Conversations APIs "
                    "(emulator/README.md).")
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    add("--port", type=int, default=None, help=f"port (env EMULATOR_PORT, default {DEFAULT_PORT}; 0 = any free)")
    add("--run-seconds", type=float, help="how long a run works (env EMULATOR_RUN_SECONDS, default 1.0)")
    add("--jitter", type=float, help="duration spread, 0.3 = ±30%% (env EMULATOR_JITTER, default 0)")
    add("--poll-hint", action=argparse.BooleanOptionalAction, default=None,
        help="send openai-poll-after-ms on working runs (env EMULATOR_POLL_HINT, default on)")
    add("--poll-hint-ms", type=int, help="a constant poll hint instead of min(time left, 1000 ms)")
    add("--flavour", choices=("strict", "loose"), help="wire flavour (env EMULATOR_FLAVOUR, default strict)")
    add("--after-tools-seconds", type=float, help="run time after tool outputs (default: the run's duration)")
    add("--action-ttl-seconds", type=float, help="requires_action deadline (default 600)")
    add("--expire-rule-seconds", type=float, help="deadline of the `expire` rule (default 1)")
    add("--cancel-seconds", type=float, help="cancelling -> cancelled delay (default 0.1)")
    add("--fault-429", type=float, help="probability of a 429 (env EMULATOR_FAULT_429)")
    add("--fault-500", type=float, help="probability of a 500 before applying (env EMULATOR_FAULT_500)")
    add("--fault-lost", type=float, help="probability of applying then answering 500 (env EMULATOR_FAULT_LOST)")
    add("--fault-operations", help="comma-separated operationIds the faults apply to (default all)")
    add("--fault-retry-after-ms", type=int, help="retry-after-ms of injected 429s (default 100)")
    add("--fail-rate", type=float, help="probability a run fails with server_error (env EMULATOR_FAIL_RATE)")
    add("--expire-rate", type=float, help="probability a run expires (env EMULATOR_EXPIRE_RATE)")
    add("--seed", type=int, help="seed of the fault and jitter RNG (env EMULATOR_SEED)")
    add("--multi-message-500", action=argparse.BooleanOptionalAction, default=None,
        help="HTTP 500 to runs created with more than one message (env EMULATOR_MULTI_MESSAGE_500)")
    add("--outage-after-seconds", type=float,
        help="the outage starts this long after start (env EMULATOR_OUTAGE_AFTER_SECONDS, default 0)")
    add("--outage-seconds", type=float,
        help="an outage this long: /v1 connections reset unanswered (env EMULATOR_OUTAGE_SECONDS, default 0)")
    add("--stream-chunks", type=int, help="most text deltas per streamed message (env EMULATOR_STREAM_CHUNKS, "
                                          "default 100)")
    add("--stream-cut", type=float, help="probability a stream is cut mid-way (env EMULATOR_STREAM_CUT)")
    add("--stream-refuse", choices=("", "error", "json", "resume"),
        help="a server that refuses streams: error, json (ignores stream), resume (no starting_after) "
             "(env EMULATOR_STREAM_REFUSE)")
    return parser


def config_from(args: argparse.Namespace, environ: dict[str, str] | None = None) -> EmulatorConfig:
    config = from_env(os.environ if environ is None else environ)
    given = {name: getattr(args, name) for name in _FLAG_FIELDS if getattr(args, name) is not None}
    return config.replace(**given)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_from(args)
        port = args.port if args.port is not None else int(os.environ.get("EMULATOR_PORT") or DEFAULT_PORT)
        server = EmulatorServer(config, host=args.host, port=port)
    except (ConfigError, ValueError, OSError) as exc:
        print(f"assistant-emulator: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    print(f"emulator listening on {server.base_url}", flush=True)
    while not stop.wait(0.5):  # a timed wait, so that signal handlers run promptly
        continue
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
