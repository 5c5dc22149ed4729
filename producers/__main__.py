"""`python -m producers send|cancel|dead-letters|tail`: the producer API from the command line."""

from __future__ import annotations

import argparse
import json
import sys

from producers.client import Producer
from producers.dead_letters import list_dead_letters, requeue
from producers.replies import DEFAULT_CLAIM_IDLE_MS
from producers.tail import tail
from worker.events import InvalidEvent
from worker.settings import get_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m producers")
    commands = parser.add_subparsers(dest="command", required=True)
    send = commands.add_parser("send", help="send a user message; prints its event id")
    send.add_argument("--conversation", required=True)
    send.add_argument("--event-id")
    send.add_argument("--assistant-id")
    send.add_argument("--instructions")
    send.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE")
    send.add_argument("--wait", action="store_true", help="wait for the outcome and print it")
    send.add_argument("--timeout", type=float, default=300.0)
    send.add_argument("text")
    cancel = commands.add_parser("cancel", help="cancel the conversation's active batch")
    cancel.add_argument("--conversation", required=True)
    dead = commands.add_parser("dead-letters", help="list or re-queue rejected events")
    dead.add_argument("action", choices=["list", "requeue"])
    dead.add_argument("ids", nargs="*", help="dead-letter ids to re-queue (default: all listed)")
    dead.add_argument("--count", type=int, default=100)
    _add_tail(commands)
    args = parser.parse_args(argv)
    if args.command == "tail":
        if args.consumer and not args.group:
            parser.error("--consumer needs --group")
        return tail(get_settings(), args.group, args.consumer, args.from_start, args.claim_idle_ms)

    producer = Producer()
    try:
        if args.command == "cancel":
            producer.cancel_conversation(args.conversation)
            return 0
        if args.command == "dead-letters":
            return _dead_letters(producer, args)
        return _send(producer, args)
    except InvalidEvent as exc:
        print(f"invalid {exc.field}: {exc.reason}", file=sys.stderr)
        return 64


def _add_tail(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    follow = commands.add_parser("tail", help="print outbound entries as they arrive, until Ctrl-C")
    follow.add_argument("--group", help="read as a consumer of this group, acknowledging what is printed")
    follow.add_argument("--consumer", help="the consumer's name (default: host-pid)")
    follow.add_argument("--from-start", action="store_true",
                        help="start at the stream's first entry (a new group, or without a group)")
    follow.add_argument("--claim-idle-ms", type=int, default=DEFAULT_CLAIM_IDLE_MS,
                        help="claim entries other consumers left unacknowledged this long")


def _send(producer: Producer, args: argparse.Namespace) -> int:
    metadata = dict(item.split("=", 1) for item in args.metadata)
    position = producer.outbound_position() if args.wait else "0-0"
    event_id = producer.send_user_message(
        args.conversation, args.text, event_id=args.event_id, assistant_id=args.assistant_id,
        instructions=args.instructions, metadata=metadata)
    print(event_id, flush=True)
    if not args.wait:
        return 0
    entry = producer.wait_for(event_id, position, args.timeout)
    if entry is None:
        print(f"no outcome within {args.timeout:g} s", file=sys.stderr)
        return 2
    print(json.dumps(entry, indent=2))
    return 0 if entry["type"] == "run.completed" else 1


def _dead_letters(producer: Producer, args: argparse.Namespace) -> int:
    letters = list_dead_letters(producer, args.count)
    if args.action == "list":
        for letter in letters:
            print(json.dumps({"id": letter.id, "reason": letter.reason, "raw": letter.raw[:500]}))
        return 0
    failed = 0
    for letter in letters:
        if args.ids and letter.id not in args.ids:
            continue
        try:
            print(f"{letter.id} -> {requeue(producer, letter)}")
        except InvalidEvent as exc:
            failed += 1
            print(f"{letter.id}: kept, {exc.field}: {exc.reason}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
