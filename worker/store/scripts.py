"""The store's Lua scripts: one `.lua` file each (package data), called by name.

Each file starts with a header that names its arguments in order:

    -- KEYS: batch schedule lock
    -- ARGV: batch_id token fields...
    -- uses: fence

A trailing `name...` takes a list (the rest of ARGV); `uses:` prepends shared Lua from
another file. `LuaScript` checks every call against the header, so a key or argument is
passed by name and never matched by position by hand.

This module imports no Redis client until a script is registered: a fresh install can
read the sources without the worker's dependencies.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import redis
    import redis.asyncio

Arg = str | int | float | bytes


@dataclass(frozen=True)
class ScriptSource:
    name: str
    keys: tuple[str, ...]
    args: tuple[str, ...]  # the last may end with "...": a list
    text: str  # with what it uses prepended


def _header(text: str, label: str) -> list[str]:
    for line in text.splitlines():
        if line.startswith(f"-- {label}:"):
            return line.split(":", 1)[1].split()
    return []


@cache
def source(name: str) -> ScriptSource:
    """The script `name` (`worker/store/lua/<name>.lua`) and the names of its arguments."""
    text = resources.files("worker.store").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")
    prelude = "".join(source(used).text for used in _header(text, "uses"))
    return ScriptSource(name, tuple(_header(text, "KEYS")), tuple(_header(text, "ARGV")), prelude + text)


def names() -> list[str]:
    """Every script shipped (the shared preludes included)."""
    folder = resources.files("worker.store").joinpath("lua")
    return sorted(p.name.removesuffix(".lua") for p in folder.iterdir() if p.name.endswith(".lua"))


class LuaScript:
    """One registered script, called with its keys and arguments by name (with an asyncio
    client, the call returns its awaitable; with none, `command` gives what to send)."""

    def __init__(self, client: redis.Redis | redis.asyncio.Redis | None, name: str) -> None:
        self.source = source(name)
        self._script = client.register_script(self.source.text) if client is not None else None
        self._sha = hashlib.sha1(self.source.text.encode()).hexdigest()  # Redis names scripts by their SHA-1
        self._key_names = frozenset(self.source.keys)
        self._arg_specs = tuple((a.removesuffix("..."), a.endswith("...")) for a in self.source.args)
        self._arg_names = frozenset(name for name, _ in self._arg_specs)

    def __call__(self, keys: Mapping[str, str], args: Mapping[str, Arg | list[Arg] | None]) -> Any:
        if self._script is None:
            raise TypeError(f"{self.source.name}.lua has no client to be called with")
        return self._script(keys=self._keys(keys), args=self._args(args))

    def queue(self, pipeline: Any, keys: Mapping[str, str], args: Mapping[str, Arg | list[Arg] | None]) -> None:
        """Add a call to `pipeline` by the script's SHA (the script must be loaded on the server)."""
        key_list = self._keys(keys)
        pipeline.evalsha(self.sha, len(key_list), *key_list, *self._args(args))

    def command(self, keys: Mapping[str, str], args: Mapping[str, Arg | list[Arg] | None]) -> tuple[Arg, ...]:
        """The EVALSHA command of a call, for a caller that packs and sends it itself."""
        key_list = self._keys(keys)
        return ("EVALSHA", self.sha, len(key_list), *key_list, *self._args(args))

    @property
    def sha(self) -> str:
        return self._sha

    def _keys(self, given: Mapping[str, str]) -> list[str]:
        if given.keys() != self._key_names:
            raise TypeError(f"{self.source.name}.lua takes the keys {self.source.keys}, got {tuple(given)}")
        return [given[k] for k in self.source.keys]

    def _args(self, given: Mapping[str, Arg | list[Arg] | None]) -> list[Arg]:
        if given.keys() != self._arg_names:
            expected = tuple(name for name, _ in self._arg_specs)
            raise TypeError(f"{self.source.name}.lua takes the arguments {expected}, got {tuple(given)}")
        out: list[Arg] = []
        for name, listed in self._arg_specs:
            value = given[name]
            if isinstance(value, list) != listed:
                raise TypeError(f"{self.source.name}.lua: {name} must {'' if listed else 'not '}be a list")
            if isinstance(value, list):
                out.extend(value)
            else:
                out.append("" if value is None else value)
        return out
