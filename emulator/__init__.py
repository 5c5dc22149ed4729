"""An emulator of the OpenAI Assistants v2 HTTP API (and the Responses and Conversations APIs, background
mode) for development, tests and benchmarks.

    from emulator import EmulatorServer, EmulatorConfig

    with EmulatorServer(EmulatorConfig(run_seconds=0.2)) as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key="test")

Command line: `assistant-emulator --help`. Rules, flags and admin endpoints: README.md.
"""

from .config import ConfigError, EmulatorConfig
from .server import EmulatorServer

__all__ = ["ConfigError", "EmulatorConfig", "EmulatorServer"]
