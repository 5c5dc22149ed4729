"""`make demo`: start Redis, the emulator (unless OPENAI_BASE_URL is set) and a worker, send
the seed's math-tutor message, print the reply as it is written (its deltas), stop
everything, exit 0."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SEED_MESSAGE = "I need to solve the equation `3x + 11 = 14`. Can you help me?"
CONVERSATION = "demo-user"
TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on port {port} after {timeout:g} s")


def main() -> int:
    binary = shutil.which("redis-server")
    if binary is None:
        print("redis-server is missing: run `make demo` (it installs it)", file=sys.stderr)
        return 1
    children: list[subprocess.Popen[bytes]] = []
    env = dict(os.environ)
    try:
        env["REDIS_URL"] = _start_redis(binary, children)
        if not env.get("OPENAI_BASE_URL"):
            env.update(_start_emulator(env, children))
            print(f"emulator on {env['OPENAI_BASE_URL']}")
        else:
            print(f"using the API at {env['OPENAI_BASE_URL']}")
        env.setdefault("METRICS_PORT", str(free_port()))
        env.setdefault("LOG_FORMAT", "console")
        env.setdefault("LOG_LEVEL", "WARNING")
        # `assistant-worker` beside this interpreter (the same install), else the module.
        worker = Path(sys.executable).parent / "assistant-worker"
        command = [str(worker)] if worker.exists() else [sys.executable, "-m", "worker.cli"]
        children.append(subprocess.Popen([*command, "run"], env=env))
        print(f"user: {SEED_MESSAGE}", flush=True)
        return _show(_converse(env["REDIS_URL"]))
    finally:
        for child in reversed(children):  # the worker first, Redis last
            child.terminate()
            try:
                child.wait(15)
            except subprocess.TimeoutExpired:
                child.kill()


def _start_redis(binary: str, children: list[subprocess.Popen[bytes]]) -> str:
    port = free_port()
    children.append(subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", tempfile.mkdtemp(prefix="aw-demo-redis-")],
        stdout=subprocess.DEVNULL))
    wait_for_port(port, 10)
    return f"redis://127.0.0.1:{port}/0"


def _start_emulator(env: dict[str, str], children: list[subprocess.Popen[bytes]]) -> dict[str, str]:
    """The API emulator; the settings that point the worker at it."""
    port = free_port()
    # `assistant-emulator` beside this interpreter (the same install), else the module.
    script = Path(sys.executable).parent / "assistant-emulator"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "emulator"]
    children.append(subprocess.Popen([*command, "--port", str(port)], env=env, stdout=subprocess.DEVNULL))
    wait_for_port(port, 10)
    return {"OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1", "OPENAI_API_KEY": env.get("OPENAI_API_KEY") or "sk-demo",
            "ASSISTANT_ID": env.get("ASSISTANT_ID") or "asst_default"}


def _converse(redis_url: str) -> dict[str, Any] | None:
    """Send the seed message and print the reply as it is written (its deltas, as `python -m
    producers send --wait --stream` does); the entry that answers it (None when none came in time)."""
    from producers import Producer
    from producers.live import LivePrinter
    from worker.settings import load_settings

    with Producer(load_settings(redis_url=redis_url)) as producer:
        outbound_at, deltas_at = producer.outbound_position(), producer.delta_position(CONVERSATION)
        event_id = producer.send_user_message(CONVERSATION, SEED_MESSAGE)
        reader = producer.delta_reader(CONVERSATION, event_id, position=deltas_at, outbound_position=outbound_at)
        printer = LivePrinter(sys.stdout, sys.stderr, prefix="assistant: ", warn="demo: warning")
        for item in reader.follow(TIMEOUT_S):
            printer.show(item)
        printer.finish(reader.answer, streamed=reader.entries > 0)
        return reader.answer


def _show(entry: dict[str, Any] | None) -> int:
    if entry is None:
        print(f"no reply within {TIMEOUT_S} s", file=sys.stderr)
        return 1
    if entry["type"] != "run.completed":
        print(f"{entry['type']}: {entry.get('error')}", file=sys.stderr)
        return 1
    print(f"({entry['timings']['total_ms']} ms, run {entry['run_id']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
