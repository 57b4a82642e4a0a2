"""The replay executor: history + new events -> new history events + actions. Pure.

An :class:`OrchestrationExecutor` owns one running orchestrator generator. ``replay(history)``
re-runs it over committed history (``is_replaying`` is true, recorded scheduling events are
matched against the actions the code produces); ``process(new_events, now)`` runs one episode
and returns what to commit and what to do. The runtime keeps the executor of a hot instance
between turns, so an event costs O(1); after an eviction or restart it builds a new one and
replays. Both paths give the same result, which ``always_replay=True`` checks.

The handlers of completions live in :mod:`._completions`; results, states and the
classification of events in :mod:`._execution`.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Coroutine, Generator, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from ._actions import Action, UnlockEntity, describe_event, input_differs, matches
from ._completions import CompletionHandlers
from ._context import OrchestrationContext
from ._errors import DurableTypeError, NonDeterminismError
from ._execution import (
    ALWAYS_APPLIED,
    ExecutionResult,
    ExecutionState,
    final_event,
    is_incoming,
    is_scheduling,
    last_episode_start,
)
from ._failures import failure_of
from ._guards import check_output, explain_failure, explain_yielded, running_orchestrator_code
from ._handlers import handlers_of
from ._history import (
    RULES,
    EntityUnlockSent,
    EventRaised,
    EventSent,
    ExecutionResumed,
    ExecutionStarted,
    ExecutionSuspended,
    ExecutionTerminated,
    FailureDetails,
    HistoryEvent,
    OrchestratorCompleted,
    OrchestratorStarted,
    PatchApplied,
    SubOrchestrationInstanceCreated,
    TaskScheduled,
    TimerCreated,
)
from ._registry import OrchestratorSpec, did_you_mean
from ._task import Task
from ._where import code_location

__all__ = ["ExecutionResult", "ExecutionState", "OrchestrationExecutor", "execute", "is_incoming", "is_scheduling",
           "last_episode_start"]

Lookup = Callable[[str], OrchestratorSpec | None] | Mapping[str, OrchestratorSpec]


class OrchestrationExecutor(CompletionHandlers):
    """Runs one orchestration execution's generator over its history. Pure: no I/O."""

    def __init__(self, lookup: Lookup, instance_id: str, entity_check: Callable[[str], None] | None = None) -> None:
        """``lookup`` finds orchestrators by name (a mapping also lets a missing one be answered
        with the closest registered names); the spec found holds every version of the name.
        ``entity_check(name)`` raises if no entity named ``name`` is registered: the context
        then refuses ``call_entity``, ``signal_entity`` and ``lock_entities`` on it at the call
        (``None``: no check)."""
        #: the registered orchestrators (a mapping also names the closest ones when one is missing)
        self._known: Mapping[str, OrchestratorSpec] | None = lookup if isinstance(lookup, Mapping) else None
        self._lookup: Callable[[str], OrchestratorSpec | None] = (
            lookup.get if isinstance(lookup, Mapping) else lookup
        )
        self.context = OrchestrationContext(instance_id)
        self.context._entity_check = entity_check
        self._generator: Generator[Any, Any, Any] | Coroutine[Any, Any, Any] | None = None
        #: the orchestrator (the version) this execution runs, once started
        self._spec: OrchestratorSpec | None = None
        self._current: Task | None = None
        self._state = ExecutionState.RUNNING
        self._output: Any = None
        self._failure: FailureDetails | None = None
        self._raised: BaseException | None = None
        self._suspended = False
        self._held: list[HistoryEvent] = []
        self._started = False
        self._final_recorded = False
        #: the orchestrator is an ``async def`` (its coroutine is driven like a generator)
        self._is_async = False
        #: the handler of each event type: one table per executor class, shared
        self._handlers = handlers_of(type(self))

    # -- public ---------------------------------------------------------------------------------

    @property
    def state(self) -> ExecutionState:
        """The state after the last event applied."""
        return self._state

    def replay(self, history: Iterable[HistoryEvent]) -> None:
        """Re-run the orchestrator over committed ``history`` (``is_replaying`` is true).

        A mismatch between history and the code ends the execution as Failed with a
        :class:`NonDeterminismError`; the next :meth:`process` reports it.
        """
        events = history if isinstance(history, list) else list(history)
        # is_patched answers from the markers of the whole execution: a marker is recorded
        # after the code that asked, in the same episode
        self.context._recorded_patches.update(e.patch_id for e in events if type(e) is PatchApplied)
        self.context._is_replaying = True
        held: list[HistoryEvent] = []
        try:
            for event in events:
                if isinstance(event, OrchestratorStarted):
                    self._apply(event)
                    for incoming in held:
                        self._apply(incoming)
                    held.clear()
                elif is_incoming(event):
                    held.append(event)  # recorded before its episode's OrchestratorStarted
                else:
                    self._apply(event)
            for incoming in held:
                self._apply(incoming)
        finally:
            self.context._is_replaying = False

    def process(self, new_events: Sequence[HistoryEvent], now: datetime) -> ExecutionResult:
        """Run one episode over ``new_events`` at time ``now``; return what to commit and do."""
        ctx = self.context
        ctx._is_replaying = False
        new_events = self._versioned(new_events)
        started = OrchestratorStarted(now)
        # Recorded as in the seed's table: the episode's incoming events, then
        # OrchestratorStarted. Applied with OrchestratorStarted first, so the code runs at the
        # episode's time; replay() restores that order.
        out: list[HistoryEvent] = [*new_events, started]
        self._apply(started)
        for event in new_events:
            if self._state.is_final:
                if isinstance(event, EventRaised):
                    ctx._buffered_events.append(event)
                continue
            self._apply(event)
        if ctx._new_patches:
            out.extend(PatchApplied(now, patch_id) for patch_id in ctx._new_patches)
            ctx._new_patches.clear()
        actions = [a for _, a in sorted(ctx._pending_actions.items())]
        ctx._pending_actions.clear()
        out.extend(a.to_event(now) for a in actions)
        out.append(OrchestratorCompleted(now))
        return self._result(out, actions, now)

    def _versioned(self, events: Sequence[HistoryEvent]) -> Sequence[HistoryEvent]:
        """``events``, with each new start that names no version given the latest version of
        its orchestrator: the version it runs, recorded with it, so replay runs the same; and
        each new start marked with the call checks it runs under (``ExecutionStarted.rules``)."""
        for i, event in enumerate(events):
            if type(event) is ExecutionStarted and (event.version is None or event.rules is None):
                family = self._lookup(event.name)
                version = family.version if family is not None and event.version is None else event.version
                events = [*events[:i], replace(event, version=version, rules=RULES), *events[i + 1 :]]
        return events

    def _result(self, out: list[HistoryEvent], actions: list[Action], now: datetime) -> ExecutionResult:
        """The :class:`ExecutionResult` of an episode that recorded ``out`` and took ``actions``
        (the final event appended to ``out`` if the execution just ended)."""
        ctx = self.context
        carryover: list[EventRaised] = []
        withdrawn, ctx._withdrawn_lock = ctx._withdrawn_lock, None
        if self._state.is_final and not self._final_recorded:
            self._final_recorded = True
            out.append(final_event(self._state, self._output, self._failure, now))
            if self._state is ExecutionState.CONTINUED_AS_NEW and ctx._continue_as_new[1]:  # type: ignore[index]
                carryover = list(ctx._buffered_events)
        changed, ctx._custom_status_changed = ctx._custom_status_changed, False
        return ExecutionResult(
            new_events=out,
            actions=actions,
            state=self._state,
            output=self._output,
            failure=self._failure,
            custom_status=ctx._custom_status,
            carryover=carryover,
            custom_status_changed=changed,
            withdrawn_lock=withdrawn,
            continue_version=ctx._continue_version,
            continue_generation=ctx._generation + 1 if self._state is ExecutionState.CONTINUED_AS_NEW else None,
            raised=self._raised if self._state is ExecutionState.FAILED else None,
        )

    def abandon(self) -> tuple[list[Action], tuple[tuple[str, ...], int] | None]:
        """The runtime fails this execution from outside, after an episode (a value it produced
        cannot be stored, so that episode's actions are dropped): what it must still send.
        Returns the unlock actions for every lock it holds (to record and send) and the lock
        request it was still waiting for (to withdraw), as :meth:`process` does for an
        execution that ends by itself. The execution is over: :meth:`close` then runs the
        code's ``finally`` blocks as an end, not as a replay."""
        ctx = self.context
        self._state = ExecutionState.FAILED
        ctx._pending_actions.clear()
        ctx._release_all_locks()
        actions = [a for _, a in sorted(ctx._pending_actions.items())]
        ctx._pending_actions.clear()
        withdrawn, ctx._withdrawn_lock = ctx._withdrawn_lock, None
        return actions, withdrawn

    def close(self) -> None:
        """Close the user's generator (or coroutine) now, so its ``finally`` blocks run now and
        not at garbage collection; errors they raise are ignored.

        The executor does this itself when the execution completes, fails, continues as new or
        is terminated; the runtime calls it when it evicts the instance, and :func:`execute`
        before it returns. When the execution has not ended (an eviction, or ``execute`` leaving
        a running instance), the code is only being put away and will be replayed: its
        ``finally`` blocks then run with ``context.is_replaying`` true, as any code that runs
        again does, so code guarded by ``if not context.is_replaying`` runs once, when the
        execution really ends. Work a ``finally`` block schedules while being closed is dropped
        (an ended execution schedules nothing more).
        """
        gen, self._generator = self._generator, None
        if gen is None:
            return
        ctx = self.context
        was_replaying, pending, sequence = ctx._is_replaying, dict(ctx._pending_actions), ctx._sequence
        ctx._is_replaying = was_replaying or not self._state.is_final
        try:
            with contextlib.suppress(BaseException), running_orchestrator_code():  # user code must not fail this
                gen.close()
        finally:
            ctx._is_replaying = was_replaying
            ctx._pending_actions, ctx._sequence = pending, sequence

    # -- event handlers ------------------------------------------------------------------------

    def _apply(self, event: HistoryEvent) -> None:
        if self._suspended and not isinstance(event, ALWAYS_APPLIED) and not is_scheduling(event):
            self._held.append(event)
            return
        handler = self._handlers.get(type(event))
        if handler is None:
            raise DurableTypeError(f"unknown history event type {event.event_type}")
        handler(self, event)

    def _on_orchestrator_started(self, event: OrchestratorStarted) -> None:
        self.context._now = event.timestamp

    def _on_execution_started(self, event: ExecutionStarted) -> None:
        """Start the orchestrator (always applied after its episode's OrchestratorStarted,
        so ``current_utc_datetime`` is that episode's time on the first run and on replay)."""
        if self._started:
            return
        self._started = True
        ctx = self.context
        ctx._input = event.input
        ctx._execution_id = event.execution_id
        ctx._generation = event.generation or 0
        ctx._rules = event.rules or 0
        ctx._parent_instance_id = event.parent.instance_id if event.parent else None
        spec = self._version_of(event)
        if spec is None:
            return
        self._spec = spec
        try:
            with running_orchestrator_code():
                result = spec.fn(ctx)
        except BaseException as exc:
            self._fail_with(exc)
            return
        if inspect.isgenerator(result) or inspect.iscoroutine(result):
            self._generator = result
            self._is_async = inspect.iscoroutine(result)
            self._step(result.send, None)
        else:
            self._finish_returned(result)

    def _version_of(self, event: ExecutionStarted) -> OrchestratorSpec | None:
        """The orchestrator ``event`` starts, in exactly the version it records (a new start
        without one was given the latest by :meth:`_versioned`); ``None``, the execution
        failed, if that name or version is not registered: another version never runs."""
        family = self._lookup(event.name)
        if family is None:
            known = self._known.keys() if self._known is not None else ()
            message = f"no orchestrator named {event.name!r} is registered ({did_you_mean(event.name, known)})"
            self._fail(FailureDetails("OrchestratorNotFound", message))
            return None
        spec = family.at_version(event.version)
        if spec is None:
            self._fail(FailureDetails("OrchestratorVersionNotFound", family.missing_version(event.version)))
        return spec

    def _on_orchestrator_completed(self, event: OrchestratorCompleted) -> None:
        if self.context._is_replaying and self.context._pending_actions and not self._state.is_final:
            first = min(self.context._pending_actions)
            action = self.context._pending_actions[first]
            self._nondeterminism("no further action in this episode", action.describe())

    def _on_final_recorded(self, event: HistoryEvent) -> None:
        self._final_recorded = True

    def _on_marker(self, event: HistoryEvent) -> None:
        """A record that changes nothing on replay: a rewind, or a patch marker (read ahead
        by :meth:`replay`)."""

    def _on_scheduled(self, event: TaskScheduled | TimerCreated | SubOrchestrationInstanceCreated | EventSent) -> None:
        # Code that completed early during replay must still match what history scheduled
        # afterwards (that is how returning early is caught); a failed or terminated
        # execution has nothing left to match.
        ctx = self.context
        if self._final_recorded or self._state in (ExecutionState.FAILED, ExecutionState.TERMINATED):
            # still match what the ending episode recorded (its unlocks), so replay adds nothing
            action = ctx._pending_actions.get(event.event_id)
            if action is not None and matches(action, event):
                del ctx._pending_actions[event.event_id]
            if isinstance(event, EntityUnlockSent):
                ctx._granted.pop(event.instance_id, None)
            return
        if isinstance(event, EntityUnlockSent):
            ctx._granted.pop(event.instance_id, None)
        action = ctx._pending_actions.pop(event.event_id, None)
        if action is None:
            self._nondeterminism(describe_event(event), "no action with that task number")
        elif not matches(action, event):
            self._nondeterminism(describe_event(event), action.describe())
        elif input_differs(action, event):
            self._nondeterminism(
                f"{describe_event(event)} with the input it recorded",
                f"{action.describe()} with another input: the task's input changed since the instance recorded it",
            )

    def _on_terminated(self, event: ExecutionTerminated) -> None:
        if self._state.is_final:
            return
        self._state = ExecutionState.TERMINATED
        self._output = event.reason
        self._suspended = False
        self.context._pending_actions.clear()  # nothing scheduled before it in the batch runs
        self.context._release_all_locks()
        self.close()

    def _on_suspended(self, event: ExecutionSuspended) -> None:
        if not self._state.is_final:
            self._suspended = True
            self._state = ExecutionState.SUSPENDED

    def _on_resumed(self, event: ExecutionResumed) -> None:
        if not self._suspended:
            return
        self._suspended = False
        self._state = ExecutionState.RUNNING
        held, self._held = self._held, []
        for held_event in held:
            if self._state.is_final:
                if isinstance(held_event, EventRaised):
                    self.context._buffered_events.append(held_event)
                continue
            self._apply(held_event)

    # -- driving the generator -------------------------------------------------------------------

    def _resume(self) -> None:
        while (
            self._generator is not None
            and self._current is not None
            and (self._current.is_completed or self._current.is_cancelled)
            and not self._state.is_final
        ):
            task, gen = self._current, self._generator
            if task._exception is not None:
                self._step(gen.throw, task._exception)
            else:
                self._step(gen.send, task._result)

    def _step(self, advance: Callable[[Any], Any], arg: Any) -> None:
        """Advance the generator (or coroutine) by ``advance(arg)`` and handle what it yields
        or raises."""
        try:
            with running_orchestrator_code():
                yielded = advance(arg)
        except StopIteration as stop:
            self._finish_returned(stop.value)
            return
        except BaseException as exc:
            self._fail_with(exc)
            return
        if self.context._continue_as_new is not None:
            self._finish_returned(None)
            return
        if not isinstance(yielded, Task):
            self._fail_with(DurableTypeError(explain_yielded(yielded, self._is_async)))
            return
        self._current = yielded
        self._resume()

    def _finish_returned(self, value: Any) -> None:
        self._current = None
        if self.context._continue_as_new is not None:
            value = self.context._continue_as_new[0]
        problem = check_output(value, self._is_async)
        if problem is not None:
            self._fail_with(DurableTypeError(problem))
            return
        if self.context._continue_as_new is not None:
            self._state = ExecutionState.CONTINUED_AS_NEW
        else:
            self._state = ExecutionState.COMPLETED
        self._output = value
        self.context._release_all_locks()
        self.close()

    def _fail_with(self, exc: BaseException) -> None:
        self._fail(explain_failure(failure_of(exc), exc, self._is_async))
        self._raised = exc

    def _fail(self, failure: FailureDetails) -> None:
        self._state = ExecutionState.FAILED
        self._failure = failure
        self._current = None
        # A failed episode has no side effects, except that every lock it held is released
        # (by a `with` block the exception left, or now).
        pending = self.context._pending_actions
        self.context._pending_actions = {k: a for k, a in pending.items() if isinstance(a, UnlockEntity)}
        self.context._release_all_locks()
        self.close()

    def _nondeterminism(self, expected: str, actual: str) -> None:
        """Fail with a :class:`NonDeterminismError` that names where the code stood."""
        fn = self._spec.fn if self._spec is not None else None
        self._fail_with(NonDeterminismError(expected, actual, code_location(self._generator, fn)))


def execute(
    lookup: Lookup,
    instance_id: str,
    history: Sequence[HistoryEvent],
    new_events: Sequence[HistoryEvent],
    now: datetime,
) -> ExecutionResult:
    """Replay ``history``, run one episode over ``new_events`` at ``now``, return the result.

    The pure form of the engine: the same inputs always give the same output. The executor
    it builds is closed before this returns (see :meth:`OrchestrationExecutor.close`): the
    generator of an execution still running is put away with ``is_replaying`` true.
    """
    executor = OrchestrationExecutor(lookup, instance_id)
    try:
        executor.replay(history)
        return executor.process(new_events, now)
    finally:
        executor.close()
