"""`make demo`: start Redis, the emulator (unless OPENAI_BASE_URL is set) and a worker, send
the seed's math-tutor message, print the reply as it arrives, stop everything, exit 0."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SEED_MESSAGE = "I need to solve the equation `3x + 11 = 14`. Can you help me?"


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
        print(f"user: {SEED_MESSAGE}")
        send = subprocess.run(
            [sys.executable, "-m", "producers", "send", "--conversation", "demo-user",
             "--wait", "--timeout", "120", SEED_MESSAGE], env=env, capture_output=True, text=True,
            check=False)  # _show reads the exit code
        return _show(send)
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


def _show(send: subprocess.CompletedProcess[str]) -> int:
    import json

    lines = send.stdout.splitlines()
    if send.returncode == 2 or len(lines) < 2:
        print(f"no reply: {send.stderr.strip() or send.stdout.strip()}", file=sys.stderr)
        return 1
    entry = json.loads("\n".join(lines[1:]))
    if entry["type"] != "run.completed":
        print(f"{entry['type']}: {entry.get('error')}", file=sys.stderr)
        return 1
    for message in entry["messages"]:
        print(f"assistant: {message['text']}")
    print(f"({entry['timings']['total_ms']} ms, run {entry['run_id']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
