"""The README's walkthrough as a test runs it: its marked command blocks, a clean clone of
the repository with the stack of `make stack` on free ports, and its commands run there.

The README marks each block with `<!-- walkthrough: NAME -->` before the fenced block:
`stack` (terminal 1: `make stack`), `replies` (terminal 2: ends with a command that runs
until Ctrl-C) and `send` (terminal 3: commands that end by themselves).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import free_port, wait_until
from worker.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"<!-- walkthrough: (\w+) -->\n```bash\n(.*?)```", re.DOTALL)
VENV_PYTHON = ".venv/bin/python"
# The ports local.env gives the stack's Redis and emulator: the test puts free ones instead.
FIXED_PORTS = ("6390", "8090")


def walkthrough_blocks(readme: str) -> dict[str, list[list[str]]]:
    """Block name -> its commands, each split as the shell would (comments dropped)."""
    blocks: dict[str, list[list[str]]] = {}
    for name, body in BLOCK.findall(readme):
        assert name not in blocks, f"two walkthrough blocks named {name}"
        blocks[name] = [words for line in body.splitlines() if (words := shlex.split(line, comments=True))]
    return blocks


def stack_recipe(makefile: str) -> str:
    """The recipe of the Makefile's `stack` target, its lines joined."""
    match = re.search(r"^stack:[^\n]*\n((?:\t[^\n]*\n)+)", makefile, re.MULTILINE)
    assert match, "the Makefile has no stack target"
    return match.group(1)


def clean_environment() -> dict[str, str]:
    """This process's environment without any setting the stack or the commands read, so
    that only the env file (and what the README exports) decides."""
    names = {name.upper() for name in Settings.model_fields} | {"AW_ENV_FILE", "REDIS_PORT", "EMULATOR_PORT"}
    env = {k: v for k, v in os.environ.items() if k.upper() not in names and not k.startswith("EMULATOR_")}
    return env


@dataclass
class Clone:
    """A clean clone of the repository (its committed state) with a stack's settings."""

    path: Path
    redis_port: int = field(default_factory=free_port)
    emulator_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)

    @classmethod
    def make(cls, into: Path) -> Clone:
        done = subprocess.run(["git", "clone", "--quiet", str(ROOT), str(into)],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        clone = cls(into)
        clone.write_env_file()
        return clone

    def write_env_file(self) -> None:
        """local.env as committed, with free ports for Redis, the emulator and the metrics."""
        env_file = self.path / "local.env"
        text = env_file.read_text()
        for fixed in FIXED_PORTS:
            assert fixed in text, f"local.env no longer uses port {fixed}: update tests/walkthrough.py"
        text = text.replace("6390", str(self.redis_port)).replace("8090", str(self.emulator_port))
        text = re.sub(r"^METRICS_PORT=.*\n?", "", text, flags=re.MULTILINE)
        env_file.write_text(text.rstrip("\n") + f"\nMETRICS_PORT={self.metrics_port}\n")

    def environment(self) -> dict[str, str]:
        """The clone's code first on the path, this interpreter's scripts first on PATH."""
        env = clean_environment()
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.path), env.get("PYTHONPATH")]))
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env["PYTHONUNBUFFERED"] = "1"
        return env


def readyz(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@contextmanager
def running_stack(clone: Clone, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`honcho -e local.env start` in the clone (what `make stack` runs, without the install),
    in a process group of its own; ready when the worker's /readyz answers 200. The whole
    group is stopped at the end."""
    with open(log, "wb") as out:
        stack = subprocess.Popen([sys.executable, "-m", "honcho", "-e", "local.env", "start"],
                                 cwd=clone.path, env=clone.environment(), stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_until(lambda: stack.poll() is not None or readyz(clone.metrics_port), timeout=90,
                       interval=0.2, what="the stack's /readyz")
            assert stack.poll() is None, f"the stack exited:\n{log.read_text()[-3000:]}"
            yield stack
        finally:
            stop_group(stack)


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process's group (honcho and all it started), SIGKILL what is left."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(40)
    finally:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def command_line(words: list[str]) -> list[str]:
    """A README command as the test runs it: this interpreter for the clone's missing venv."""
    return [sys.executable, *words[1:]] if words[0] == VENV_PYTHON else words


def exported(words: list[str]) -> tuple[str, str] | None:
    """`export NAME=VALUE` -> (NAME, VALUE)."""
    if words[0] != "export":
        return None
    name, _, value = words[1].partition("=")
    return name, value


def option(words: list[str], name: str) -> str | None:
    return words[words.index(name) + 1] if name in words else None
