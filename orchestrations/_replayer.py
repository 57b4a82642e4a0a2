"""Replaying stored histories against the current code, before it is deployed. Pure.

A shard host that restarts rebuilds every instance by replaying its history through the code
registered now (:meth:`OrchestrationExecutor.replay`). :class:`Replayer` does exactly that, for
many histories at once and without Ray, and reports for each whether the code still agrees
with what the history recorded: Temporal's ``Replayer``, for CI before a deploy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ._errors import DurableTypeError, DurableValueError, NonDeterminismError, describe
from ._executor import ExecutionState, OrchestrationExecutor
from ._failures import error_type_name
from ._history import ContinueAsNew, ExecutionCompleted, ExecutionStarted, HistoryEvent, OrchestratorCompleted
from ._registry import OrchestratorSpec, Registry, default_registry, did_you_mean

#: what a history that ends in each final event recorded, as the executor's state
_RECORDED_STATES = {
    "Completed": ExecutionState.COMPLETED,
    "Failed": ExecutionState.FAILED,
    "Terminated": ExecutionState.TERMINATED,
}


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """What replaying one instance's history through the current code found.

    ``name`` is the orchestrator the history started (``None`` if it has no
    ``ExecutionStarted``); ``error_type`` and ``message`` say why the instance would fail
    (``None`` when it replays cleanly), as in ``FailureDetails``:
    ``"orchestrations.NonDeterminismError"`` (the code took another path
    than the history), ``"OrchestratorNotFound"`` (no orchestrator of that name is registered),
    the type of an exception the code raises where the history shows it went on, or
    ``"InvalidHistory"``; a loader reports a history it cannot read as ``"UndecodableHistory"``
    (``runtime.replay.replay_files``).
    """

    instance_id: str
    name: str | None
    error_type: str | None = None
    message: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the history replays through the current code without a difference."""
        return self.error_type is None

    def describe(self) -> str:
        """One line: ``"<id> (<name>): ok"`` or ``"<id> (<name>): <type>: <message>"``."""
        verdict = "ok" if self.ok else f"{self.error_type}: {self.message}"
        return f"{self.instance_id} ({self.name or '?'}): {verdict}"


class Replayer:
    """Replays stored histories through the orchestrators of ``registry`` (``None``: the
    process-wide registry the decorators write to, as it is when :meth:`replay` runs).

    Replay runs the orchestrators' code (the same generators a shard host resumes), with
    ``is_replaying`` true; activities, timers and entities are not run: their recorded results
    are fed back. Nothing is written anywhere.
    """

    def __init__(self, registry: Registry | None = None) -> None:
        if registry is not None and not isinstance(registry, Registry):
            raise DurableTypeError(f"registry must be an orchestrations.Registry or None, got {describe(registry)}")
        self._registry = registry

    def replay(
        self, histories: Iterable[tuple[str, Iterable[HistoryEvent]]] | Mapping[str, Iterable[HistoryEvent]]
    ) -> list[ReplayResult]:
        """One :class:`ReplayResult` per history, in order. ``histories`` holds
        ``(instance_id, events)`` pairs (or maps ids to events), each list of events one
        execution's history as stored, oldest first. An empty input gives an empty list; a
        history that cannot be replayed (no ``ExecutionStarted``) gives an error result, not
        an exception. Raises :class:`DurableTypeError` for an item that is not such a pair."""
        registry = default_registry if self._registry is None else self._registry
        orchestrators, _, entity_specs, _ = registry.snapshot()
        pairs = histories.items() if isinstance(histories, Mapping) else histories
        return [self._replay_one(*_checked_pair(pair), orchestrators, entity_specs) for pair in pairs]

    def _replay_one(
        self, instance_id: str, events: list[HistoryEvent], orchestrators: dict[str, OrchestratorSpec],
        entity_specs: Mapping[str, Any],
    ) -> ReplayResult:
        started = next((e for e in events if isinstance(e, ExecutionStarted)), None)
        if started is None:
            return ReplayResult(instance_id, None, "InvalidHistory", "the history has no ExecutionStarted event")
        if started.name not in orchestrators:
            hint = did_you_mean(started.name, orchestrators)
            message = f"no orchestrator named {started.name!r} is registered ({hint})"
            return ReplayResult(instance_id, started.name, "OrchestratorNotFound", message)
        executor = OrchestrationExecutor(orchestrators, instance_id, _entity_check(entity_specs))
        try:
            executor.replay(events)
        except Exception as exc:  # a history the engine cannot apply (an event of another kind)
            return ReplayResult(instance_id, started.name, "InvalidHistory", f"{type(exc).__name__}: {exc}")
        finally:
            executor.close()
        problem = _difference(executor, events)
        if problem is None:
            return ReplayResult(instance_id, started.name)
        return ReplayResult(instance_id, started.name, *problem)


def _checked_pair(pair: Any) -> tuple[str, list[HistoryEvent]]:
    """``(instance_id, events)`` from one item of :meth:`Replayer.replay`'s input."""
    if not isinstance(pair, tuple | list) or len(pair) != 2 or not isinstance(pair[0], str):
        raise DurableTypeError(f"expected (instance_id, list of history events), got {describe(pair)}")
    instance_id, events = pair
    if isinstance(events, str | bytes) or not isinstance(events, Iterable):
        raise DurableTypeError(
            f"the history of {instance_id!r} must be a list of history events, got {describe(events)}"
        )
    events = list(events)
    for event in events:
        if not isinstance(event, HistoryEvent):
            raise DurableTypeError(f"the history of {instance_id!r} holds {describe(event)}, not a history event")
    return instance_id, events


def _entity_check(entity_specs: Mapping[str, Any]) -> Callable[[str], None]:
    """The shard host's check: an entity name nobody registered is refused at the call."""

    def check(name: str) -> None:
        if name.lower() not in entity_specs:
            hint = did_you_mean(name, entity_specs, fold_case=True)
            raise DurableValueError(f"no entity named {name!r} is registered ({hint})")

    return check


def _recorded_state(events: list[HistoryEvent]) -> ExecutionState | None:
    """How the history says the execution ended, or ``None`` if it is still going."""
    for event in reversed(events):
        if isinstance(event, ContinueAsNew):
            return ExecutionState.CONTINUED_AS_NEW
        if isinstance(event, ExecutionCompleted):
            return _RECORDED_STATES.get(event.status, ExecutionState.COMPLETED)
    return None


def _difference(executor: OrchestrationExecutor, events: list[HistoryEvent]) -> tuple[str, str] | None:
    """(error type, message) if the code, replayed over ``events``, did not end where the
    history did; ``None`` if it agrees. A failure the history recorded too (same error type
    and message) is agreement: the instance failed then and fails the same way now."""
    recorded, state = _recorded_state(events), executor.state
    failure = executor._failure
    if state is ExecutionState.FAILED and failure is not None:
        recorded_failure = next(
            (e.failure for e in reversed(events) if isinstance(e, ExecutionCompleted) and e.failure is not None), None
        )
        if recorded is ExecutionState.FAILED and recorded_failure is not None and (
            (recorded_failure.error_type, recorded_failure.message) == (failure.error_type, failure.message)
        ):
            return None
        return failure.error_type, failure.message
    if state is ExecutionState.TERMINATED or recorded is ExecutionState.TERMINATED:
        return None  # termination comes from outside: the code's path up to it was matched
    if recorded is None:
        # events after the last episode (hand-written histories end so; a shard host never
        # stores them) are new to the code: it may well finish on them
        if state.is_final and isinstance(events[-1], OrchestratorCompleted):
            return _diverged("no further action (the instance is still running)", f"the orchestrator {_ending(state)}")
        return None
    if state is not recorded:
        return _diverged(f"the orchestrator {_ending(recorded)}", f"the orchestrator {_ending(state)}")
    return None


def _ending(state: ExecutionState) -> str:
    return {
        ExecutionState.COMPLETED: "returning",
        ExecutionState.FAILED: "failing",
        ExecutionState.CONTINUED_AS_NEW: "continuing as new",
        ExecutionState.TERMINATED: "being terminated",
    }.get(state, "still waiting for a task")


def _diverged(expected: str, actual: str) -> tuple[str, str]:
    return error_type_name(NonDeterminismError), str(NonDeterminismError(expected, actual))
