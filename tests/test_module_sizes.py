"""The runtime's shard host, client, activity and transport modules stay small enough to find
one's way in (issue 13): no module past 500 lines, no function past 50. A module or function
that grows past them wants a concept of its own, named in its own module or function."""

from __future__ import annotations

import ast
from pathlib import Path

RUNTIME = Path(__file__).resolve().parent.parent / "runtime"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 50


def _modules() -> list[Path]:
    names = {*RUNTIME.glob("_shard*.py"), *RUNTIME.glob("_client*.py")}
    names |= {RUNTIME / f for f in ("_activities.py", "_warm.py", "_wire.py", "_batch.py", "_turn.py")}
    names |= {*RUNTIME.glob("_lease*.py"), RUNTIME / "_litestream.py", RUNTIME / "_replica_target.py"}
    return sorted(names)


def test_the_modules_exist():
    assert {p.name for p in _modules()} >= {"_shard.py", "_shard_turn.py", "_client.py", "_turn.py"}
    assert all(p.exists() for p in _modules())


def test_no_module_past_the_limit():
    too_long = {p.name: n for p in _modules() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert too_long == {}


def test_no_function_past_the_limit():
    too_long = {}
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = node.decorator_list[0].lineno if node.decorator_list else node.lineno
                if (length := node.end_lineno - start + 1) > MAX_FUNCTION_LINES:  # type: ignore[operator]
                    too_long[f"{path.name}:{node.name}"] = length
    assert too_long == {}
