"""Activities run on Ray workers, many per Ray task.

A shard host groups the activities one turn scheduled by their Ray options and sends them in
batches: one Ray task runs a whole batch (sync activities one after another, async ones
concurrently on one event loop) and returns every outcome encoded in one blob. This is what
lets a fan-out beat one-Ray-task-per-call: scheduling cost is paid per batch, not per call.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import ray

from orchestrations._registry import ActivitySpec

from ._codec import decode, encode, failure_from_exception

#: Most activities one Ray task runs.
MAX_BATCH = 512


@dataclass(frozen=True, slots=True)
class ActivityCall:
    """One scheduled activity: who asked (instance, execution, task id), what, and its input."""

    instance_id: str
    execution_id: str
    task_id: int
    name: str
    input_blob: bytes


_registry_cache: dict[str, dict[str, ActivitySpec]] = {}


def _activities(registry_key: str, registry_blob: bytes) -> dict[str, ActivitySpec]:
    table = _registry_cache.get(registry_key)
    if table is None:
        _registry_cache.clear()
        table = _registry_cache[registry_key] = decode(registry_blob)
    return table


def run_batch(registry_key: str, registry_blob: bytes, calls: Sequence[tuple[str, bytes]]) -> bytes:
    """Run ``calls`` (name, encoded input) and return the encoded list of outcomes.

    Each outcome is ``(True, result)`` or ``(False, FailureDetails)``. A result that cannot be
    encoded becomes a failure of that call only.
    """
    table = _activities(registry_key, registry_blob)
    outcomes: list[tuple[bool, Any]] = [(False, None)] * len(calls)
    pending_async: list[tuple[int, Any]] = []
    for i, (name, input_blob) in enumerate(calls):
        spec = table[name]
        try:
            arg = decode(input_blob)
            if spec.is_async:
                pending_async.append((i, spec.fn(arg)))
                continue
            outcomes[i] = (True, spec.fn(arg))
        except Exception as exc:
            outcomes[i] = (False, failure_from_exception(exc))
    if pending_async:
        asyncio.run(_gather_into(outcomes, pending_async))
    try:
        return encode(outcomes, "activity results")
    except Exception:
        return encode([_encodable(o) for o in outcomes], "activity results")


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


_remote_run_batch = ray.remote(run_batch)


def batch_sizes(count: int, parallelism: int) -> int:
    """How many calls one Ray task takes when ``count`` are ready and ``parallelism`` CPUs run
    them: enough batches to keep every CPU busy twice over, none larger than MAX_BATCH."""
    return max(1, min(MAX_BATCH, math.ceil(count / max(1, 2 * parallelism))))


def submit_batch(
    registry_key: str, registry_ref: Any, calls: Sequence[tuple[str, bytes]], options: dict[str, Any]
) -> Any:
    """Start one Ray task for ``calls``; returns its ObjectRef."""
    fn = _remote_run_batch.options(**options) if options else _remote_run_batch
    return fn.remote(registry_key, registry_ref, list(calls))
