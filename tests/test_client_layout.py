"""``TaskHub`` is put together from parts (``QueryClient``, ``ControlClient``, ``EntityClient``,
``AsyncClient``) that declare, as stubs raising ``NotImplementedError``, what they use from the
hub and from each other. A stub that comes before the real method in the MRO would hide it and
fail in the middle of a user's call: these tests fail first (as ``test_shard_layout`` does for
the shard host)."""

from __future__ import annotations

import ast
import inspect
import textwrap

from runtime._client import TaskHub
from runtime._shard import ShardHost


def _is_stub(fn: object) -> bool:
    """Whether ``fn``'s body is only ``raise NotImplementedError`` (after a docstring)."""
    try:
        source = textwrap.dedent(inspect.getsource(fn))  # type: ignore[arg-type]
    except (OSError, TypeError):
        return False
    node = ast.parse(source).body[0]
    assert isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    body = [s for s in node.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
    return len(body) == 1 and isinstance(body[0], ast.Raise) and "NotImplementedError" in ast.unparse(body[0])


def _hidden(cls: type) -> list[str]:
    """Names whose lookup on ``cls`` lands on a stub."""
    names = {name for base in cls.__mro__[1:-1] for name, value in vars(base).items() if inspect.isfunction(value)}
    return sorted(name for name in names if _is_stub(inspect.getattr_static(cls, name)))


def test_no_part_of_the_task_hub_hides_a_real_method_behind_a_stub():
    assert _is_stub(inspect.getattr_static(TaskHub.__mro__[1], "_call"))  # the parts do declare stubs
    assert _hidden(TaskHub) == []


def test_no_part_of_the_shard_host_hides_a_real_method_behind_a_stub():
    assert _hidden(ShardHost) == []
