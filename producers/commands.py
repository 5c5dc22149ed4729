"""The commands of `python -m producers`, each saying what it did (the parser is in
`__main__`); errors are raised, and `worker.commandline.execute` makes them one line."""

from __future__ import annotations

import argparse
import io
import json
import sys
from typing import Any

from producers import answers
from producers.client import Producer
from producers.dead_letters import DeadLetter, find_dead_letter, list_dead_letters, requeue
from producers.live import LivePrinter
from producers.tail import tail
from worker.commandline import InputError, UsageError
from worker.events import MAX_CONTENT_CHARS, InvalidEvent
from worker.settings import get_settings

PROG = "python -m producers"


def send(args: argparse.Namespace) -> int:
    """`--stream` implies `--wait`."""
    metadata = parse_metadata(args.metadata)
    text = read_text(args.file, args.text)
    wait = args.wait or args.stream
    with Producer() as producer:
        position = producer.outbound_position() if wait else "0-0"
        deltas_at = producer.delta_position(args.conversation) if args.stream else "0-0"
        result = producer.send(args.conversation, text, event_id=args.event_id,
                               assistant_id=args.assistant_id, instructions=args.instructions,
                               metadata=metadata)
        print(result.event_id, flush=True)
        if not result.accepted:
            _note(f"{PROG} send: repeat: event id {result.event_id} was accepted before; this message was "
                  "ignored (the first content wins)")
        if not wait:
            return 0
        entry = None if result.accepted else producer.find_answer(result.event_id)
        if args.stream:
            # A repeat's batch may have begun before: its deltas are read from the start.
            return _stream(producer, args.conversation, result.event_id, entry, position,
                           deltas_at if result.accepted else "0-0", args.timeout)
        entry = entry or producer.wait_for(result.event_id, position, args.timeout)
        return _outcome(entry, args.timeout, expected="run.completed")


def _stream(producer: Producer, conversation_id: str, event_id: str, entry: dict[str, Any] | None,
            position: str, deltas_at: str, timeout: float) -> int:
    """Print the reply's text as its deltas arrive, then what --wait prints."""
    printer = LivePrinter(sys.stdout, sys.stderr, warn=f"{PROG} send: warning")
    streamed = False
    if entry is None:
        reader = producer.delta_reader(conversation_id, event_id, position=deltas_at, outbound_position=position)
        for item in reader.follow(timeout):
            printer.show(item)
        entry, streamed = reader.answer, reader.entries > 0
    printer.finish(entry, streamed=streamed)
    return _outcome(entry, timeout, expected="run.completed")


def parse_metadata(items: list[str]) -> dict[str, str]:
    metadata = {}
    for item in items:
        key, equals, value = item.partition("=")
        if not equals or not key:
            raise InvalidEvent("metadata", f"{item!r} is not KEY=VALUE")
        metadata[key] = value
    return metadata


def read_text(path: str | None, text: str | None) -> str:
    """The message: the argument, or the file at `path`, or standard input for `-`; read up
    to one character past the limit, so that a longer text is refused without reading it all."""
    source = path if path is not None else text
    if source is None:
        raise UsageError("give the message as TEXT, `-` (standard input) or --file PATH")
    if path is None and text != "-":
        content = source
    elif source == "-":
        content = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8").read(MAX_CONTENT_CHARS + 1)
    else:
        try:
            with open(source, encoding="utf-8") as file:
                content = file.read(MAX_CONTENT_CHARS + 1)
        except OSError as exc:
            raise InputError(f"cannot read --file {source}: {exc.strerror}") from None
    if len(content) > MAX_CONTENT_CHARS:
        raise InvalidEvent("content", f"longer than the limit of {MAX_CONTENT_CHARS:,} characters: shorten it")
    return content


def cancel(args: argparse.Namespace) -> int:
    cid = args.conversation
    with Producer() as producer:
        position = producer.outbound_position() if args.wait else "0-0"
        if not producer.cancel_conversation(cid):
            print(f"nothing to cancel: {cid} has no active batch", flush=True)
            return 0
        print(f"cancel requested: {cid} had an active batch (run.cancelled will follow)", flush=True)
        if not args.wait:
            return 0
        entry = answers.wait_for(producer.redis, producer.settings.outbound_stream,
                                 lambda e: e.get("conversation_id") == cid, position, args.timeout)
        return _outcome(entry, args.timeout, expected="run.cancelled")


def _outcome(entry: dict[str, Any] | None, timeout: float, expected: str) -> int:
    """Print the entry: exit 0 when it is the `expected` type, 1 another, 2 none in time."""
    if entry is None:
        _note(f"no outcome within {timeout:g} s")
        return 2
    print(json.dumps(entry, indent=2))
    return 0 if entry["type"] == expected else 1


def dead_letters(args: argparse.Namespace) -> int:
    with Producer() as producer:
        if args.action == "requeue" and args.ids:
            letters = _named_letters(producer, args.ids)
        else:
            letters = list_dead_letters(producer, args.count)
        if not letters:
            _note("no dead letters")
        if args.action == "list":
            for letter in letters:
                print(json.dumps({"id": letter.id, "reason": letter.reason, "raw": letter.raw[:500]}))
            return 0
        failed = sum(not _requeue_one(producer, letter) for letter in letters)
        return 1 if failed else 0


def _named_letters(producer: Producer, ids: list[str]) -> list[DeadLetter]:
    found = {letter_id: find_dead_letter(producer, letter_id) for letter_id in ids}
    unknown = [letter_id for letter_id, letter in found.items() if letter is None]
    if unknown:
        raise InputError(f"no dead letter {', '.join(unknown)} (`dead-letters list` shows the ids); "
                         "nothing was re-queued")
    return [letter for letter in found.values() if letter is not None]


def _requeue_one(producer: Producer, letter: DeadLetter) -> bool:
    try:
        print(f"{letter.id} -> {requeue(producer, letter)}")
    except InvalidEvent as exc:
        _note(f"{letter.id}: kept, {exc.field}: {exc.reason}")
        return False
    return True


def follow(args: argparse.Namespace) -> int:
    if args.consumer and not args.group:
        raise UsageError("--consumer needs --group")
    return tail(get_settings(), args.group, args.consumer, args.from_start, args.claim_idle_ms)


def _note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
