"""Guards against orchestrator code that is wrong: each check names the mistake and the fix.

Orchestrator code must yield (or await) durable tasks, return plain values, and reach the
outside world only through the context. These helpers recognise the usual mistakes (a missing
``yield``, a list yielded instead of ``task_all``, an activity called as a plain function, an
asyncio primitive awaited in an ``async def`` orchestrator) and word the failure so that it
says what to write instead. Pure: no I/O.
"""

from __future__ import annotations

import contextlib
import datetime as _datetime
import dis
import inspect
import os
import random
import secrets
import threading
import time
import types
import uuid
import warnings
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from itertools import islice
from typing import Any

from ._errors import DeterminismWarning, DurableTypeError, describe
from ._failures import exception_message
from ._history import FailureDetails
from ._task import Task

_state = threading.local()
_state.depth = 0


class _OrchestratorCode:
    """The context manager of :func:`running_orchestrator_code` (a class: it runs around
    every step of every orchestrator, where a generator-based one costs several times more)."""

    __slots__ = ()

    def __enter__(self) -> None:
        _state.depth = getattr(_state, "depth", 0) + 1

    def __exit__(self, *exc_info: object) -> None:
        _state.depth -= 1


_RUNNING = _OrchestratorCode()


def running_orchestrator_code() -> _OrchestratorCode:
    """Mark this thread as running orchestrator code for the duration of a ``with`` block (see
    :func:`in_orchestrator_code`); nests."""
    return _RUNNING


def in_orchestrator_code() -> bool:
    """Whether this thread is running an orchestrator's code right now (an activity called
    directly from there would run inline, not durably)."""
    return getattr(_state, "depth", 0) > 0


def explain_yielded(value: object, is_async: bool) -> str:
    """The failure message for an orchestrator that yielded (or awaited) ``value``, not a Task."""
    verb = "await" if is_async else "yield"
    if is_async and (value is None or hasattr(value, "_asyncio_future_blocking")):
        return (
            f"an async orchestrator awaited something that is not a durable task ({type(value).__name__}): "
            "orchestrators run on the durable engine, not on an asyncio event loop; await only "
            "context methods (use context.create_timer instead of asyncio.sleep, context.task_all "
            "instead of asyncio.gather)"
        )
    if isinstance(value, (list, tuple, set)):
        return (
            f"an orchestrator must {verb} a Task, it {verb}ed a {type(value).__name__} ({describe(value)}): "
            f"to wait for several tasks, {verb} context.task_all([...]) (or context.task_any for the first)"
        )
    if inspect.isgenerator(value):
        return (
            f"an orchestrator must {verb} a Task, it {verb}ed a generator ({value.__qualname__}): "
            "to run another orchestrator, use context.call_sub_orchestrator(...) "
            "(or `yield from` it to run its steps inline)"
        )
    if inspect.iscoroutine(value):
        value.close()
        return (
            f"an orchestrator must {verb} a Task, it {verb}ed a coroutine ({value.__qualname__}): "
            "call activities with context.call_activity(...), not directly"
        )
    if value is None:
        return f"an orchestrator must {verb} a Task, it {verb}ed None: write `{verb} context.call_activity(...)`"
    return f"an orchestrator must {verb} a Task, it {verb}ed {describe(value)}"


#: how many values of a task's input :func:`check_input` looks at (a large list: its first ones)
INPUT_BUDGET = 256
#: values that hold nothing (most inputs): not looked into
_PLAIN = (str, int, float, bool, bytes, type(None))


def check_input(value: Any, where: str) -> None:
    """Raise :class:`DurableTypeError` if ``value``, which ``where`` passes on (an input, an
    event's data, a custom status), is or holds a Task, a generator or a coroutine: a task that
    was never yielded, whose object would otherwise go on as if it were the value."""
    if isinstance(value, _PLAIN):
        return
    problem = check_output(value, False, INPUT_BUDGET, where, "and pass on its result")
    if problem is not None:
        raise DurableTypeError(problem)


def check_output(
    value: Any, is_async: bool, budget: int = 1_000_000, where: str = "the output", then: str = "before returning it"
) -> str | None:
    """A failure message if the output ``value`` is, or holds, a Task, a generator or a coroutine
    (a result that was never yielded or awaited); ``None`` if the output is fine. Looks at the
    first ``budget`` values, breadth first, into lists, tuples, sets and dicts (the work is
    bounded by ``budget``, however large the value). ``where`` names the value in the message,
    ``then`` says what to do with the result once yielded."""
    verb = "await" if is_async else "yield"
    found = _first_pending(value, budget)
    if found is None:
        return None
    item, path = found
    where = _path_text(where, path)
    if isinstance(item, Task):
        return (
            f"{where} is a Task ({type(item).__name__}), not its result: put `{verb}` in front of "
            f"the context call (`result = {verb} context.call_activity(...)`) {then}"
        )
    if inspect.isasyncgen(item):
        return f"{where} is an async generator ({item.__qualname__}), not a value"
    kind = "generator" if inspect.isgenerator(item) else "coroutine"
    if inspect.iscoroutine(item):
        item.close()
    return (
        f"{where} is a {kind} ({item.__qualname__}), not a value: an orchestrator or async function "
        "was called directly; use context.call_sub_orchestrator(...) or context.call_activity(...)"
    )


def _first_pending(value: Any, budget: int) -> tuple[Any, tuple[Any, ...]] | None:
    """The first Task, generator or coroutine among the first ``budget`` values of ``value``
    (breadth first: every value counts once, where its container is looked through), with its
    path of keys (``_SET`` for a set's element); ``None`` if none. Only containers wait in the
    queue, so a long list of plain values costs no memory."""
    if _is_pending(value):
        return value, ()
    queue: deque[tuple[Any, tuple[Any, ...]]] = deque([(value, ())])
    while queue and budget > 0:
        item, path = queue.popleft()
        if isinstance(item, (list, tuple)):
            children: Any = enumerate(item)
        elif isinstance(item, (set, frozenset)):
            children = ((_SET, v) for v in item)
        elif isinstance(item, dict):
            children = iter(item.items())
        else:
            continue
        for key, child in islice(children, budget):
            budget -= 1
            if isinstance(child, _PLAIN):
                continue
            if _is_pending(child):
                return child, (*path, key)
            if isinstance(child, _CONTAINERS):
                queue.append((child, (*path, key)))
    return None


_CONTAINERS = (list, tuple, set, frozenset, dict)


def _is_pending(item: Any) -> bool:
    """A Task, generator, coroutine or async generator: a result never yielded or awaited."""
    return isinstance(item, Task) or inspect.isgenerator(item) or inspect.iscoroutine(item) or inspect.isasyncgen(item)


#: a set's element in a path (sets have no keys)
_SET = object()


def _path_text(where: str, path: tuple[Any, ...]) -> str:
    """``where`` followed by ``path`` as it would be written: ``the output['a'][0]``."""
    for key in path:
        where = f"an element of {where}" if key is _SET else f"{where}[{_safe_repr(key)}]"
    return where


def _safe_repr(key: Any) -> str:
    try:
        return repr(key)
    except Exception:
        return f"<{type(key).__name__}>"


def explain_failure(failure: FailureDetails, exc: BaseException, is_async: bool) -> FailureDetails:
    """``failure`` with a hint added when ``exc`` is a known symptom of a wrong program."""
    if is_async and isinstance(exc, RuntimeError) and "event loop" in exception_message(exc):
        hint = (
            " (an async orchestrator runs on the durable engine, not on an asyncio event loop: "
            "await only context methods, e.g. context.create_timer instead of asyncio.sleep)"
        )
        return replace(failure, message=failure.message + hint)
    return failure


#: What a call of each non-deterministic function should become in orchestrator code.
_USE_INSTEAD = {
    "sleep": "wait with `yield context.create_timer(timedelta(...))`",
    "clock": "use context.current_utc_datetime (the same on every replay)",
    "random": "use context.new_uuid(), or draw the value in an activity",
}
#: functions whose result (or effect) differs on every replay, by what to use instead
_NONDETERMINISTIC: dict[int, tuple[str, str]] = {}


def _register_banned() -> None:
    found: list[tuple[str, Any, str]] = [
        ("time.sleep", time.sleep, "sleep"),
        *((f"time.{n}", getattr(time, n), "clock") for n in (
            "time", "time_ns", "monotonic", "monotonic_ns", "perf_counter", "perf_counter_ns")),
        *((f"datetime.{n}", getattr(_datetime.datetime, n), "clock") for n in ("now", "utcnow", "today")),
        ("date.today", _datetime.date.today, "clock"),
        ("uuid.uuid1", uuid.uuid1, "random"),
        ("uuid.uuid4", uuid.uuid4, "random"),
        ("os.urandom", os.urandom, "random"),
        *((f"random.{n}", getattr(random, n), "random") for n in dir(random)
          if not n.startswith("_") and callable(getattr(random, n)) and not isinstance(getattr(random, n), type)),
        *((f"secrets.{n}", getattr(secrets, n), "random") for n in ("token_bytes", "token_hex", "token_urlsafe",
                                                                     "randbelow", "choice", "randbits")),
    ]
    for label, fn, kind in found:
        _NONDETERMINISTIC[_identity(fn)] = (label, kind)


def _identity(obj: Any) -> int:
    """A key for a function that is the same however it was reached (a method bound to a
    class is a new object each time: key it by its class and name)."""
    owner = getattr(obj, "__self__", None)
    if isinstance(owner, type):
        return hash((id(owner), obj.__name__))
    return id(obj)


_register_banned()


def nondeterministic_calls(fn: Callable[..., Any]) -> list[tuple[str, str, int | None]]:
    """The non-deterministic functions ``fn`` (and the functions and comprehensions nested in
    it) reach through a global name: ``(label, what to use instead, line)``. A static look at
    the bytecode, cheap and without false alarms for names that are not those functions; calls
    made through other objects are not seen."""
    code = getattr(fn, "__code__", None)
    fn_globals = getattr(fn, "__globals__", None)
    if not isinstance(code, types.CodeType) or not isinstance(fn_globals, dict):
        return []
    names: dict[str, Any] = dict(fn_globals)
    for var, cell in zip(code.co_freevars, getattr(fn, "__closure__", None) or ()):
        with contextlib.suppress(ValueError):  # an empty cell
            names[var] = cell.cell_contents
    found: list[tuple[str, str, int | None]] = []
    pending = [code]
    while pending:
        current = pending.pop()
        pending.extend(c for c in current.co_consts if isinstance(c, types.CodeType))
        target: Any = None
        for ins in dis.get_instructions(current):
            if ins.opname in ("LOAD_GLOBAL", "LOAD_DEREF"):
                target = names.get(ins.argval)
            elif ins.opname in ("LOAD_ATTR", "LOAD_METHOD") and isinstance(target, (types.ModuleType, type)):
                target = getattr(target, ins.argval, None)
            else:
                target = None
                continue
            hit = _NONDETERMINISTIC.get(_identity(target)) if target is not None else None
            if hit is not None:
                found.append((hit[0], _USE_INSTEAD[hit[1]], ins.positions.lineno if ins.positions else None))
                target = None
    return found


def warn_nondeterministic_calls(fn: Callable[..., Any], name: str) -> None:
    """Warn (:class:`DeterminismWarning`, at the offending line) about each call
    :func:`nondeterministic_calls` finds in orchestrator ``fn``."""
    code = getattr(fn, "__code__", None)
    for label, instead, line in nondeterministic_calls(fn):
        message = (
            f"orchestrator {name!r} calls {label}: orchestrator code is replayed and must give the same "
            f"result every time; {instead}"
        )
        if code is not None and line is not None:
            warnings.warn_explicit(
                message, DeterminismWarning, code.co_filename, line, module=getattr(fn, "__module__", None)
            )
        else:
            warnings.warn(message, DeterminismWarning, stacklevel=3)
