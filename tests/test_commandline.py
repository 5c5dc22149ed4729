"""The command lines as a new user meets them (issue 14): real `python -m producers` and
`assistant-worker` processes against a private Redis. Where settings come from (option,
environment, env file), one line and a defined exit code for each mistake, and commands that
say what they did."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from emulator import EmulatorConfig
from tests.conftest import free_port, wait_until
from tests.stack import Stack, running_stack
from worker import keys
from worker.events import MAX_CONTENT_CHARS

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(sys.executable).parent / "assistant-worker"
# What the commands may find in the caller's environment: each test says what it sets.
# Never the machine's own Redis: a test that sets no REDIS_URL reaches none.
UNSET = ("REDIS_URL", "AW_ENV_FILE", "LOG_LEVEL", "WORKER_TOOL_MODULES", "OUTBOUND_STREAM", "PYTHONPATH")


def run(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT, stdin: str | None = None,
        command: tuple[str, ...] = (sys.executable, "-m", "producers")) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in UNSET}
    return subprocess.run([*command, *args], env={**base, **(env or {})}, cwd=cwd, input=stdin,
                          capture_output=True, text=True, timeout=60)


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    """The error a command wrote: exactly one line, no traceback."""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]


@pytest.fixture
def nowhere() -> str:
    """A Redis URL on which nothing listens."""
    return f"redis://127.0.0.1:{free_port()}/0"


def env_file(path: Path, redis_url: str) -> Path:
    path.write_text(f"# a stack's settings, as in local.env\nREDIS_URL={redis_url}\nLOG_FORMAT=console\n")
    return path


def inbox(client: redis.Redis, cid: str) -> list[dict[str, object]]:
    return [json.loads(raw) for raw in client.lrange(keys.inbox(cid), 0, -1)]


# --- where the settings come from ------------------------------------------------------------
def test_the_env_file_named_by_option_or_variable_points_the_producer_at_the_stack(
        redis_url: str, redis_client: redis.Redis, tmp_path: Path, nowhere: str) -> None:
    stack_file = env_file(tmp_path / "stack.env", redis_url)
    other_file = env_file(tmp_path / "other.env", nowhere)
    by_option = run("send", "--env-file", str(stack_file), "--conversation", "f1", "by option",
                    env={"AW_ENV_FILE": str(other_file)})  # the option names the file first
    assert by_option.returncode == 0, by_option.stderr
    by_variable = run("send", "--conversation", "f1", "by variable", env={"AW_ENV_FILE": str(stack_file)})
    assert by_variable.returncode == 0, by_variable.stderr
    assert [e["content"] for e in inbox(redis_client, "f1")] == ["by option", "by variable"]
    assert [e["event_id"] for e in inbox(redis_client, "f1")] == [
        by_option.stdout.strip(), by_variable.stdout.strip()]


def test_the_option_wins_over_the_environment_which_wins_over_the_file(
        redis_url: str, redis_client: redis.Redis, tmp_path: Path, nowhere: str) -> None:
    wrong_file = env_file(tmp_path / "wrong.env", nowhere)
    env_wins = run("send", "--env-file", str(wrong_file), "--conversation", "p1", "env",
                   env={"REDIS_URL": redis_url})
    assert env_wins.returncode == 0, env_wins.stderr
    option_wins = run("send", "--env-file", str(wrong_file), "--redis-url", redis_url,
                      "--conversation", "p1", "option", env={"REDIS_URL": nowhere})
    assert option_wins.returncode == 0, option_wins.stderr
    before_the_name = run("--redis-url", redis_url, "send", "--conversation", "p1", "before")
    assert before_the_name.returncode == 0, before_the_name.stderr
    assert [e["content"] for e in inbox(redis_client, "p1")] == ["env", "option", "before"]
    file_loses = run("send", "--env-file", str(env_file(tmp_path / "right.env", redis_url)),
                     "--conversation", "p1", "lost", env={"REDIS_URL": nowhere})
    assert file_loses.returncode == 69


def test_the_library_reads_no_env_file(tmp_path: Path, nowhere: str) -> None:
    code = "from producers import Producer; print(Producer().settings.redis_url)"
    done = run("-c", code, command=(sys.executable,), env={"AW_ENV_FILE": str(env_file(tmp_path / "x.env", nowhere))})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "redis://localhost:6379/0"  # the contract's default, not the file's


def test_a_missing_env_file_is_a_bad_setting(tmp_path: Path) -> None:
    done = run("send", "--conversation", "m1", "hi", env={"AW_ENV_FILE": str(tmp_path / "nope.env")})
    assert done.returncode == 78
    line = one_line(done)
    assert "nope.env" in line and "AW_ENV_FILE" in line


def test_help_names_the_settings_and_where_they_come_from() -> None:
    done = run("send", "--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())  # as wrapped to the terminal's width
    for name in ("--redis-url", "--env-file", "--debug", "REDIS_URL", "OUTBOUND_STREAM", "AW_ENV_FILE",
                 "else the environment, else the env file", "65 invalid input"):
        assert name in text
    assert "WORKER_TOOL_MODULES" in run("assistant", "tools", "--help", command=(str(WORKER),)).stdout


# --- one line and an exit code per mistake ---------------------------------------------------
def test_an_unreachable_redis_is_one_line_and_exit_69(nowhere: str) -> None:
    for args in (("send", "--conversation", "u1", "hi"), ("cancel", "--conversation", "u1"),
                 ("dead-letters", "list"), ("tail",)):
        done = run(*args, "--redis-url", nowhere)
        assert done.returncode == 69, (args, done.stderr)
        assert one_line(done) == (f"python -m producers: cannot reach Redis at {nowhere} (Connection refused): "
                                  "start it, or pass --redis-url / REDIS_URL / --env-file")


def test_debug_or_log_level_debug_shows_the_traceback(nowhere: str) -> None:
    for done in (run("send", "--debug", "--redis-url", nowhere, "--conversation", "d1", "hi"),
                 run("send", "--conversation", "d1", "hi", env={"REDIS_URL": nowhere, "LOG_LEVEL": "DEBUG"})):
        assert done.returncode == 69
        assert "Traceback (most recent call last)" in done.stderr
        assert done.stderr.strip().splitlines()[-1].startswith("python -m producers: cannot reach Redis")


def test_a_usage_error_is_one_line_and_exit_64(redis_url: str) -> None:
    done = run("send", "hi", env={"REDIS_URL": redis_url})
    assert done.returncode == 64
    assert one_line(done).startswith("python -m producers send: error: the following arguments are required")
    assert run("tail", "--consumer", "c", env={"REDIS_URL": redis_url}).returncode == 64


@pytest.mark.parametrize("args, names", [
    (("--metadata", "foo", "hi"), ["invalid metadata", "'foo' is not KEY=VALUE"]),
    (("   ",), ["invalid content", "whitespace"]),
    (("--metadata", "k=1", ""), ["invalid content"]),
])
def test_invalid_input_is_one_line_and_exit_65(redis_url: str, redis_client: redis.Redis,
                                               args: tuple[str, ...], names: list[str]) -> None:
    done = run("send", "--conversation", "i1", *args, env={"REDIS_URL": redis_url})
    assert done.returncode == 65
    line = one_line(done)
    assert all(name in line for name in names), line
    assert redis_client.keys("aw:*") == []


def test_a_bad_redis_url_is_a_bad_setting() -> None:
    done = run("send", "--redis-url", "localhost:6379", "--conversation", "b1", "hi")
    assert done.returncode == 78
    assert one_line(done).startswith("python -m producers: invalid setting REDIS_URL: must be a redis://")


# --- tool modules from the current directory -------------------------------------------------
def test_tool_modules_import_from_the_current_directory(tmp_path: Path) -> None:
    (tmp_path / "myapp").mkdir()
    (tmp_path / "myapp" / "__init__.py").write_text("")
    (tmp_path / "myapp" / "tools.py").write_text(
        "from worker.tools import tool\n\n\n@tool\ndef shout(text: str) -> str:\n"
        '    """Upper-case the text."""\n    return text.upper()\n')
    (tmp_path / "tools.env").write_text("WORKER_TOOL_MODULES=myapp.tools\n")
    worker = (str(WORKER),)  # run as a user does: no PYTHONPATH, from the folder holding myapp/
    done = run("assistant", "tools", "--env-file", "tools.env", cwd=tmp_path, command=worker)
    assert done.returncode == 0, done.stderr
    assert [f["function"]["name"] for f in json.loads(done.stdout)] == ["shout"]
    missing = run("assistant", "tools", cwd=tmp_path, env={"WORKER_TOOL_MODULES": "otherapp.tools"}, command=worker)
    assert missing.returncode == 78
    line = one_line(missing)
    assert "'otherapp.tools'" in line and "PYTHONPATH" in line and "otherapp/" in line


# --- a long message from a file or standard input --------------------------------------------
def test_a_long_message_comes_from_a_file_or_standard_input(redis_url: str, redis_client: redis.Redis,
                                                            tmp_path: Path) -> None:
    text = "long line of a long message\n" * 9000  # 252,000 characters: more than one argument may hold
    (tmp_path / "message.txt").write_text(text)
    env = {"REDIS_URL": redis_url}
    from_file = run("send", "--conversation", "l1", "--file", str(tmp_path / "message.txt"), env=env)
    assert from_file.returncode == 0, from_file.stderr
    from_stdin = run("send", "--conversation", "l1", "-", stdin=text, env=env)
    assert from_stdin.returncode == 0, from_stdin.stderr
    assert [e["content"] for e in inbox(redis_client, "l1")] == [text, text]


def test_a_message_over_the_limit_is_refused_naming_the_limit(redis_url: str, redis_client: redis.Redis,
                                                              tmp_path: Path) -> None:
    too_long = "x" * (MAX_CONTENT_CHARS + 1)
    (tmp_path / "big.txt").write_text(too_long)
    env = {"REDIS_URL": redis_url}
    for done in (run("send", "--conversation", "l2", "--file", str(tmp_path / "big.txt"), env=env),
                 run("send", "--conversation", "l2", "-", stdin=too_long, env=env)):
        assert done.returncode == 65
        assert "256,000 characters" in one_line(done)
    assert redis_client.keys("aw:*") == []
    unreadable = run("send", "--conversation", "l2", "--file", str(tmp_path / "none.txt"), env=env)
    assert unreadable.returncode == 65 and "none.txt" in one_line(unreadable)


# --- commands say what they did ---------------------------------------------------------------
def test_cancel_says_whether_a_batch_was_active(redis_url: str, redis_client: redis.Redis) -> None:
    env = {"REDIS_URL": redis_url}
    idle = run("cancel", "--conversation", "idle-1", env=env)
    assert idle.returncode == 0, idle.stderr
    assert idle.stdout.strip() == "nothing to cancel: idle-1 has no active batch"
    assert redis_client.keys("aw:*") == []
    redis_client.hset(keys.batch("busy-1"), mapping={"batch_id": "b1", "published": "0"})  # what cancel.lua reads
    busy = run("cancel", "--conversation", "busy-1", env=env)
    assert busy.returncode == 0, busy.stderr
    assert busy.stdout.strip() == "cancel requested: busy-1 had an active batch (run.cancelled will follow)"
    assert redis_client.exists(keys.cancel_request("busy-1"))


def test_dead_letters_say_when_there_are_none_and_refuse_an_unknown_id(redis_url: str) -> None:
    env = {"REDIS_URL": redis_url}
    empty = run("dead-letters", "list", env=env)
    assert empty.returncode == 0 and empty.stdout == ""
    assert one_line(empty) == "no dead letters"
    unknown = run("dead-letters", "requeue", "999-0", env=env)
    assert unknown.returncode == 65
    assert "no dead letter 999-0" in one_line(unknown)


def test_a_repeated_event_id_is_reported_as_ignored(redis_url: str, redis_client: redis.Redis) -> None:
    env = {"REDIS_URL": redis_url}
    first = run("send", "--conversation", "r1", "--event-id", "ev-1", "first", env=env)
    again = run("send", "--conversation", "r1", "--event-id", "ev-1", "second", env=env)
    assert first.returncode == again.returncode == 0
    assert first.stderr == "" and again.stdout.strip() == "ev-1"
    line = one_line(again)
    assert "repeat" in line and "ignored" in line and "first content wins" in line
    assert [e["content"] for e in inbox(redis_client, "r1")] == ["first"]


def test_send_wait_with_a_repeated_id_waits_for_the_answer_still_to_come(
        redis_url: str, redis_client: redis.Redis) -> None:
    env = {"REDIS_URL": redis_url}
    assert run("send", "--conversation", "r2", "--event-id", "ev-2", "hi", env=env).returncode == 0
    base = {k: v for k, v in os.environ.items() if k not in UNSET}
    waiting = subprocess.Popen([sys.executable, "-m", "producers", "send", "--conversation", "r2",
                                "--event-id", "ev-2", "--wait", "--timeout", "30", "hi"],
                               env={**base, **env}, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        # Published once it waits (blocked in XREAD): its search back found nothing.
        wait_until(lambda: any(c["cmd"] == "xread" for c in redis_client.client_list()), 20,
                   what="the repeated send to wait for its answer")
        answer = {"type": "run.completed", "conversation_id": "r2", "event_ids": ["ev-2"]}
        redis_client.xadd("assistant:outbound", {"data": json.dumps(answer)})
        out, err = waiting.communicate(timeout=30)
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait(10)
    assert waiting.returncode == 0, err
    assert json.loads(out.split("\n", 1)[1]) == answer


@pytest.fixture
def slow_stack(redis_url: str) -> Iterator[Stack]:
    with running_stack(redis_url, EmulatorConfig(run_seconds=0.2)) as stack:
        yield stack


def test_send_wait_with_a_repeated_id_prints_the_earlier_answer(slow_stack: Stack) -> None:
    env = {"REDIS_URL": slow_stack.settings.redis_url}
    first = run("send", "--conversation", "w1", "--event-id", "ev-w", "--wait", "--timeout", "30", "hello", env=env)
    assert first.returncode == 0, first.stderr
    again = run("send", "--conversation", "w1", "--event-id", "ev-w", "--wait", "--timeout", "5", "hi", env=env)
    assert again.returncode == 0, again.stderr
    assert "repeat" in one_line(again)
    assert again.stdout == first.stdout  # the id, then the entry that answered it before


def test_cancel_wait_prints_the_run_cancelled_entry(slow_stack: Stack) -> None:
    slow_stack.emulator.configure(run_seconds=30)
    event_id = slow_stack.send("c-wait", "a long question")
    slow_stack.wait_until_run_started("c-wait")
    done = run("cancel", "--conversation", "c-wait", "--wait", "--timeout", "20",
               env={"REDIS_URL": slow_stack.settings.redis_url})
    assert done.returncode == 0, done.stderr
    status, body = done.stdout.split("\n", 1)
    assert status == "cancel requested: c-wait had an active batch (run.cancelled will follow)"
    entry = json.loads(body)
    assert entry["type"] == "run.cancelled" and entry["event_ids"] == [event_id]
