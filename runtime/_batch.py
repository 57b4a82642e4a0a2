"""What an activity worker runs: one batch of activities, the code a Ray task, the warm worker
and a shard host that runs small batches itself all share.

Its own module (imported by ``runtime._activities``, which dispatches batches, and by
``runtime._warm``, whose worker runs them) so neither of those imports the other.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Sequence
from typing import Any

from orchestrations._registry import ActivitySpec

from . import _tracing
from ._codec import decode, encode, failure_from_exception, load_value

_registry_cache: dict[str, dict[str, ActivitySpec]] = {}


def _activities(registry_key: str, registry_blob: bytes) -> dict[str, ActivitySpec]:
    table = _registry_cache.get(registry_key)
    if table is None:
        _registry_cache.clear()
        table = _registry_cache[registry_key] = decode(registry_blob)
    return table


#: one call of a batch: (activity name, encoded input) or (name, input, ``traceparent`` of the
#: episode that scheduled it)
BatchCall = tuple[str, str] | tuple[str, str, str | None]


def run_batch(
    registry_key: str, registry_blob: bytes, calls: Sequence[BatchCall], tracing_setup: Any = None
) -> bytes:
    """Run ``calls`` and return the encoded list of outcomes.

    Each outcome is ``(True, result)`` or ``(False, FailureDetails)``. A result that cannot be
    encoded becomes a failure of that call only. ``tracing_setup`` (the hub's, see
    ``runtime._tracing.setup``) runs once in this process; while tracing is on here, each call
    that carries a ``traceparent`` runs in a span ``activity:<name>``, its child (a call without
    one, dispatched again after a restart or sent by a hub that does not trace, has no span: a
    worker process serves every hub of the cluster).
    """
    table = _activities(registry_key, registry_blob)
    if tracing_setup is not None:
        _tracing.setup(tracing_setup)
    traced = _tracing.enabled()
    outcomes: list[tuple[bool, Any]] = [(False, None)] * len(calls)
    pending_async: list[tuple[int, Any]] = []
    for i, call in enumerate(calls):
        name, input_blob = call[0], call[1]
        trace = call[2] if traced and len(call) > 2 else None  # type: ignore[misc]
        spec = table[name]
        try:
            arg = load_value(input_blob)
            if spec.is_async:
                coro = _call(spec.fn, arg)
                pending_async.append((i, coro if trace is None else _traced_async(coro, name, trace)))
                continue
            if trace is not None:
                with _tracing.span(f"activity:{name}", trace, _tracing.SERVER, {"durable.activity": name}):
                    outcomes[i] = (True, _call(spec.fn, arg))
            else:
                outcomes[i] = (True, _call(spec.fn, arg))
        except Exception as exc:
            outcomes[i] = (False, failure_from_exception(exc))
    if pending_async:
        asyncio.run(_gather_into(outcomes, pending_async))
    try:
        return encode(outcomes, "activity results")
    except Exception:
        return encode([_encodable(o) for o in outcomes], "activity results")


async def _traced_async(coro: Any, name: str, trace: str | None) -> Any:
    """Await an async activity's coroutine in its span (current in its task)."""
    with _tracing.span(f"activity:{name}", trace, _tracing.SERVER, {"durable.activity": name}):
        return await coro


_takes_input: dict[Any, bool] = {}


def _call(fn: Callable[..., Any], arg: Any) -> Any:
    """Call an activity with its input, or with nothing if it takes no parameter."""
    takes = _takes_input.get(fn)
    if takes is None:
        try:
            params = inspect.signature(fn).parameters.values()
            takes = any(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL) for p in params)
        except (TypeError, ValueError):
            takes = True
        _takes_input[fn] = takes
    return fn(arg) if takes else fn()


async def _gather_into(outcomes: list[tuple[bool, Any]], pending: list[tuple[int, Any]]) -> None:
    results = await asyncio.gather(*(coro for _, coro in pending), return_exceptions=True)
    for (i, _), result in zip(pending, results):
        if isinstance(result, BaseException):
            outcomes[i] = (False, failure_from_exception(result))
        else:
            outcomes[i] = (True, result)


def _encodable(outcome: tuple[bool, Any]) -> tuple[bool, Any]:
    try:
        encode(outcome[1])
    except Exception as exc:
        return (False, failure_from_exception(exc))
    return outcome
