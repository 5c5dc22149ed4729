"""`assistant-worker run` as a process tree: a start that fails leaves no process behind, a
SIGKILLed worker takes its Dramatiq processes with it, and Ctrl-C under `make stack`
(honcho signalling the whole group) drains the worker as a pod's SIGTERM does.

Every process a test starts carries a marker in its environment (inherited by every
descendant, whatever its process group or parent): "nothing left" means no process on the
machine has it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from emulator import EmulatorConfig, EmulatorServer
from tests.conftest import free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MARKER = "AW_TEST_PROCESS_MARKER"


def marked(marker: str) -> list[int]:
    """The live processes whose environment carries `marker` (a zombie's environment is empty)."""
    wanted = f"{MARKER}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if wanted in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:  # gone meanwhile, or not ours to read
                continue
    return found


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:  # the field after the state: ppid
                found.append(int(entry.name))
    return found


def none_left(marker: str) -> None:
    wait_until(lambda: not marked(marker), 15, 0.1, what=f"every process of the test to exit ({marked(marker)})")


@pytest.fixture
def marker() -> Iterator[str]:
    value = uuid.uuid4().hex
    yield value
    for pid in marked(value):  # a failed test does not leave its processes to the next ones
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorConfig(rejected_keys=frozenset({"sk-wrong"})), port=0) as server:
        yield server


def worker_env(marker: str, redis_url: str, emulator: EmulatorServer, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, MARKER: marker, "REDIS_URL": redis_url, "OPENAI_BASE_URL": emulator.base_url,
            "OPENAI_API_KEY": "sk-good", "ASSISTANT_ID": "asst_default", "METRICS_PORT": str(free_port()),
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom"), "WORKER_PROCESSES": "2", **extra}


def run_to_the_end(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "assistant-worker"), "run"], env=env, capture_output=True, text=True,
                          timeout=60, cwd=ROOT)


def test_a_metrics_port_in_use_fails_in_one_line_and_leaves_no_process(
        marker: str, redis_url: str, emulator: EmulatorServer, tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("0.0.0.0", 0))
        held.listen()
        port = held.getsockname()[1]
        done = run_to_the_end(worker_env(marker, redis_url, emulator, tmp_path, METRICS_PORT=str(port)))
    assert done.returncode == 69, done
    assert done.stderr.splitlines() == [
        f"assistant-worker: METRICS_PORT {port} is in use: stop what listens there or set METRICS_PORT to a free port"]
    none_left(marker)


@pytest.mark.parametrize(("setting", "value", "named"), [
    ("WORKER_PROCESSES", "0", "WORKER_PROCESSES"),  # refused by the settings
    ("OPENAI_API_KEY", "sk-wrong", "OPENAI_API_KEY"),  # refused by the API, at the start-up probe
])
def test_a_bad_setting_fails_in_one_line_and_leaves_no_process(
        marker: str, redis_url: str, emulator: EmulatorServer, tmp_path: Path,
        setting: str, value: str, named: str) -> None:
    done = run_to_the_end(worker_env(marker, redis_url, emulator, tmp_path, **{setting: value}))
    assert done.returncode == 78, done
    (line,) = done.stderr.splitlines()
    assert named in line and "Traceback" not in line
    none_left(marker)


def test_a_sigkilled_worker_takes_its_dramatiq_processes_with_it(
        marker: str, redis_url: str, emulator: EmulatorServer, tmp_path: Path) -> None:
    """As when a pod's process group is SIGKILLed (or honcho's, after its grace): the Dramatiq
    processes, in a session of their own (so that a signal to the group reaches them once),
    do not outlive it."""
    env = worker_env(marker, redis_url, emulator, tmp_path)
    pod = subprocess.Popen([str(BIN / "assistant-worker"), "run"], env=env, cwd=ROOT, start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        (main,) = wait_until(lambda: children(pod.pid), 30, 0.1, what="the Dramatiq main process")
        wait_until(lambda: len(children(main)) == 2, 30, 0.1, what="two Dramatiq worker processes")
        assert os.getpgid(main) != os.getpgid(pod.pid)  # out of reach of a signal to the pod's group
        heartbeats = tmp_path / "prom"
        wait_until(lambda: len(list(heartbeats.glob("health-*"))) == 2, 30, 0.1, what="both booted")
        os.killpg(pod.pid, signal.SIGKILL)
    finally:
        pod.wait(30)
    none_left(marker)


def test_ctrl_c_under_honcho_drains_the_worker_as_a_sigterm_does(marker: str, tmp_path: Path) -> None:
    """`make stack` is honcho on the Procfile; Ctrl-C sends SIGINT to honcho's group and honcho
    SIGTERMs each line's whole group. Each Dramatiq worker process must see one SIGTERM
    (`Stopping worker process...`, a drain), not two (`Killing worker process...`)."""
    redis_port, emulator_port = free_port(), free_port()
    env_file = tmp_path / "stack.env"
    env_file.write_text("\n".join([
        f"REDIS_PORT={redis_port}", f"REDIS_URL=redis://127.0.0.1:{redis_port}/0",
        f"EMULATOR_PORT={emulator_port}", f"OPENAI_BASE_URL=http://127.0.0.1:{emulator_port}/v1",
        "OPENAI_API_KEY=sk-local", "ASSISTANT_ID=asst_default", f"METRICS_PORT={free_port()}",
        f"PROMETHEUS_MULTIPROC_DIR={tmp_path / 'prom'}", "WORKER_PROCESSES=2",
        "LOG_LEVEL=INFO", "LOG_FORMAT=json"]) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "OPENAI_"))}
    env |= {MARKER: marker, "PATH": os.pathsep.join([str(BIN), env.get("PATH", "")])}
    log = tmp_path / "honcho.log"
    with log.open("wb") as out:
        honcho = subprocess.Popen([str(BIN / "honcho"), "-e", str(env_file), "-f", str(ROOT / "Procfile"),
                                   "-d", str(ROOT), "start"], stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True, env=env)
    try:
        wait_until(lambda: log.read_text().count("Worker process is ready for action.") == 2, 60, 0.1,
                   what="two Dramatiq worker processes ready")
        os.killpg(honcho.pid, signal.SIGINT)  # what a terminal does on Ctrl-C
        honcho.wait(30)
    finally:
        if honcho.poll() is None:
            os.killpg(honcho.pid, signal.SIGKILL)
            honcho.wait(10)
    text = log.read_text()
    assert "Killing worker process" not in text, text[-3000:]
    assert text.count("Stopping worker process...") == 2, text[-3000:]
    assert text.count("Worker has been shut down.") == 2, text[-3000:]
    assert "worker.1 stopped" in text
    none_left(marker)
