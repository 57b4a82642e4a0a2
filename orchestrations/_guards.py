"""Guards against orchestrator code that is wrong: each check names the mistake and the fix.

Orchestrator code must yield (or await) durable tasks, return plain values, and reach the
outside world only through the context. These helpers recognise the usual mistakes (a missing
``yield``, a list yielded instead of ``task_all``, an activity called as a plain function, an
asyncio primitive awaited in an ``async def`` orchestrator) and word the failure so that it
says what to write instead. Pure: no I/O.
"""

from __future__ import annotations

import contextlib
import inspect
import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from ._errors import describe
from ._history import FailureDetails
from ._task import Task

_state = threading.local()


@contextlib.contextmanager
def running_orchestrator_code() -> Iterator[None]:
    """Mark this thread as running orchestrator code for the duration (see
    :func:`in_orchestrator_code`); nests."""
    depth = getattr(_state, "depth", 0)
    _state.depth = depth + 1
    try:
        yield
    finally:
        _state.depth = depth


def in_orchestrator_code() -> bool:
    """Whether this thread is running an orchestrator's code right now (an activity called
    directly from there would run inline, not durably)."""
    return getattr(_state, "depth", 0) > 0


def explain_yielded(value: object, is_async: bool) -> str:
    """The failure message for an orchestrator that yielded (or awaited) ``value``, not a Task."""
    verb = "await" if is_async else "yield"
    if is_async and (value is None or hasattr(value, "_asyncio_future_blocking")):
        return (
            f"an async orchestrator awaited something that is not a durable task ({describe(value)}): "
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
            f"an orchestrator must {verb} a Task, it {verb}ed a generator ({describe(value)}): "
            "to run another orchestrator, use context.call_sub_orchestrator(...) "
            "(or `yield from` it to run its steps inline)"
        )
    if inspect.iscoroutine(value):
        value.close()
        return (
            f"an orchestrator must {verb} a Task, it {verb}ed a coroutine ({describe(value)}): "
            "call activities with context.call_activity(...), not directly"
        )
    if value is None:
        return f"an orchestrator must {verb} a Task, it {verb}ed None: write `{verb} context.call_activity(...)`"
    return f"an orchestrator must {verb} a Task, it {verb}ed {describe(value)}"


def check_output(value: Any, is_async: bool, budget: int = 100_000) -> str | None:
    """A failure message if the output ``value`` is, or holds, a Task, a generator or a coroutine
    (a result that was never yielded or awaited); ``None`` if the output is fine. Looks at most
    ``budget`` values deep into lists, tuples, sets and dicts."""
    verb = "await" if is_async else "yield"
    stack: list[tuple[Any, str]] = [(value, "the output")]
    while stack and budget > 0:
        item, where = stack.pop()
        budget -= 1
        if isinstance(item, Task):
            return (
                f"{where} is a Task ({type(item).__name__}), not its result: put `{verb}` in front of "
                f"the context call (`result = {verb} context.call_activity(...)`) before returning it"
            )
        if inspect.isgenerator(item) or inspect.iscoroutine(item):
            kind = "generator" if inspect.isgenerator(item) else "coroutine"
            if inspect.iscoroutine(item):
                item.close()
            return (
                f"{where} is a {kind} ({describe(item)}), not a value: an orchestrator or async function "
                "was called directly; use context.call_sub_orchestrator(...) or context.call_activity(...)"
            )
        if isinstance(item, (list, tuple)):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(item))
        elif isinstance(item, (set, frozenset)):
            stack.extend((v, f"an element of {where}") for v in item)
        elif isinstance(item, dict):
            stack.extend((v, f"{where}[{k!r}]") for k, v in item.items())
    return None


def explain_failure(failure: FailureDetails, exc: BaseException, is_async: bool) -> FailureDetails:
    """``failure`` with a hint added when ``exc`` is a known symptom of a wrong program."""
    if is_async and isinstance(exc, RuntimeError) and "event loop" in str(exc):
        hint = (
            " (an async orchestrator runs on the durable engine, not on an asyncio event loop: "
            "await only context methods, e.g. context.create_timer instead of asyncio.sleep)"
        )
        return replace(failure, message=failure.message + hint)
    return failure
