"""The chaos test: worker pods SIGKILLed under load and API faults, then every outbound entry
checked against every accepted event.

    python -m tests.chaos --duration 300 --kill-every 8     (or `make chaos`)

Starts a private redis-server, the emulator with faults on, and several worker pods (each the
Procfile's `assistant-worker run`, in its own process group), sends a steady load over many
conversations (some needing tools), SIGKILLs a random pod every few seconds and restarts it,
then drains and reports lost, duplicated, out-of-order and stuck counts. Exits 1 on any.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
TOOL_TIMEOUT_SECONDS = 5


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Sent:
    conversation_id: str
    event_id: str
    content: str
    at: float


@dataclass
class Chaos:
    args: argparse.Namespace
    redis_url: str = ""
    emulator_url: str = ""
    env: dict[str, str] = field(default_factory=dict)
    pods: list[subprocess.Popen[bytes] | None] = field(default_factory=list)
    kills: list[float] = field(default_factory=list)
    sent: list[Sent] = field(default_factory=list)
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)

    # --- the stack ---------------------------------------------------------------------
    def start(self) -> None:
        a = self.args
        rport, eport = free_port(), free_port()
        self.children.append(subprocess.Popen(
            ["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", tempfile.mkdtemp(prefix="chaos-redis-")],
            stdout=subprocess.DEVNULL))
        self.redis_url = f"redis://127.0.0.1:{rport}/0"
        self.children.append(subprocess.Popen(
            [str(Path(sys.executable).parent / "assistant-emulator"), "--port", str(eport),
             "--run-seconds", str(a.run_seconds), "--jitter", "0.3", "--seed", str(a.seed)],
            env={**os.environ, "EMULATOR_FAULT_429": str(a.faults), "EMULATOR_FAULT_500": str(a.faults),
                 "EMULATOR_FAULT_LOST": str(a.faults), "EMULATOR_FAIL_RATE": str(a.faults),
                 "EMULATOR_STREAM_CUT": str(a.stream_cut)},
            stdout=subprocess.DEVNULL))
        self.emulator_url = f"http://127.0.0.1:{eport}"
        _wait(lambda: _pings(self.redis_url), 10)
        _wait(lambda: _get(f"{self.emulator_url}/_emulator/health") is not None, 10)
        self.env = {**os.environ, "REDIS_URL": self.redis_url,
                    "OPENAI_BASE_URL": f"{self.emulator_url}/v1", "OPENAI_API_KEY": "sk-chaos",
                    "ASSISTANT_ID": "asst_default", "WORKER_TOOL_MODULES": "tests.sample_tools",
                    "LEASE_SECONDS": str(a.lease_seconds), "TOOL_TIMEOUT_SECONDS": str(TOOL_TIMEOUT_SECONDS),
                    "WORKER_PROCESSES": str(a.processes), "WORKER_THREADS": "4",
                    "METRICS_PORT": "0", "LOG_LEVEL": "ERROR", "LOG_FORMAT": "console",
                    "POLL_MAX_DELAY_SECONDS": "1.0", "ASSISTANT_BACKEND": a.backend,
                    # A killed pod's streams are taken over by the safety poll, as its leases expire.
                    "STREAMING": a.streaming, "STREAM_SAFETY_POLL_SECONDS": str(a.lease_seconds)}
        self.pods = [self._start_pod() for _ in range(a.pods)]

    def _start_pod(self) -> subprocess.Popen[bytes]:
        binary = Path(sys.executable).parent / "assistant-worker"
        return subprocess.Popen([str(binary), "run"], env=self.env, cwd=ROOT,
                                start_new_session=True, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        for pod in self.pods:
            if pod is not None and pod.poll() is None:
                os.killpg(pod.pid, signal.SIGTERM)
        for pod in self.pods:
            if pod is not None:
                try:
                    pod.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(pod.pid, signal.SIGKILL)
        for child in reversed(self.children):
            child.terminate()
            child.wait(10)

    # --- load and kills ----------------------------------------------------------------
    def send_load(self, until: float) -> None:
        from producers import Producer
        from worker.settings import Settings

        rng = random.Random(self.args.seed)
        interval = 1.0 / self.args.rate
        n = 0
        next_at = time.monotonic()
        with Producer(Settings(redis_url=self.redis_url)) as producer:
            while time.monotonic() < until:
                cid = f"chaos-{rng.randrange(self.args.conversations)}"
                content = (f'call:add{{"a": {n}, "b": 1}}' if rng.random() < self.args.tool_share
                           else f"{cid} says {n}")
                event_id = producer.send_user_message(cid, content)
                self.sent.append(Sent(cid, event_id, content, time.time()))
                n += 1
                next_at += interval
                time.sleep(max(0.0, next_at - time.monotonic()))

    def kill_loop(self, until: float) -> None:
        rng = random.Random(self.args.seed + 1)
        while time.monotonic() + self.args.kill_every < until:
            time.sleep(self.args.kill_every)
            victim = rng.randrange(len(self.pods))
            pod = self.pods[victim]
            if pod is not None:
                os.killpg(pod.pid, signal.SIGKILL)  # the whole pod, as a node loss would
                pod.wait()
            self.kills.append(time.time())
            time.sleep(self.args.restart_after)
            self.pods[victim] = self._start_pod()

    # --- the check ---------------------------------------------------------------------
    def entries(self) -> list[dict[str, Any]]:
        with redis.Redis.from_url(self.redis_url) as client:
            return [json.loads(f[b"data"]) for _, f in client.xrange("assistant:outbound")]

    def drain(self, timeout: float) -> None:
        wanted = {s.event_id for s in self.sent}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            answered = {e for entry in self.entries() for e in entry["event_ids"]}
            if wanted <= answered:
                return
            time.sleep(1.0)

    def report(self, started: float) -> dict[str, Any]:
        entries = self.entries()
        counts: dict[str, int] = {}
        published_at: dict[str, float] = {}
        for entry in entries:
            when = dt.datetime.fromisoformat(entry["published_at"]).timestamp()
            for event_id in entry["event_ids"]:
                counts[event_id] = counts.get(event_id, 0) + 1
                published_at.setdefault(event_id, when)
        lost = [s for s in self.sent if s.event_id not in counts]
        duplicated = [e for e, n in counts.items() if n > 1]
        out_of_order = self._out_of_order(entries)
        stuck = sorted({s.conversation_id for s in lost})
        waits = [published_at[s.event_id] - kill for kill in self.kills for s in self.sent
                 if s.at < kill and s.event_id in published_at and published_at[s.event_id] > kill]
        types: dict[str, int] = {}
        for entry in entries:
            types[entry["type"]] = types.get(entry["type"], 0) + 1
        stats = _get(f"{self.emulator_url}/_emulator/stats") or {}
        faults = {k: v for k, v in (stats.get("faults_injected") or {}).items() if isinstance(v, int)}
        return {
            "duration_s": round(time.time() - started, 1), "events": len(self.sent),
            "entries": len(entries), "kills": len(self.kills), "faults_injected": faults,
            "entry_types": types, "error_codes": self._error_codes(entries), "lost": len(lost),
            "duplicated": len(duplicated),
            "out_of_order": out_of_order, "stuck_conversations": len(stuck),
            "appended_twice": self._appended_twice(entries),
            "delta_violations": len(self._delta_violations(entries)),
            "longest_wait_after_kill_s": round(max(waits), 1) if waits else None,
            "longest_reply_s": round(max((published_at[s.event_id] - s.at for s in self.sent
                                          if s.event_id in published_at), default=0), 1),
        }

    def _out_of_order(self, entries: list[dict[str, Any]]) -> int:
        order = {s.event_id: i for i, s in enumerate(self.sent)}
        last: dict[str, int] = {}
        bad = 0
        for entry in entries:
            if entry["type"] == "event.rejected":
                continue
            for event_id in entry["event_ids"]:
                position = order.get(event_id, -1)
                if position < last.get(entry["conversation_id"], -1):
                    bad += 1
                last[entry["conversation_id"]] = max(position, last.get(entry["conversation_id"], -1))
        return bad

    @staticmethod
    def _error_codes(entries: list[dict[str, Any]]) -> dict[str, int]:
        codes: dict[str, int] = {}
        for entry in entries:
            if entry.get("error"):
                code = f"{entry['type']}/{entry['error'].get('code')}"
                codes[code] = codes.get(code, 0) + 1
        return codes

    def _delta_violations(self, entries: list[dict[str, Any]]) -> list[str]:
        """What breaks the delta streams' invariants (seq order, one run.ended, texts that
        join to the replies'), over every conversation's delta stream."""
        from tests.invariants import delta_violations

        with redis.Redis.from_url(self.redis_url) as client:
            streams = {key.decode().removeprefix("assistant:deltas:"): [json.loads(f[b"data"]) for _, f in
                                                                         client.xrange(key)]
                       for key in client.scan_iter("assistant:deltas:*")}
        found = delta_violations(entries, streams)
        for line in found[:5]:
            print("delta violation:", line, file=sys.stderr)
        return found

    def _appended_twice(self, entries: list[dict[str, Any]]) -> int:
        """User messages on the threads (conversations) that are there more than once
        (every message sent has a text of its own)."""
        from tests.threads import user_texts

        twice = 0
        for thread_id in {e["thread_id"] for e in entries if e.get("thread_id")}:
            texts = user_texts(f"{self.emulator_url}/v1", self.args.backend, thread_id)
            twice += len(texts) - len(set(texts))
        return twice


def run(args: argparse.Namespace) -> dict[str, Any]:
    chaos = Chaos(args)
    started = time.time()
    chaos.start()
    try:
        until = time.monotonic() + args.duration
        killer = threading.Thread(target=chaos.kill_loop, args=(until,), daemon=True)
        killer.start()
        chaos.send_load(until)
        killer.join()
        chaos.drain(timeout=args.lease_seconds * 3 + 60)
        return chaos.report(started)
    finally:
        chaos.stop()


def violations(result: dict[str, Any]) -> int:
    return sum(result[k] for k in ("lost", "duplicated", "out_of_order", "stuck_conversations",
                                   "appended_twice", "delta_violations"))


def print_table(result: dict[str, Any]) -> None:
    print("| measure | value |\n|---|---|")
    for key, value in result.items():
        print(f"| {key} | {value} |")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=float, default=300, help="seconds of load and kills")
    parser.add_argument("--rate", type=float, default=8, help="events per second")
    parser.add_argument("--conversations", type=int, default=200)
    parser.add_argument("--pods", type=int, default=3, help="worker pods (assistant-worker run)")
    parser.add_argument("--processes", type=int, default=1, help="WORKER_PROCESSES per pod")
    parser.add_argument("--kill-every", type=float, default=8, help="seconds between SIGKILLs")
    parser.add_argument("--restart-after", type=float, default=1.0)
    parser.add_argument("--lease-seconds", type=float, default=45, help="LEASE_SECONDS (the default)")
    parser.add_argument("--run-seconds", type=float, default=1.0, help="emulated run time")
    parser.add_argument("--faults", type=float, default=0.02,
                        help="rate of each fault: 429, 500, lost response, failed run")
    parser.add_argument("--tool-share", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--backend", choices=["assistants", "responses"], default="assistants",
                        help="ASSISTANT_BACKEND of the pods")
    parser.add_argument("--stream-cut", type=float, default=0.1,
                        help="share of run streams the emulator cuts mid-way")
    parser.add_argument("--streaming", choices=["auto", "on", "off"], default="auto", help="STREAMING of the pods")
    parser.add_argument("--json", type=Path, help="write the results here")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__.split("\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    result = run(args)
    print_table(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 1 if violations(result) else 0


def _wait(predicate: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit("chaos: a service did not start")
        time.sleep(0.05)


def _pings(url: str) -> bool:
    try:
        with redis.Redis.from_url(url) as client:
            return bool(client.ping())
    except redis.exceptions.ConnectionError:
        return False


def _get(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())
    except OSError:
        return None


if __name__ == "__main__":
    sys.exit(main())
