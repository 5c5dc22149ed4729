"""What every command of `assistant-worker` and `python -m producers` shares: the options
that say where settings come from, and one line (with a defined exit code) for each error.

Settings: an option (`--redis-url`), then the process environment, then the env file named
by `--env-file` or `AW_ENV_FILE`. Only the command line reads a file: the library API
(`producers.Producer()`, `get_settings()`) reads the environment alone, so that a production
producer never picks up a development file.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit, urlunsplit

from worker.settings import Settings, SettingsError

# The exit codes of sysexits.h; `send --wait` and `cancel --wait` add 1 and 2 for outcomes.
EX_USAGE = 64  # a mistake on the command line
EX_DATAERR = 65  # invalid input: a field of the event, an unknown id
EX_UNAVAILABLE = 69  # Redis or the API cannot be reached
EX_SOFTWARE = 70  # a bug: rerun with --debug and report the traceback
EX_CONFIG = 78  # a bad setting
ENV_FILE_VARIABLE = "AW_ENV_FILE"

EXIT_CODES = ("exit codes: 0 done, 64 usage error, 65 invalid input, 69 Redis or the API unreachable, "
              "78 bad setting")


class UsageError(Exception):
    """A mistake on the command line that argparse cannot see (exit 64)."""


class InputError(Exception):
    """Input that cannot be used: a file that cannot be read, an unknown id (exit 65)."""


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error on one line and exit code 64 (argparse's own is 2)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]  # argparse's own keywords, passed on

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        sys.exit(EX_USAGE)


def common_options() -> Parser:
    """The options of every command (a parent parser). SUPPRESS: a subcommand that is not
    given one leaves the value given before the subcommand name in place."""
    parent = Parser(add_help=False)
    parent.add_argument("--redis-url", default=argparse.SUPPRESS, metavar="URL",
                        help="the Redis to use (default: REDIS_URL, from the environment or the env file)")
    parent.add_argument("--env-file", default=argparse.SUPPRESS, metavar="PATH",
                        help=f"read unset settings from this KEY=VALUE file (default: ${ENV_FILE_VARIABLE})")
    parent.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of an error (as LOG_LEVEL=DEBUG does)")
    return parent


def epilog(reads: str, extra: str = "") -> str:
    """The settings a command reads, where they come from, and the exit codes."""
    where = (f"Each comes from its option (--redis-url for REDIS_URL), else the environment, else "
             f"the env file named by --env-file or {ENV_FILE_VARIABLE} (KEY=VALUE lines, like local.env). "
             "LOG_LEVEL=DEBUG shows tracebacks, as --debug does.")
    codes = EXIT_CODES + (f"; {extra}" if extra else "")
    return "\n".join([*textwrap.wrap(f"settings: {reads}", 78, subsequent_indent="  "),
                      *textwrap.wrap(where, 78, initial_indent="  ", subsequent_indent="  "),
                      *textwrap.wrap(codes, 78, subsequent_indent="  ")])


def apply_options(args: argparse.Namespace) -> None:
    """Put the env file's settings (those the environment does not set) and `--redis-url`
    into this process's environment: its settings, and the processes it starts, see them."""
    named = getattr(args, "env_file", None) or os.environ.get("AW_ENV_FILE")
    if named:
        source = "--env-file" if getattr(args, "env_file", None) else ENV_FILE_VARIABLE
        _apply_env_file(Path(named), source)
    if getattr(args, "redis_url", None):
        os.environ["REDIS_URL"] = args.redis_url


def _apply_env_file(path: Path, source: str) -> None:
    from dotenv import dotenv_values  # only the command line reads a file

    try:
        with path.open(encoding="utf-8") as stream:
            values = dotenv_values(stream=stream)
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise SettingsError(f"cannot read the env file {path} named by {source}: {reason}") from None
    present = {name.upper() for name in os.environ}  # settings' names are case-insensitive
    for name, value in values.items():
        if value is not None and name.upper() not in present:
            os.environ[name] = value


def execute(prog: str, args: argparse.Namespace, command: Callable[[], int]) -> int:
    """Run `command` after applying the options; an error it raises becomes one line on
    stderr and its exit code (with the traceback first under --debug or LOG_LEVEL=DEBUG)."""
    try:
        apply_options(args)
        return command()
    except KeyboardInterrupt:
        return 130
    except (Exception, SettingsError) as exc:  # noqa: BLE001 - every error ends as one line
        code, line = describe(exc)
        if getattr(args, "debug", False) or os.environ.get("LOG_LEVEL", "").upper() == "DEBUG":
            traceback.print_exc()
        print(f"{prog}: {line}", file=sys.stderr)
        return code


def describe(exc: BaseException) -> tuple[int, str]:
    """The exit code and the line that names what to fix."""
    from worker.errors import ToolRegistryError
    from worker.events import InvalidEvent

    if isinstance(exc, SettingsError):
        return EX_CONFIG, f"{exc}"
    if isinstance(exc, UsageError):
        return EX_USAGE, f"error: {exc} (see --help)"
    if isinstance(exc, InputError):
        return EX_DATAERR, str(exc)
    if isinstance(exc, InvalidEvent):
        return EX_DATAERR, f"invalid {exc.field}: {exc.reason}"
    if isinstance(exc, ToolRegistryError):
        return EX_CONFIG, str(exc)
    found = _redis_error(exc) or _api_error(exc)
    if found is not None:
        return found
    return EX_SOFTWARE, (f"unexpected error: {type(exc).__name__}: {exc} "
                         "(rerun with --debug for the traceback, and report it)")


def _redis_error(exc: BaseException) -> tuple[int, str] | None:
    import redis

    if isinstance(exc, redis.AuthenticationError | redis.exceptions.NoPermissionError):
        return EX_CONFIG, f"Redis at {_redis_url()} refused the credentials of REDIS_URL ({exc}): fix them"
    if not isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return None
    reason = _os_reason(exc) or str(exc)
    return EX_UNAVAILABLE, (f"cannot reach Redis at {_redis_url()} ({reason}): start it, or pass "
                            f"--redis-url / REDIS_URL / --env-file")


def _api_error(exc: BaseException) -> tuple[int, str] | None:
    openai = sys.modules.get("openai")  # not imported: this command made no API call
    if openai is None or not isinstance(exc, openai.APIError):
        return None
    base_url = Settings.model_construct(openai_base_url=os.environ.get("OPENAI_BASE_URL")).api_base_url
    if isinstance(exc, openai.APIConnectionError):
        reason = _os_reason(exc) or str(exc)
        return EX_UNAVAILABLE, (f"cannot reach the API at {base_url} ({reason}): start it, "
                                "or set OPENAI_BASE_URL")
    status = getattr(exc, "status_code", None)
    if status in (401, 403):
        return EX_CONFIG, f"the API at {base_url} refused OPENAI_API_KEY (HTTP {status}): set a valid key"
    if isinstance(status, int) and status >= 500:
        return EX_UNAVAILABLE, f"the API at {base_url} failed (HTTP {status}): try again later"
    return EX_DATAERR, f"the API at {base_url} refused the request (HTTP {status}): {exc.message}"


def _os_reason(exc: BaseException) -> str | None:
    """The operating system's words for a failed connection (`Connection refused`)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror
        seen = seen.__cause__ or seen.__context__
    return None


def _redis_url() -> str:
    """REDIS_URL as the command used it, without its password."""
    url = os.environ.get("REDIS_URL") or str(Settings.model_fields["redis_url"].default)
    parts = urlsplit(url)
    if parts.password:
        host = parts.netloc.rsplit("@", 1)[1]
        parts = parts._replace(netloc=f"{parts.username or ''}:***@{host}")
    return urlunsplit(parts)
