"""A rolling deploy: the previous release's worker and this one side by side on one Redis.

The previous release (commit f73f560, before the core redesign) is taken out of git history
and run as a real `assistant-worker run` process tree; this release's worker starts beside it
while its batches are in flight, then the old one is stopped (SIGTERM, as Kubernetes does)
or dies (SIGKILL of its whole process group, a crash). The new worker must take over the
conversations whose batches the old one wrote, and every event must still be answered
exactly once, in order, with each user message on its thread exactly once.

Which worker did what is read from each one's own log (JSON lines on its stderr): both
releases log "run created" and "published" with the batch's event ids.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis

from emulator import EmulatorConfig, EmulatorServer
from producers.client import Producer
from tests import threads
from tests.conftest import wait_until
from tests.invariants import check_exactly_once_in_order
from worker.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
PREVIOUS_RELEASE = "f73f560"  # the last commit of the old layout (worker/service.py, worker/store.py)
CONVERSATIONS = 20
MOST = 16  # conversations with a run by the old worker before the new one starts
LONG_RUNS = (1, 7, 13, 19)  # conversations whose first run lasts LONG_RUN_SECONDS
LONG_RUN_SECONDS = 12
STOP_WAIT_SECONDS = 30


# --- the two releases as process trees ------------------------------------------------------

def extract_previous_release(target: Path) -> Path:
    """`git archive PREVIOUS_RELEASE worker producers`, unpacked into `target`."""
    try:
        found = subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{PREVIOUS_RELEASE}^{{commit}}"],
                               capture_output=True, timeout=30)
    except (FileNotFoundError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"git is not usable here ({exc}): the previous release cannot be extracted")
    if found.returncode != 0:
        pytest.skip(f"commit {PREVIOUS_RELEASE} (the previous release) is not in this clone's history "
                    "(a shallow clone?): fetch the full history to run the rolling-deploy test")
    target.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", PREVIOUS_RELEASE, "worker", "producers"],
                             capture_output=True, timeout=60, check=True)
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, capture_output=True,
                   timeout=60, check=True)
    assert (target / "worker" / "service.py").exists(), "not the old layout"
    return target


class WorkerTree:
    """One `assistant-worker run` in its own process group (a pod), its stderr in a file."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], cwd: Path, log: Path) -> None:
        self.name = name
        self.log = log
        self._err = open(log, "wb")  # noqa: SIM115 - closed by close()
        self.proc = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                                     stderr=self._err, start_new_session=True)
        self.stopped_at: float | None = None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def group_alive(self) -> bool:
        try:
            os.killpg(self.proc.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def terminate(self) -> int:
        """SIGTERM to the pod's main process (what Kubernetes signals); its exit code."""
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(STOP_WAIT_SECONDS)
        wait_until(lambda: not self.group_alive(), 10, 0.05, what=f"every process of the {self.name} worker to exit")
        self.stopped_at = time.time()
        return code

    def kill_group(self) -> None:
        """SIGKILL to every process of the pod at once (a node loss, an OOM kill of the pod)."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(STOP_WAIT_SECONDS)
        wait_until(lambda: not self.group_alive(), 10, 0.05, what=f"every process of the {self.name} worker to die")
        self.stopped_at = time.time()

    def close(self) -> None:
        """Whatever happened: SIGTERM the group, wait, SIGKILL it if it lingers; close the log."""
        try:
            if self.group_alive():
                try:
                    os.killpg(self.proc.pid, signal.SIGTERM)
                    self.proc.wait(STOP_WAIT_SECONDS)
                    wait_until(lambda: not self.group_alive(), 10, 0.05, what="the group to exit")
                except (subprocess.TimeoutExpired, AssertionError, ProcessLookupError):
                    if self.group_alive():
                        os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(STOP_WAIT_SECONDS)
        finally:
            self._err.close()

    def records(self) -> list[dict[str, Any]]:
        """The JSON log lines so far (other lines, e.g. a crash's traceback, are skipped)."""
        found = []
        for line in self.log.read_bytes().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                found.append(record)
        return found

    def batches(self, event: str, since: float = 0.0) -> set[tuple[str, ...]]:
        """The event ids of the batches this worker logged `event` for ("run created",
        "published"), at `since` (epoch seconds) or later."""
        return {tuple(r.get("event_ids") or ()) for r in self.records()
                if r.get("event") == event and _epoch(r.get("timestamp")) >= since}

    def problems(self) -> list[str]:
        """Error records, and any line that is not JSON (a traceback printed outside logging)."""
        bad = []
        for line in self.log.read_bytes().decode(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                if line.strip():
                    bad.append(line)
                continue
            if not isinstance(record, dict) or record.get("level") in ("error", "critical"):
                bad.append(line)
        return bad

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_bytes().decode(errors="replace").splitlines()
        return f"--- {self.name} worker log ({self.log}), last {lines} lines ---\n" + "\n".join(text[-lines:])


def _epoch(timestamp: Any) -> float:
    """A log record's ISO 8601 time (UTC) as epoch seconds; 0 when it has none."""
    if not isinstance(timestamp, str):
        return 0.0
    return dt.datetime.fromisoformat(timestamp).timestamp()


@contextmanager
def worker_tree(name: str, command: list[str], env: dict[str, str], cwd: Path, log: Path) -> Iterator[WorkerTree]:
    tree = WorkerTree(name, command, env, cwd, log)
    try:
        yield tree
    finally:
        tree.close()


def worker_env(redis_url: str, emulator: EmulatorServer, backend: str, pythonpath: str,
               metrics_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update({
        "PYTHONPATH": pythonpath,
        "REDIS_URL": redis_url, "OPENAI_BASE_URL": emulator.base_url, "OPENAI_API_KEY": "sk-rolling-deploy",
        "ASSISTANT_ID": "asst_default", "ASSISTANT_BACKEND": backend, "RESPONSES_MODEL": "gpt-4o",
        "METRICS_PORT": "0", "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "WORKER_PROCESSES": "1", "WORKER_THREADS": "4", "WORKER_SHUTDOWN_SECONDS": "10",
        "LEASE_SECONDS": "3", "TOOL_TIMEOUT_SECONDS": "2", "WORKER_TOOL_MODULES": "tests.sample_tools",
        "POLL_INITIAL_DELAY_SECONDS": "0.05", "POLL_MIN_DELAY_SECONDS": "0.02", "POLL_MAX_DELAY_SECONDS": "0.3",
        "SCHEDULER_INTERVAL_SECONDS": "0.05", "API_TIMEOUT_SECONDS": "5", "CANCEL_WAIT_SECONDS": "5",
        "LOG_FORMAT": "json", "LOG_LEVEL": "INFO",
    })
    return env


# --- reading Redis ----------------------------------------------------------------------------

def entries(client: redis.Redis, stream: str) -> list[dict[str, Any]]:
    return [json.loads(fields[b"data"]) for _, fields in client.xrange(stream)]


def answered(client: redis.Redis, stream: str) -> set[str]:
    return {e for entry in entries(client, stream) for e in entry["event_ids"]}


def open_batches(client: redis.Redis) -> dict[str, tuple[str, ...]]:
    """conversation id -> the event ids of its active batch, as Redis holds them now."""
    found: dict[str, tuple[str, ...]] = {}
    for key in client.scan_iter(match="aw:batch:*"):
        cid = key.decode().removeprefix("aw:batch:")
        data = client.get(f"aw:batchdata:{cid}")
        if data is None:
            continue  # released between the two reads
        found[cid] = tuple(e["event_id"] for e in json.loads(data)["events"])
    return found


def leftovers(client: redis.Redis) -> list[str]:
    keys = [k.decode() for pattern in ("aw:batch:*", "aw:batchdata:*", "aw:lock:*")
            for k in client.scan_iter(match=pattern)]
    if client.zcard("aw:schedule"):
        keys.append(f"aw:schedule ({client.zcard('aw:schedule')} members)")
    return keys


def content_for(i: int, n: int) -> str:
    """Every third conversation calls the `add` tool (tests.sample_tools) with a unique `a`;
    a few first messages make long runs (the emulator's `sleep:S`), still under way when the
    old worker stops whenever that is, so that there is always a run of its to take over."""
    if i % 3 == 0:
        return f'call:add{{"a": {100 * n + i}, "b": 2}} (c{i} message {n})'
    if n == 1 and i in LONG_RUNS:
        return f"c{i} says message {n} sleep:{LONG_RUN_SECONDS}"
    return f"c{i} says message {n}"


def tool_answer(content: str) -> str | None:
    if not content.startswith("call:add"):
        return None
    a = json.loads(content[len("call:add"):content.index("}") + 1])["a"]
    return f"add -> {a + 2}"


# --- the test -----------------------------------------------------------------------------------

@pytest.mark.timeout(240)
@pytest.mark.parametrize("stop", ["sigterm", "sigkill"])
@pytest.mark.parametrize("assistant_backend", ["assistants", "responses"])
def test_a_new_worker_takes_over_the_conversations_of_the_previous_release(
        tmp_path: Path, redis_url: str, assistant_backend: str, stop: str) -> None:
    old_tree = extract_previous_release(tmp_path / "previous-release")
    settings = Settings(redis_url=redis_url)
    stream = settings.outbound_stream
    sent: dict[str, list[str]] = {f"roll-{i}": [] for i in range(CONVERSATIONS)}
    contents: dict[str, str] = {}  # event id -> content

    with ExitStack() as stack:
        emulator = stack.enter_context(EmulatorServer(EmulatorConfig(run_seconds=2.5, jitter=0.2), port=0))
        producer = stack.enter_context(Producer(settings))
        client = stack.enter_context(redis.Redis.from_url(redis_url))

        def send(i: int, n: int) -> None:
            cid = f"roll-{i}"
            content = content_for(i, n)
            event_id = producer.send_user_message(cid, content)
            sent[cid].append(event_id)
            contents[event_id] = content

        old_env = worker_env(redis_url, emulator, assistant_backend,
                             os.pathsep.join([str(old_tree), str(ROOT)]), tmp_path / "prom-old")
        probe = "import worker.service, producers, tests.sample_tools as t; print(worker.service.__file__, t.__file__)"
        imported = subprocess.run(
            [sys.executable, "-c", probe],
            env={k: v for k, v in old_env.items() if k != "PROMETHEUS_MULTIPROC_DIR"}, cwd=old_tree,
            capture_output=True, text=True, timeout=60)
        assert imported.returncode == 0, imported.stderr
        service_file, tools_file = imported.stdout.split()
        assert Path(service_file).is_relative_to(old_tree), f"the old worker would run {service_file}"
        assert Path(tools_file).is_relative_to(ROOT / "tests"), tools_file
        old = stack.enter_context(worker_tree("old", [sys.executable, "-m", "worker.cli", "run"], old_env,
                                              old_tree, tmp_path / "old-worker.log"))

        # 1. The old release alone: ~20 conversations, one or two messages each, some with tools.
        for i in range(CONVERSATIONS):
            send(i, 1)
            if i % 4 == 0:
                send(i, 2)

        def old_busy() -> bool:
            threads_with_runs = {r["thread_id"] for r in emulator.runs()}
            return len(threads_with_runs) >= MOST and len(open_batches(client)) >= 5
        try:
            wait_until(old_busy, 40, 0.1, what="the old worker to have runs for most conversations under way")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{old.tail()}") from None
        new_started_at = time.time()
        runs_by_old_alone = [r for r in emulator.runs() if r["created_at"] < new_started_at]

        # 2. This release beside it; a few more messages while both run.
        new = stack.enter_context(worker_tree(
            "new", [str(Path(sys.executable).parent / "assistant-worker"), "run"],
            worker_env(redis_url, emulator, assistant_backend, str(ROOT), tmp_path / "prom-new"),
            ROOT, tmp_path / "new-worker.log"))
        for i in range(0, CONVERSATIONS, 2):
            send(i, 3)

        def side_by_side() -> bool:
            """Both workers have answered something since the new one started, and a batch
            the old one started is still open."""
            assert old.alive(), f"the old worker exited early ({old.proc.returncode})\n{old.tail()}"
            assert new.alive(), f"the new worker exited early ({new.proc.returncode})\n{new.tail()}"
            if not (old.batches("published", since=new_started_at) and new.batches("published")):
                return False
            started_by_old = old.batches("run created")
            return any(ids in started_by_old for ids in open_batches(client).values())
        try:
            wait_until(side_by_side, 40, 0.1, what="both workers at work side by side")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{old.tail()}\n{new.tail()}") from None

        # 3. The old release goes away: SIGTERM (a rolling deploy) or SIGKILL of the pod (a crash).
        if stop == "sigterm":
            code = old.terminate()
            assert code == 0, f"the old worker exited with {code} on SIGTERM\n{old.tail()}"
        else:
            old.kill_group()
        assert old.stopped_at is not None
        in_redis = open_batches(client)  # what the old worker (or the new one) had in flight
        answered_at_stop = answered(client, stream)
        # Those not answered yet (a batch is released a moment after its answer is out).
        left_open = {cid: ids for cid, ids in in_redis.items() if not set(ids) & answered_at_stop}
        old_started = old.batches("run created")
        old_published = old.batches("published")
        old_published_beside_new = old.batches("published", since=new_started_at)

        # 4. The conversations go on with the new release alone.
        for i in range(CONVERSATIONS):
            send(i, 4)
        all_ids = [e for ids in sent.values() for e in ids]
        try:
            wait_until(lambda: set(all_ids) <= answered(client, stream), 90, 0.2,
                       what=f"answers to all {len(all_ids)} events")
            wait_until(lambda: not leftovers(client), 20, 0.1, what="no batch, lock or schedule left in Redis")
        except AssertionError as exc:
            missing = [e for e in all_ids if e not in answered(client, stream)]
            raise AssertionError(f"{exc}; unanswered: {[(e, contents[e]) for e in missing][:5]}; "
                                 f"left in Redis: {leftovers(client)[:10]}\n{old.tail()}\n{new.tail()}") from None
        code = new.terminate()
        assert code == 0, f"the new worker exited with {code} on SIGTERM\n{new.tail()}"

        # --- exactly once, in order, every one completed ---
        published = entries(client, stream)
        check_exactly_once_in_order(published, sent)
        failed = [e for e in published if e["type"] != "run.completed"]
        assert not failed, f"{len(failed)} entries not run.completed, e.g. {failed[:2]}"
        assert client.xlen("aw:deadletter") == 0, client.xrange("aw:deadletter", count=3)
        dead_messages = [k.decode() for k in client.scan_iter(match="dramatiq:*.XQ*")]
        assert not dead_messages, f"Dramatiq dead-lettered messages: {dead_messages}"

        # --- each conversation kept one thread, holding each user message exactly once, in order ---
        by_event = {e: entry for entry in published for e in entry["event_ids"]}
        for cid, ids in sent.items():
            thread_ids = {by_event[e]["thread_id"] for e in ids}
            assert len(thread_ids) == 1 and None not in thread_ids, f"{cid}: threads {thread_ids}"
            (thread_id,) = thread_ids
            on_thread = threads.user_texts(emulator.base_url, assistant_backend, thread_id)
            assert on_thread == [contents[e] for e in ids], f"{cid} on {thread_id}: {on_thread}"
        # Tools ran across the releases: each tool call's result is in the answer of its batch.
        for event_id, content in contents.items():
            expected = tool_answer(content)
            if expected is not None:
                text = " ".join(m["text"] for m in by_event[event_id]["messages"])
                assert expected in text, f"{content!r} answered with {text!r}"

        # --- both releases did real work ---
        assert len(runs_by_old_alone) >= MOST, "the old worker alone created too few runs"
        assert old_started and old_published, f"the old worker logged no runs or answers\n{old.tail()}"
        stopped_at = old.stopped_at
        open_ids = {e for ids in left_open.values() for e in ids}
        assert left_open, "no batch was in flight when the old worker stopped"
        # Everything left open was answered after the stop, hence by the new worker, which logged it.
        published_at = {e: dt.datetime.fromisoformat(by_event[e]["published_at"]).timestamp() for e in open_ids}
        assert all(at >= stopped_at - 0.5 for at in published_at.values()), published_at
        new_published = new.batches("published")
        assert set(left_open.values()) <= new_published, "batches left open were not answered by the new worker"
        # Among them, batches whose run the old release created: the new one followed them to the end.
        taken_over = set(left_open.values()) & old_started
        assert taken_over, (f"no batch the old worker started was open at the stop: {left_open}\n"
                            f"{old.tail()}")
        for tree in (old, new):
            problems = tree.problems()
            assert not problems, f"the {tree.name} worker logged errors:\n" + "\n".join(problems[:20])
        print(f"\n[{assistant_backend}/{stop}] events={len(all_ids)} entries={len(published)} "
              f"runs_by_old_alone={len(runs_by_old_alone)} old_published={len(old_published)} "
              f"(beside_new={len(old_published_beside_new)}) "
              f"new_published={len(new_published)} open_at_stop={len(left_open)} "
              f"started_by_old_finished_by_new={len(taken_over)}")
