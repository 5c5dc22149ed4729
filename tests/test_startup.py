"""What is checked at start (worker/startup.py): a wrong key, assistant, model or base URL
stops `assistant-worker run` at once with one line naming the setting (exit 78); an API that
does not answer yet only makes the pod not ready, until it does."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from emulator import EmulatorConfig, EmulatorServer
from tests.conftest import free_port
from worker import startup
from worker.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
WRONG_KEY = "sk-wrong-key"


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorConfig(rejected_keys=frozenset({WRONG_KEY})), port=0) as server:
        yield server


def settings(emulator: EmulatorServer, **values: object) -> Settings:
    base: dict[str, object] = {"openai_base_url": emulator.base_url, "openai_api_key": "sk-good",
                               "assistant_id": "asst_default"}
    return Settings(**(base | values))  # type: ignore[arg-type]  # test values


def run_worker(env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "worker.cli", "run"],
                          env={**os.environ, "METRICS_PORT": "0", **env}, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def test_the_emulator_refuses_a_wrong_key_and_knows_its_models(emulator: EmulatorServer) -> None:
    wrong = openai.OpenAI(base_url=emulator.base_url, api_key=WRONG_KEY, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as refused:
        wrong.models.list()
    assert refused.value.code == "invalid_api_key"
    good = openai.OpenAI(base_url=emulator.base_url, api_key="sk-good", max_retries=0)
    assert good.models.retrieve("gpt-4o").id == "gpt-4o"
    with pytest.raises(openai.NotFoundError):
        good.models.retrieve("gpt-nonexistent")
    wrong.close()
    good.close()


def test_a_probe_passes_when_the_api_answers(emulator: EmulatorServer) -> None:
    assert startup.probe(settings(emulator)) == startup.Probe()
    assert startup.probe(settings(emulator, assistant_backend="responses")) == startup.Probe()
    assert startup.probe(settings(emulator, assistant_id=None)) == startup.Probe()  # the key and URL only


@pytest.mark.parametrize(("values", "named"), [
    ({"openai_api_key": WRONG_KEY}, "OPENAI_API_KEY"),
    ({"assistant_id": "asst_nobody"}, "ASSISTANT_ID"),
    ({"assistant_backend": "responses", "responses_model": "gpt-nonexistent"}, "RESPONSES_MODEL"),
])
def test_a_definite_refusal_names_the_setting(emulator: EmulatorServer, values: dict[str, object], named: str) -> None:
    result = startup.probe(settings(emulator, **values))
    assert result.fatal is not None and result.fatal.startswith(named), result
    assert result.problem is None


def test_a_base_url_without_v1_is_named(emulator: EmulatorServer) -> None:
    result = startup.probe(settings(emulator, openai_base_url=emulator.url))
    assert result.fatal is not None and result.fatal.startswith("OPENAI_BASE_URL") and "/v1" in result.fatal


def test_an_api_that_does_not_answer_yet_is_not_ready_not_fatal(emulator: EmulatorServer,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    closed = startup.probe(Settings(openai_base_url=f"http://127.0.0.1:{free_port()}/v1"))
    assert closed.fatal is None and closed.problem is not None and "does not answer" in closed.problem
    emulator.configure(fault_500=1.0)
    failing = startup.probe(settings(emulator))
    assert failing.fatal is None and failing.problem is not None and "HTTP 500" in failing.problem
    monkeypatch.setattr(startup, "REPROBE_SECONDS", 0.0)
    check = startup.StartupCheck(settings(emulator), failing)
    assert check.problem() is not None
    emulator.configure(fault_500=0.0)
    assert check.problem() is None
    emulator.configure(fault_500=1.0)
    assert check.problem() is None, "passed once: later checks are READY_CHECK_API's"


def test_the_worker_stops_at_once_on_a_wrong_key(emulator: EmulatorServer, redis_url: str) -> None:
    done = run_worker({"OPENAI_BASE_URL": emulator.base_url, "OPENAI_API_KEY": WRONG_KEY,
                       "ASSISTANT_ID": "asst_default", "REDIS_URL": redis_url})
    assert done.returncode == 78
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("assistant-worker: OPENAI_API_KEY is refused") and "invalid_api_key" in line
    assert "sk-wrong" not in line, "the key itself is never printed"


def test_a_base_url_that_is_not_a_url_stops_the_worker_with_one_line() -> None:
    done = run_worker({"OPENAI_BASE_URL": "notaurl"})
    assert done.returncode == 78
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("assistant-worker: invalid setting OPENAI_BASE_URL: ") and "notaurl" in line
