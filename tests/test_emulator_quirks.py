"""The emulator's server-quirk switches, through the real `openai` SDK over HTTP: a 500 on runs
created with more than one message (`multi_message_500`), an outage window whose requests get no
answer at all (`outage_after_seconds`, `outage_seconds`), and a key revoked at runtime
(`rejected_keys`). Windows are driven by a manual clock, so no test waits on real time."""

from __future__ import annotations

import json
import socket
import urllib.request
from collections.abc import Callable
from typing import Any

import openai
import pytest

from emulator import EmulatorConfig, EmulatorServer
from emulator.__main__ import build_parser, config_from
from tests.emulator_fixtures import admin, emulator, make_emulator, openai_client  # noqa: F401 - pytest fixtures
from tests.test_emulator_responses import ManualClock, clocked  # noqa: F401 - `clocked` is a fixture

pytestmark = pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")
MakeEmulator = Callable[..., EmulatorServer]
Clocked = Callable[..., tuple[EmulatorServer, ManualClock]]
TWO: list[Any] = [{"role": "user", "content": "first"}, {"role": "user", "content": "second"}]


def quirks(srv: EmulatorServer) -> dict[str, int]:
    counts: dict[str, int] = admin(srv, "stats")["faults_injected"]["quirks"]
    return counts


# -- multi_message_500 ---------------------------------------------------------------------------


def test_a_run_with_two_additional_messages_gets_a_500_and_changes_nothing(make_emulator: MakeEmulator) -> None:  # noqa: F811 - the imported fixture
    srv = make_emulator(multi_message_500=True)
    client = openai_client(srv)
    thread = client.beta.threads.create()
    with pytest.raises(openai.InternalServerError) as refused:
        client.beta.threads.runs.create(thread.id, assistant_id="asst_default", additional_messages=TWO)
    assert refused.value.status_code == 500
    assert refused.value.body == {"message": "The server had an error while processing your request. Sorry about "
                                  "that!", "type": "server_error", "param": None, "code": "server_error"}
    assert client.beta.threads.messages.list(thread.id).data == []
    assert client.beta.threads.runs.list(thread.id).data == []
    assert quirks(srv) == {"multi_message_500": 1, "outage": 0}
    one = client.beta.threads.runs.create(thread.id, assistant_id="asst_default", additional_messages=TWO[:1])
    assert one.status == "queued" and len(client.beta.threads.messages.list(thread.id).data) == 1
    client.close()


def test_every_answer_is_counted_the_sdks_retries_too(make_emulator: MakeEmulator) -> None:  # noqa: F811 - the imported fixture
    srv = make_emulator(multi_message_500=True)
    client = openai_client(srv, max_retries=2)
    thread = client.beta.threads.create()
    with pytest.raises(openai.InternalServerError):
        client.beta.threads.runs.create(thread.id, assistant_id="asst_default", additional_messages=TWO)
    assert quirks(srv)["multi_message_500"] == 3
    assert admin(srv, "stats")["calls"]["createRun"] == 3
    client.close()


def test_create_thread_and_run_with_two_messages_creates_no_thread(make_emulator: MakeEmulator) -> None:  # noqa: F811 - the imported fixture
    srv = make_emulator(multi_message_500=True)
    client = openai_client(srv)
    with pytest.raises(openai.InternalServerError):
        client.beta.threads.create_and_run(assistant_id="asst_default", thread={"messages": TWO})
    assert srv.stats()["objects"]["threads"] == 0 and srv.stats()["runs"]["total"] == 0
    run = client.beta.threads.create_and_run(assistant_id="asst_default", thread={"messages": TWO[:1]})
    assert [m.role for m in client.beta.threads.messages.list(run.thread_id).data] == ["user"]
    empty = client.beta.threads.create_and_run(assistant_id="asst_default")  # no messages at all
    assert empty.status == "queued"
    assert quirks(srv)["multi_message_500"] == 1
    client.close()


def test_multi_message_500_is_off_by_default_and_switches_at_runtime(emulator: EmulatorServer) -> None:  # noqa: F811 - the imported fixture
    client = openai_client(emulator)
    run = client.beta.threads.create_and_run(assistant_id="asst_default", thread={"messages": TWO})
    assert len(client.beta.threads.messages.list(run.thread_id).data) == 2
    assert admin(emulator, "config", {"multi_message_500": True})["multi_message_500"] is True
    with pytest.raises(openai.InternalServerError):
        client.beta.threads.create_and_run(assistant_id="asst_default", thread={"messages": TWO})
    client.close()


# -- outage window -------------------------------------------------------------------------------


def test_an_outage_resets_every_v1_connection_and_ends(clocked: Clocked) -> None:  # noqa: F811 - the imported fixture
    srv, clock = clocked()
    client = openai_client(srv)
    assert client.models.list().data
    srv.configure(outage_after_seconds=10, outage_seconds=5)  # counted from this change
    clock.advance(9.9)
    thread = client.beta.threads.create()
    clock.advance(0.1)
    with pytest.raises(openai.APIConnectionError):
        client.beta.threads.create()
    with pytest.raises(openai.APIConnectionError):
        client.beta.threads.messages.create(thread.id, role="user", content="during the outage")
    assert admin(srv, "stats")["objects"]["threads"] == 1, "a request in the outage is not applied"
    assert admin(srv, "stats")["outage"]["active"] is True, "the admin endpoints keep answering"
    assert admin(srv, "config", {"fault_429": 0.0})["outage_seconds"] == 5
    with pytest.raises(openai.APIConnectionError):
        client.models.list()  # a change of another field does not move the window
    clock.advance(4.9)
    with pytest.raises(openai.APIConnectionError):
        client.models.list()
    clock.advance(0.1)
    assert client.beta.threads.messages.list(thread.id).data == []
    assert quirks(srv) == {"multi_message_500": 0, "outage": 4}
    assert admin(srv, "stats")["outage"]["active"] is False
    client.close()


def test_an_outage_gives_no_http_answer_at_all(clocked: Clocked) -> None:  # noqa: F811 - the imported fixture
    """Not even a status line: the peer sees its connection reset, as behind a dead balancer."""
    srv, _ = clocked(outage_seconds=60)  # counted from the server's start
    with socket.create_connection((srv.host, srv.port), timeout=5) as sock:
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: emulator\r\nAuthorization: Bearer sk-x\r\n\r\n")
        with pytest.raises(ConnectionResetError):
            while sock.recv(4096):  # whatever arrives, the connection must end in a reset
                continue
    request = urllib.request.Request(f"{srv.url}/_emulator/health")
    with urllib.request.urlopen(request, timeout=5) as reply:
        assert json.load(reply) == {"ok": True}


def test_an_outage_from_the_start_is_counted_from_the_start(clocked: Clocked) -> None:  # noqa: F811 - the imported fixture
    srv, clock = clocked(outage_after_seconds=2, outage_seconds=1)
    client = openai_client(srv)
    assert client.models.list().data
    clock.advance(2)
    with pytest.raises(openai.APIConnectionError):
        client.models.list()
    clock.advance(1)
    assert client.models.list().data
    client.close()


# -- a key revoked at runtime --------------------------------------------------------------------


def test_a_key_can_be_revoked_and_restored_at_runtime(emulator: EmulatorServer) -> None:  # noqa: F811 - the imported fixture
    worker, other = openai_client(emulator, api_key="sk-worker"), openai_client(emulator, api_key="sk-other")
    assert worker.models.list().data
    assert admin(emulator, "config", {"rejected_keys": ["sk-worker"]})["rejected_keys"] == ["sk-worker"]
    with pytest.raises(openai.AuthenticationError) as refused:
        worker.beta.threads.create()
    assert refused.value.code == "invalid_api_key"
    assert other.beta.threads.create().id
    admin(emulator, "config", {"rejected_keys": "sk-other, sk-worker"})  # a comma-separated list, as in the env
    with pytest.raises(openai.AuthenticationError):
        other.models.list()
    admin(emulator, "config", {"rejected_keys": []})
    assert worker.models.list().data and other.models.list().data
    worker.close()
    other.close()


# -- configuration -------------------------------------------------------------------------------


def test_quirk_switches_from_env_and_flags() -> None:
    env = {"EMULATOR_MULTI_MESSAGE_500": "1", "EMULATOR_OUTAGE_AFTER_SECONDS": "15",
           "EMULATOR_OUTAGE_SECONDS": "120"}
    config = config_from(build_parser().parse_args([]), env)
    assert (config.multi_message_500, config.outage_after_seconds, config.outage_seconds) == (True, 15.0, 120.0)
    flags = ["--no-multi-message-500", "--outage-seconds", "30", "--outage-after-seconds", "2"]
    config = config_from(build_parser().parse_args(flags), env)
    assert (config.multi_message_500, config.outage_after_seconds, config.outage_seconds) == (False, 2.0, 30.0)
    defaults: dict[str, Any] = EmulatorConfig().as_dict()
    assert (defaults["multi_message_500"], defaults["outage_seconds"]) == (False, 0.0)
    with pytest.raises(ValueError, match="outage_seconds"):
        EmulatorConfig(outage_seconds=-1)
