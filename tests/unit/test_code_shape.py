"""The shape a reader can hold: in worker/ and producers/, no function over 40 lines, no
class over 250, no module over 400 (lines as written, docstrings and comments included)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIMITS = {"function": 40, "class": 250, "module": 400}


def _too_long() -> list[str]:
    found = []
    for path in sorted([*ROOT.glob("worker/**/*.py"), *ROOT.glob("producers/**/*.py")]):
        source = path.read_text()
        name = path.relative_to(ROOT)
        if len(source.splitlines()) > LIMITS["module"]:
            found.append(f"{name}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            kind = "class" if isinstance(node, ast.ClassDef) else \
                "function" if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) else None
            if kind is None:
                continue
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            length = (node.end_lineno or node.lineno) - start + 1
            if length > LIMITS[kind]:
                found.append(f"{name}:{node.lineno} {kind} {node.name}: {length} lines")
    return found


def test_no_function_class_or_module_is_too_long_to_read() -> None:
    assert _too_long() == []
