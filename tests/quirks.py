"""The quirk runner: the worker against one real server's habit at full size, from one command.

    python -m tests.quirks --case multi-message --backend assistants --json quirks.json

Starts a private redis-server, the emulator (`assistant-emulator`) with the case's switches and
the faults (default 3 % 429, 3 % 500, 2 % lost responses), one `assistant-worker run` of
`--processes` worker processes, sends `--conversations` x `--messages` events (interleaved at
random and paced, so that messages of one conversation sometimes share a batch), waits with a
deadline until every event is answered, then reports the entries by type and error code, lost,
duplicated and out-of-order answers, user messages on a thread (conversation) more than once,
and the wall time. Exits 1 on a broken invariant (lost, duplicated, out of order, appended twice).

Cases: `plain` (no quirk), `multi-message` (`multi_message_500`), `outage` (every /v1 request
unanswered for `--outage-seconds`, from `--outage-after` into `--duration` of steady load),
`wrong-key` (the worker started with a refused key: its exit code and stderr line),
`revoked-key` (the key refused after the load: how soon and how a few more events are answered), and `no-lock`
/ `no-lock-list`, which need emulator fields a later change adds. In tests: `run_case(...)`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emulator import EmulatorConfig
from tests import quirk_stack
from tests.invariants import find_violations
from tests.threads import conversation_items, user_texts

ROOT = Path(__file__).resolve().parent.parent
WRONG_KEY = "sk-quirks-refused"
WORKER_KEY = "sk-quirks"
# The mean time between two messages of one conversation: a few runs' length, so that some
# land while the previous batch still runs (and join one batch), most do not.
GAP_SECONDS = 5.0


@dataclass(frozen=True)
class Case:
    """A preset: the emulator fields it sets, and how the load runs."""

    about: str
    emulator: dict[str, Any] = field(default_factory=dict)
    outage: bool = False  # the outage window of --outage-after / --outage-seconds, load over --duration
    wrong_key: bool = False  # the worker gets a key the emulator refuses
    revoke_key: bool = False  # after the load, the key is refused; then a few more events


CASES = {
    "plain": Case("no quirk: the faults only"),
    "multi-message": Case("a 500 to every run created with more than one message", {"multi_message_500": True}),
    "outage": Case("the API unreachable for a window (connections reset)", outage=True),
    "wrong-key": Case("the worker started with a key the API refuses", wrong_key=True),
    "revoked-key": Case("the key revoked while the worker runs, then --revoked-events more", revoke_key=True),
    # The hook for the Responses reconciliation work: these run once the emulator has the fields.
    "no-lock": Case("no conversation lock while a response runs", {"conversation_lock": False}),
    "no-lock-list": Case("no conversation lock, GET /responses offered",
                         {"conversation_lock": False, "list_responses": True}),
}


@dataclass
class Report:
    case: str
    backend: str
    events: int = 0
    entries: int = 0
    batched_entries: int = 0  # entries answering more than one event (one run for several messages)
    entry_types: dict[str, int] = field(default_factory=dict)
    error_codes: dict[str, int] = field(default_factory=dict)
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    appended_twice: int = 0
    calls_answered_twice: int = 0  # Responses: a tool call's output in a conversation twice
    all_answered: bool = False
    wall_s: float = 0.0  # from the first event sent to the last answer seen (or the deadline)
    faults_injected: dict[str, Any] = field(default_factory=dict)
    worker_exit_code: int | None = None
    worker_stopped_after_s: float | None = None  # when the worker stopped by itself: how soon
    worker_stderr: str | None = None  # and the last line it wrote
    switches: dict[str, Any] = field(default_factory=dict)  # the emulator fields the run set
    revoked_codes: dict[str, int] = field(default_factory=dict)  # revoked-key: the later events' answers
    revoked_answer_s: float | None = None  # revoked-key: from their send to the last one's answer

    def violations(self) -> int:
        return self.lost + self.duplicated + self.out_of_order + self.appended_twice + self.calls_answered_twice

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        return cls(**data)


def emulator_switches(args: argparse.Namespace) -> dict[str, Any]:
    """The emulator fields this run sets before the load (the outage's are set as it starts)."""
    case = CASES[args.case]
    switches: dict[str, Any] = {"fault_429": args.fault_429, "fault_500": args.fault_500,
                                "fault_lost": args.fault_lost, **case.emulator}
    if case.wrong_key:
        switches["rejected_keys"] = [WRONG_KEY]
    switches.update(_pairs(args.set, "--set"))
    missing = sorted(set(switches) - {f.name for f in dataclasses.fields(EmulatorConfig)})
    if missing:
        raise SystemExit(f"quirks: no emulator field {', '.join(missing)} (case {args.case}, --set) in this "
                         "emulator yet")
    return switches


def worker_env(args: argparse.Namespace, stack: quirk_stack.Stack) -> dict[str, str]:
    key = WRONG_KEY if CASES[args.case].wrong_key else WORKER_KEY
    return {**os.environ, "REDIS_URL": stack.redis_url, "OPENAI_BASE_URL": stack.base_url,
            "OPENAI_API_KEY": key, "ASSISTANT_ID": "asst_default", "ASSISTANT_BACKEND": args.backend,
            "WORKER_TOOL_MODULES": "tests.sample_tools", "TOOL_TIMEOUT_SECONDS": "5",
            "WORKER_PROCESSES": str(args.processes), "WORKER_THREADS": "4", "METRICS_PORT": "0",
            "LOG_LEVEL": "ERROR", "LOG_FORMAT": "console", "POLL_MAX_DELAY_SECONDS": "1.0",
            **_pairs(args.env, "--env")}


def schedule(args: argparse.Namespace) -> tuple[list[tuple[str, str]], float]:
    """(conversation id, text) of every event in send order, and the seconds to spread them over:
    each conversation's messages in order, conversations interleaved at random."""
    rng = random.Random(args.seed)
    order = [f"q{c}" for c in range(args.conversations) for _ in range(args.messages)]
    rng.shuffle(order)
    events = [(cid, f'call:add{{"a": {n}, "b": 1}}' if rng.random() < args.tool_share else f"{cid} says {n}")
              for n, cid in enumerate(order)]
    if args.duration is not None:
        return events, args.duration
    return events, 180.0 if CASES[args.case].outage else args.messages * GAP_SECONDS


def run(args: argparse.Namespace) -> Report:
    switches = emulator_switches(args)
    outage = {"outage_after_seconds": args.outage_after, "outage_seconds": args.outage_seconds}
    report = Report(case=args.case, backend=args.backend,
                    switches={**switches, **(outage if CASES[args.case].outage else {})})
    with quirk_stack.started(args.seed, args.run_seconds, switches) as stack:
        handle, name = tempfile.mkstemp(prefix="quirks-worker-", suffix=".log")
        os.close(handle)
        stderr, sent = Path(name), dict[str, list[str]]()
        worker, began = _start_worker(worker_env(args, stack), stderr), time.monotonic()
        try:
            # A worker that stops at once on a refused key gets no load: there is nobody to answer it.
            if not (CASES[args.case].wrong_key and _exits(worker, args.start_timeout)):
                sent, started = _send(args, stack)
                answered_at = stack.wait_answered({e for ids in sent.values() for e in ids}, args.deadline)
                report.wall_s = round((answered_at or time.monotonic()) - started, 1)
                if CASES[args.case].revoke_key:
                    _after_revoking(args, stack, report)
            if worker.poll() is not None:  # it stopped by itself
                report.worker_stopped_after_s = round(time.monotonic() - began, 1)
                report.worker_stderr = _last_line(stderr)
        finally:
            report.worker_exit_code = _stop_worker(worker)
            stderr.unlink(missing_ok=True)
        _fill(report, stack, sent)
    return report


def _send(args: argparse.Namespace, stack: quirk_stack.Stack) -> tuple[dict[str, list[str]], float]:
    """Send the schedule at a steady pace; the outage window is set as the load starts."""
    from producers import Producer
    from worker.settings import Settings

    events, spread = schedule(args)
    interval = spread / max(len(events), 1)
    sent: dict[str, list[str]] = {}
    if CASES[args.case].outage:  # counted from this change: the window opens --outage-after into the load
        stack.configure(outage_after_seconds=args.outage_after, outage_seconds=args.outage_seconds)
    started = next_at = time.monotonic()
    with Producer(Settings(redis_url=stack.redis_url)) as producer:
        for cid, text in events:
            sent.setdefault(cid, []).append(producer.send_user_message(cid, text))
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))
    return sent, started


def _after_revoking(args: argparse.Namespace, stack: quirk_stack.Stack, report: Report) -> None:
    """Refuse the worker's key at the API, then send a few events to new conversations: how
    soon they are answered, and how."""
    from producers import Producer
    from worker.settings import Settings

    stack.configure(rejected_keys=[WORKER_KEY])
    with Producer(Settings(redis_url=stack.redis_url)) as producer:
        started = time.monotonic()
        ids = {producer.send_user_message(f"revoked{n}", "hello") for n in range(args.revoked_events)}
    answered_at = stack.wait_answered(ids, args.deadline)
    report.revoked_answer_s = None if answered_at is None else round(answered_at - started, 2)
    answers = [e for e in stack.entries() if set(e["event_ids"]) & ids]
    report.revoked_codes = dict(Counter(f'{e["type"]}/{(e.get("error") or {}).get("code")}' for e in answers))


def _fill(report: Report, stack: quirk_stack.Stack, sent: dict[str, list[str]]) -> None:
    """The counts of the report, from the outbound stream and the emulator's state."""
    entries = [e for e in stack.entries() if not str(e["conversation_id"]).startswith("revoked")]
    found = find_violations(entries, sent)
    report.events = sum(len(ids) for ids in sent.values())
    report.entries = len(entries)
    report.batched_entries = sum(len(e["event_ids"]) > 1 for e in entries)
    report.entry_types = dict(Counter(e["type"] for e in entries))
    report.error_codes = dict(Counter(str(e["error"].get("code")) for e in entries if e.get("error")))
    report.lost, report.duplicated = len(found.missing), len(found.twice)
    report.out_of_order, report.all_answered = len(found.out_of_order), not found.missing
    stats = stack.stats()
    report.faults_injected = {k: v for k, v in stats["faults_injected"].items() if k != "by_operation"}
    stack.configure(fault_429=0, fault_500=0, fault_lost=0, outage_seconds=0)  # reading back unhindered
    backend = report.backend
    for thread_id in {e["thread_id"] for e in entries if e.get("thread_id")}:
        texts = user_texts(stack.base_url, backend, thread_id)
        report.appended_twice += len(texts) - len(set(texts))
        if backend == "responses":
            answered = [i.get("call_id") for i in conversation_items(stack.base_url, thread_id)
                        if i.get("type") == "function_call_output"]
            report.calls_answered_twice += len(answered) - len(set(answered))


def _start_worker(env: dict[str, str], stderr: Path) -> subprocess.Popen[bytes]:
    binary = Path(sys.executable).parent / "assistant-worker"
    with open(stderr, "wb") as err:  # the child keeps its own descriptor
        return subprocess.Popen([str(binary), "run"], env=env, cwd=ROOT, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=err)


def _exits(worker: subprocess.Popen[bytes], timeout: float) -> bool:
    try:
        worker.wait(timeout)
    except subprocess.TimeoutExpired:
        return False
    return True


def _stop_worker(worker: subprocess.Popen[bytes]) -> int:
    """SIGTERM the worker, as a pod's stop does (its process group SIGKILLed after 30 s); its exit code."""
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        if not _exits(worker, 30):
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
    return worker.returncode


def _last_line(path: Path) -> str | None:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else None


def _pairs(items: list[str] | None, flag: str) -> dict[str, str]:
    pairs = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"quirks: {flag} takes NAME=VALUE, got {item!r}")
        pairs[name] = value
    return pairs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tests.quirks", description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--case", choices=sorted(CASES), default="plain", help="the preset (see the module's docstring)")
    add("--backend", choices=["assistants", "responses"], default="assistants", help="ASSISTANT_BACKEND")
    add("--conversations", type=int, default=100)
    add("--messages", type=int, default=3, help="events per conversation")
    add("--processes", type=int, default=2, help="WORKER_PROCESSES of the one assistant-worker run")
    add("--duration", type=float, help=f"seconds the events are spread over (default {GAP_SECONDS:g} per message "
        "of a conversation; outage: 180)")
    add("--outage-after", type=float, default=15, help="seconds into the load the outage starts")
    add("--outage-seconds", type=float, default=120, help="how long the API is unreachable")
    add("--fault-429", type=float, default=0.03)
    add("--fault-500", type=float, default=0.03)
    add("--fault-lost", type=float, default=0.02)
    add("--run-seconds", type=float, default=1.0, help="emulated run time (jitter ±30 %%)")
    add("--tool-share", type=float, default=0.1, help="share of events that need a tool")
    add("--set", action="append", metavar="FIELD=VALUE", help="an emulator config field (repeatable)")
    add("--env", action="append", metavar="NAME=VALUE", help="a worker setting (repeatable)")
    add("--deadline", type=float, default=300, help="seconds after the load to wait for answers")
    add("--revoked-events", type=int, default=5, help="revoked-key: events sent once the key is refused")
    add("--start-timeout", type=float, default=60, help="wrong-key: how long the worker may take to stop")
    add("--seed", type=int, default=1)
    add("--json", type=Path, help="write the report here")
    return parser


def run_case(case: str = "plain", backend: str = "assistants", **options: Any) -> Report:
    """The runner in this process (its services are still child processes); `options` are the
    command line's, in snake case: `run_case("plain", conversations=5, messages=2, env=["X=1"])`."""
    args = build_parser().parse_args(["--case", case, "--backend", backend])
    for name, value in options.items():
        if not hasattr(args, name):
            raise TypeError(f"run_case: no option {name!r}")
        setattr(args, name, value)
    return run(args)


def run_case_in_subprocess(argv: list[str], timeout: float = 900) -> Report:
    """`python -m tests.quirks ARGV` in a child process; its report."""
    with tempfile.TemporaryDirectory(prefix="quirks-") as folder:
        out = Path(folder) / "report.json"
        subprocess.run([sys.executable, "-m", "tests.quirks", *argv, "--json", str(out)], cwd=ROOT,
                       check=False, timeout=timeout, stdout=subprocess.DEVNULL)
        return Report.from_dict(json.loads(out.read_text()))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    report = run(args)
    print("| measure | value |\n|---|---|")
    for key, value in report.as_dict().items():
        print(f"| {key} | {json.dumps(value) if isinstance(value, dict) else value} |")
    if args.json:
        args.json.write_text(json.dumps(report.as_dict(), indent=2))
    return 1 if report.violations() else 0


if __name__ == "__main__":
    sys.exit(main())
