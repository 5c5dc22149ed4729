"""Printing a reply as it is written (`python -m producers send --wait --stream`, `make
demo`): the text of the deltas to one stream as it arrives (flushed), notes (a tool call, a
retried run) to another, dimmed on a terminal; then, with the answer, a check that what was
shown is its text."""

from __future__ import annotations

from typing import Any, TextIO

from producers.deltas import DeltaItem, Restarted, Text, ToolCalls

DIM, RESET = "\033[2m", "\033[0m"


class LivePrinter:
    """Prints a reply's text to `out`, `prefix` before each message, messages separated by a
    blank line; notes go to `notes` on a line of their own."""

    def __init__(self, out: TextIO, notes: TextIO, *, prefix: str = "", warn: str = "warning") -> None:
        self.out = out
        self.notes = notes
        self.prefix = prefix
        self.warn = warn  # how a warning line starts (the command's name)
        self.shown: dict[str, str] = {}  # the text printed per message since the last restart
        self._newlines = 1  # how many newlines end what `out` shows (it starts on a fresh line)

    def show(self, item: DeltaItem) -> None:
        if isinstance(item, Text):
            self._text(item.message_id, item.text)
        elif isinstance(item, ToolCalls):
            self.note(f"[calling {', '.join(item.tools) or 'tools'}]")
        elif isinstance(item, Restarted):
            again = ": the reply starts again" if any(self.shown.values()) else ""
            self.note(f"[the run was retried{again}]")
            self.shown = {}

    def note(self, line: str) -> None:
        """A line on `notes`, after ending the text's line on `out`."""
        self._line_start()
        dimmed = hasattr(self.notes, "isatty") and self.notes.isatty()
        print(f"{DIM}{line}{RESET}" if dimmed else line, file=self.notes, flush=True)

    def finish(self, entry: dict[str, Any] | None, *, streamed: bool) -> None:
        """End the text's line. With the answer `entry`: when nothing was `streamed` (no
        deltas: DELTAS=off), print its text; when the text shown is not its text, say so
        and print its text."""
        if entry is not None:
            final = {str(m.get("id")): str(m.get("text") or "") for m in entry.get("messages") or []
                     if isinstance(m, dict)}
            if streamed and _texts(final) != _texts(self.shown):
                self.note(f"{self.warn}: the text streamed differs from the answer's "
                          f"({entry.get('type')}); the answer's text follows")
                self.shown = {}
            if not self.shown:
                for message_id, text in _texts(final):
                    self._text(message_id, text)
        self._line_start()

    def _text(self, message_id: str, text: str) -> None:
        head = ""
        if message_id not in self.shown:
            # On a line of its own; a message after another: a blank line between them.
            head = "\n" * ((2 if self.shown else 1) - self._newlines) + self.prefix
            self.shown[message_id] = ""
        self.shown[message_id] += text
        self._write(head + text)

    def _line_start(self) -> None:
        if self._newlines == 0:
            self._write("\n")

    def _write(self, text: str) -> None:
        if not text:
            return
        self.out.write(text)
        self.out.flush()
        stripped = len(text) - len(text.rstrip("\n"))
        self._newlines = min(2, stripped if stripped < len(text) else self._newlines + stripped)


def _texts(messages: dict[str, str]) -> list[tuple[str, str]]:
    """The messages with text, in order (a message without text has no delta)."""
    return [(message_id, text) for message_id, text in messages.items() if text]
