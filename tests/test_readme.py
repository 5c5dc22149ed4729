"""The README reads in ten minutes and its walkthrough works as written.

The walkthrough test clones the repository the tests run from (`git clone`: the committed
state, so commit before running it), starts `make stack`'s Procfile stack in the clone with
local.env's settings on free ports, and runs the README's commands there in order."""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.conftest import wait_until
from tests.walkthrough import (
    Clone,
    clean_environment,
    command_line,
    exported,
    option,
    running_stack,
    stack_recipe,
    walkthrough_blocks,
)
from worker import keys

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
MAX_LINES = 260
LINK = re.compile(r"(?<!!)\[([^\]]+)\]\(([^)\s]+)\)")
# What the README says the tool step shows (the emulator lists each tool's output).
TOOL_RESULT = 'get_weather -> {"city": "Paris", "temperature": 21, "unit": "c"}'


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def headings(text: str) -> list[str]:
    body = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    return re.findall(r"^#{1,6} (.+)$", body, flags=re.MULTILINE)


# --- its shape ----------------------------------------------------------------------------

def test_the_readme_is_short() -> None:
    assert len(README.splitlines()) <= MAX_LINES


def test_the_table_of_contents_lists_every_section() -> None:
    contents = re.search(r"^## Contents\n\n((?:- .*\n)+)", README, flags=re.MULTILINE)
    assert contents, "no ## Contents list"
    listed = LINK.findall(contents.group(1))
    sections = re.findall(r"^## (.+)$", README, flags=re.MULTILINE)
    sections.remove("Contents")
    assert [text for text, _ in listed] == sections
    assert [target for _, target in listed] == [f"#{slug(s)}" for s in sections]


@pytest.mark.parametrize("page", [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))],
                         ids=lambda p: p.name)
def test_every_link_resolves_to_a_file_and_a_heading(page: Path) -> None:
    targets = [t for _, t in LINK.findall(page.read_text()) if not re.match(r"^(https?:|mailto:)", t)]
    assert [target for target in targets if not _resolves(page, target)] == []


def _resolves(page: Path, target: str) -> bool:
    """A relative link names a file in the repository and, after `#`, one of its headings."""
    path, _, anchor = target.partition("#")
    resolved = (page.parent / path).resolve() if path else page
    if not resolved.is_relative_to(ROOT) or not resolved.exists():
        return False
    return not anchor or resolved.suffix != ".md" or anchor in map(slug, headings(resolved.read_text()))


def test_every_docs_page_is_linked_from_the_readme() -> None:
    pages = {f"docs/{page.name}" for page in (ROOT / "docs").glob("*.md")}
    linked = {target.partition("#")[0] for _, target in LINK.findall(README)}
    assert pages - linked == set()


def test_the_readme_shows_the_walkthroughs_tool_as_shipped() -> None:
    block = re.search(r"```python\n(from typing import Literal\n.*?)```", README, flags=re.DOTALL)
    assert block, "no tool example in the README"
    shipped = (ROOT / "examples" / "tools.py").read_text()
    assert [line for line in block.group(1).splitlines() if line not in shipped] == []
    assert "WORKER_TOOL_MODULES=examples.tools" in README


# --- the walkthrough, from a clean clone --------------------------------------------------

def test_the_walkthrough_blocks_are_marked() -> None:
    blocks = walkthrough_blocks(README)
    assert list(blocks) == ["stack", "replies", "send"]
    assert blocks["stack"] == [["make", "stack"]]
    assert "honcho -e local.env start" in stack_recipe((ROOT / "Makefile").read_text())
    assert blocks["replies"][-1][-3:] == ["tail", "--group", "chat"]


@pytest.mark.timeout(420)
def test_the_walkthrough_runs_from_a_clean_clone(tmp_path: Path) -> None:
    blocks = walkthrough_blocks(README)
    clone = Clone.make(tmp_path / "clone")
    _the_cli_reads_the_env_file(clone)
    log = tmp_path / "stack.log"
    with running_stack(clone, log):
        env = clone.environment()
        tail, tail_out = _start_replies(clone, blocks["replies"], env, tmp_path)
        try:
            sent = _run_sends(clone, blocks["send"], env)
            _the_reader_saw_everything(tail_out, sent)
        finally:
            tail.send_signal(signal.SIGINT)  # Ctrl-C
            code = tail.wait(20)
        assert code == 0, (tmp_path / "tail.err").read_text()
    assert "tool called" in log.read_text()


def _the_cli_reads_the_env_file(clone: Clone) -> None:
    """Without AW_ENV_FILE support the commands would talk to another Redis (6379): stop
    before any runs."""
    shown = subprocess.run([sys.executable, "-m", "producers", "send", "--help"], cwd=clone.path,
                           env=clone.environment(), capture_output=True, text=True, timeout=60)
    assert "AW_ENV_FILE" in shown.stdout, "the producer command line does not name AW_ENV_FILE"


def _start_replies(clone: Clone, commands: list[list[str]], env: dict[str, str],
                   tmp_path: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """Terminal 2: the exports, then the reader left running; ready once it says so."""
    *exports, reader = commands
    for words in exports:
        name, value = exported(words) or pytest.fail(f"not an export: {words}")
        env[name] = value
    out, err = tmp_path / "tail.out", tmp_path / "tail.err"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        tail = subprocess.Popen(command_line(reader), cwd=clone.path, env=env, stdout=stdout, stderr=stderr)
    wait_until(lambda: tail.poll() is not None or "tail: reading" in err.read_text(), timeout=60,
               what="the reply reader to start")
    assert tail.poll() is None, err.read_text()
    return tail, out


def _run_sends(clone: Clone, commands: list[list[str]], env: dict[str, str]) -> list[dict[str, Any]]:
    """Terminal 3, in order; returns each send's event id, whether it called the tool, whether it was cancelled."""
    env = dict(env)
    sent: list[dict[str, Any]] = []
    for words in commands:
        if (pair := exported(words)) is not None:
            env[pair[0]] = pair[1]
            continue
        if "cancel" in words:
            _wait_for_active_batch(clone, option(words, "--conversation"))
        done = subprocess.run(command_line(words), cwd=clone.path, env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, f"{shlex.join(words)}\n{done.stdout}\n{done.stderr}"
        if "send" in words:
            sent.append(_sent(words, done.stdout))
        elif "cancel" in words:
            sent[-1]["cancelled"] = True
    assert [s["tool"] for s in sent].count(True) == 1 and [s["cancelled"] for s in sent].count(True) == 1
    return sent


def _sent(words: list[str], stdout: str) -> dict[str, Any]:
    """A send's output: the event id, then (with --stream) the reply's text as it was
    written, then (with --wait or --stream) the entry that answered it."""
    event_id, _, rest = stdout.partition("\n")
    tool = "call:get_weather" in words[-1]
    streamed = None
    if "--stream" in words:  # the text, its line ended, then the entry (indented JSON: "{" alone on a line)
        streamed, _, body = rest.rpartition("\n{\n")
        rest = "{\n" + body
    if "--wait" in words or "--stream" in words:
        entry = json.loads(rest)
        assert entry["type"] == "run.completed" and event_id in entry["event_ids"], entry
        text = "\n\n".join(m["text"] for m in entry["messages"])
        assert streamed in (None, text), (streamed, text)
        assert (TOOL_RESULT in text and TOOL_RESULT in README) if tool else "x = 1" in text, text
    return {"event_id": event_id, "tool": tool, "cancelled": False}


def _wait_for_active_batch(clone: Clone, conversation: str | None) -> None:
    """A person types the cancel after the worker took the message up; the test waits for it."""
    assert conversation
    client = redis.Redis(port=clone.redis_port)
    try:
        wait_until(lambda: client.exists(keys.batch(conversation)), timeout=30,
                   what="the slow message's batch")
    finally:
        client.close()


def _the_reader_saw_everything(tail_out: Path, sent: list[dict[str, Any]]) -> None:
    """Terminal 2 printed an entry for every message: completed, and the slow one cancelled."""
    def entries() -> dict[str, str]:
        lines = [json.loads(line) for line in tail_out.read_text().splitlines() if line.strip()]
        return {event_id: line["data"]["type"] for line in lines for event_id in line["data"]["event_ids"]}

    expected = {s["event_id"]: "run.cancelled" if s["cancelled"] else "run.completed" for s in sent}
    wait_until(lambda: entries() == expected, timeout=60, interval=0.2, what="the reader's entries")


def test_the_clean_environment_drops_every_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("AW_ENV_FILE", "elsewhere.env")
    assert {"REDIS_URL", "AW_ENV_FILE"} & set(clean_environment()) == set()
