"""Pytest helpers around the API emulator, for any test that needs a live Assistants API.

Import the fixtures into a test module (or list this module in a conftest's `pytest_plugins`):

    from tests.emulator_fixtures import emulator, make_emulator, wait_until  # noqa: F401 - pytest fixtures

`emulator` is a started server with short runs (0.2 s); `make_emulator(**config)` starts one
with any `EmulatorConfig` fields; `openai_client(srv)` gives an SDK client without retries.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import openai
import pytest

from emulator import EmulatorConfig, EmulatorServer
from tests.conftest import wait_until  # noqa: F401 - re-exported for the emulator tests

T = TypeVar("T")
FAST_RUN_SECONDS = 0.2


def openai_client(srv: EmulatorServer, **kwargs: Any) -> openai.OpenAI:
    options: dict[str, Any] = {"api_key": "test", "max_retries": 0, "timeout": 10.0}
    options.update(kwargs)
    return openai.OpenAI(base_url=srv.base_url, **options)


def admin(srv: EmulatorServer, path: str, body: dict[str, Any] | None = None) -> Any:
    """Call an admin endpoint (`stats`, `runs`, `config`, `reset`) over HTTP; POST when `body` is given."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{srv.url}/_emulator/{path}", data=data, method="GET" if data is None else "POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture
def make_emulator() -> Iterator[Callable[..., EmulatorServer]]:
    """A factory of started emulators (each stopped at the end of the test)."""
    servers: list[EmulatorServer] = []

    def make(**config: Any) -> EmulatorServer:
        config.setdefault("run_seconds", FAST_RUN_SECONDS)
        srv = EmulatorServer(EmulatorConfig().replace(**config)).start()
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        srv.stop()


@pytest.fixture
def emulator(make_emulator: Callable[..., EmulatorServer]) -> EmulatorServer:
    """A started strict emulator whose runs take 0.2 s."""
    return make_emulator()
