"""`python -m producers send|cancel|dead-letters|tail`: the producer API from the command line.

Every command takes `--redis-url`, `--env-file` and `--debug` (before or after its name);
`--help` of each names the settings it reads and the exit codes (worker/commandline.py)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from producers import commands
from producers.replies import DEFAULT_CLAIM_IDLE_MS
from worker.commandline import Parser, common_options, epilog, execute

if TYPE_CHECKING:
    Subcommands = argparse._SubParsersAction[Parser]
RUN: dict[str, Callable[[argparse.Namespace], int]] = {
    "send": commands.send, "cancel": commands.cancel, "dead-letters": commands.dead_letters,
    "tail": commands.follow}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return execute(commands.PROG, args, lambda: RUN[args.command](args))


def build_parser() -> Parser:
    common = common_options()
    parser = Parser(prog=commands.PROG, parents=[common], description="Hand user messages to the worker.",
                    epilog=epilog("REDIS_URL and, per command, those its --help names"))
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_send, _add_cancel, _add_dead_letters, _add_tail):
        add(subcommands, common)
    return parser


def _add_send(subcommands: Subcommands, common: Parser) -> None:
    send = subcommands.add_parser(
        "send", parents=[common], help="send a user message; prints its event id",
        epilog=epilog("REDIS_URL, EVENT_DEDUP_TTL_SECONDS; with --wait OUTBOUND_STREAM; with --stream "
                      "DELTA_STREAM_PREFIX",
                      "with --wait: 0 run.completed, 1 another outcome, 2 none within --timeout"))
    send.add_argument("--conversation", required=True)
    send.add_argument("--event-id", help="idempotency key: a repeat is ignored (default: a new UUID)")
    send.add_argument("--assistant-id")
    send.add_argument("--instructions")
    send.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE")
    send.add_argument("--wait", action="store_true", help="wait for the outcome and print it")
    send.add_argument("--stream", action="store_true",
                      help="print the reply's text as it is written, then the outcome (implies --wait)")
    send.add_argument("--timeout", type=float, default=300.0, help="seconds --wait waits (default 300)")
    message = send.add_mutually_exclusive_group(required=True)
    message.add_argument("text", nargs="?", help="the message; - reads it from standard input")
    message.add_argument("--file", metavar="PATH", help="read the message from this file (UTF-8)")


def _add_cancel(subcommands: Subcommands, common: Parser) -> None:
    cancel = subcommands.add_parser(
        "cancel", parents=[common], help="cancel the conversation's active batch",
        epilog=epilog("REDIS_URL; with --wait OUTBOUND_STREAM",
                      "with --wait: 0 run.cancelled, 1 another outcome, 2 none within --timeout"))
    cancel.add_argument("--conversation", required=True)
    cancel.add_argument("--wait", action="store_true", help="wait for the batch's entry and print it")
    cancel.add_argument("--timeout", type=float, default=60.0, help="seconds --wait waits (default 60)")


def _add_dead_letters(subcommands: Subcommands, common: Parser) -> None:
    dead = subcommands.add_parser(
        "dead-letters", parents=[common], help="list or re-queue rejected events",
        epilog=epilog("REDIS_URL; to re-queue, EVENT_DEDUP_TTL_SECONDS"))
    dead.add_argument("action", choices=["list", "requeue"])
    dead.add_argument("ids", nargs="*", help="dead-letter ids to re-queue (default: all listed)")
    dead.add_argument("--count", type=int, default=100, help="at most this many (default 100)")


def _add_tail(subcommands: Subcommands, common: Parser) -> None:
    follow = subcommands.add_parser(
        "tail", parents=[common], help="print outbound entries as they arrive, until Ctrl-C",
        epilog=epilog("REDIS_URL, OUTBOUND_STREAM"))
    follow.add_argument("--group", help="read as a consumer of this group, acknowledging what is printed")
    follow.add_argument("--consumer", help="the consumer's name (default: host-pid)")
    follow.add_argument("--from-start", action="store_true",
                        help="start at the stream's first entry (a new group, or without a group)")
    follow.add_argument("--claim-idle-ms", type=int, default=DEFAULT_CLAIM_IDLE_MS,
                        help="claim entries other consumers left unacknowledged this long")


if __name__ == "__main__":
    sys.exit(main())
