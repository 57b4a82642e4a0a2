"""The replay executor: history + new events -> new history events + actions. Pure.

An :class:`OrchestrationExecutor` owns one running orchestrator generator. ``replay(history)``
re-runs it over committed history (``is_replaying`` is true, recorded scheduling events are
matched against the actions the code produces); ``process(new_events, now)`` runs one episode
and returns what to commit and what to do. The runtime keeps the executor of a hot instance
between turns, so an event costs O(1); after an eviction or restart it builds a new one and
replays. Both paths give the same result, which ``always_replay=True`` checks.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Coroutine, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from ._actions import SCHEDULING_EVENTS, Action, UnlockEntity, describe_event, matches
from ._context import LockHandle, OrchestrationContext
from ._errors import DurableTypeError, HttpTimeoutError, NonDeterminismError
from ._failures import failure_of, task_failed_error, task_label
from ._guards import check_output, explain_failure, explain_yielded, running_orchestrator_code
from ._history import (
    ContinueAsNew,
    EntityLockGranted,
    EntityLockRequested,
    EntityOperationCalled,
    EntityOperationCompleted,
    EntityOperationFailed,
    EntityOperationSignaled,
    EntityUnlockSent,
    EventRaised,
    EventSent,
    ExecutionCompleted,
    ExecutionResumed,
    ExecutionRewound,
    ExecutionStarted,
    ExecutionSuspended,
    ExecutionTerminated,
    FailureDetails,
    HistoryEvent,
    OrchestratorCompleted,
    OrchestratorStarted,
    SubOrchestrationInstanceCompleted,
    SubOrchestrationInstanceCreated,
    SubOrchestrationInstanceFailed,
    TaskCompleted,
    TaskFailed,
    TaskScheduled,
    TimerCreated,
    TimerFired,
)
from ._http import HttpTask
from ._registry import OrchestratorSpec, did_you_mean
from ._task import RetryableTask, Task, TimerTask


class ExecutionState(StrEnum):
    """Where an instance stands after an episode."""

    RUNNING = "Running"
    SUSPENDED = "Suspended"
    COMPLETED = "Completed"
    FAILED = "Failed"
    TERMINATED = "Terminated"
    CONTINUED_AS_NEW = "ContinuedAsNew"

    @property
    def is_final(self) -> bool:
        """Whether this execution is over (continue-as-new starts a new one)."""
        return self not in (ExecutionState.RUNNING, ExecutionState.SUSPENDED)


@dataclass(slots=True)
class ExecutionResult:
    """What one episode produced.

    ``new_events`` are appended to history in order; ``actions`` are carried out after the
    commit. For ``CONTINUED_AS_NEW``, ``output`` is the new input and ``carryover`` the
    external events to deliver to the new execution.
    """

    new_events: list[HistoryEvent]
    actions: list[Action]
    state: ExecutionState
    output: Any = None
    failure: FailureDetails | None = None
    custom_status: Any = None
    carryover: list[EventRaised] = field(default_factory=list)
    #: the episode called ``set_custom_status`` (``custom_status`` is then to be stored,
    #: ``None`` clearing it)
    custom_status_changed: bool = False
    #: the execution ended while waiting for the locks of a critical section: (lock set, task
    #: id of its lock request), to withdraw from the entities (an unlock each), so that a grant
    #: never reaches a later execution's turn and no entity stays locked for an execution that
    #: is gone
    withdrawn_lock: tuple[tuple[str, ...], int] | None = None


class OrchestrationExecutor:
    """Runs one orchestration execution's generator over its history. Pure: no I/O."""

    def __init__(
        self,
        lookup: Callable[[str], OrchestratorSpec | None] | Mapping[str, OrchestratorSpec],
        instance_id: str,
        entity_check: Callable[[str], None] | None = None,
    ) -> None:
        """``lookup`` finds orchestrators by name (a mapping also lets a missing one be answered
        with the closest registered names). ``entity_check(name)`` raises if no entity named
        ``name`` is registered: the context then refuses ``call_entity``, ``signal_entity`` and
        ``lock_entities`` on it at the call (``None``: no check)."""
        #: the registered orchestrators (a mapping also names the closest ones when one is missing)
        self._known: Mapping[str, OrchestratorSpec] | None = lookup if isinstance(lookup, Mapping) else None
        self._lookup: Callable[[str], OrchestratorSpec | None] = (
            lookup.get if isinstance(lookup, Mapping) else lookup
        )
        self.context = OrchestrationContext(instance_id)
        self.context._entity_check = entity_check
        self._generator: Generator[Any, Any, Any] | Coroutine[Any, Any, Any] | None = None
        self._current: Task | None = None
        self._state = ExecutionState.RUNNING
        self._output: Any = None
        self._failure: FailureDetails | None = None
        self._suspended = False
        self._held: list[HistoryEvent] = []
        self._started = False
        self._final_recorded = False
        #: the orchestrator is an ``async def`` (its coroutine is driven like a generator)
        self._is_async = False
        self._handlers: dict[type[HistoryEvent], Callable[[Any], None]] = {
            ExecutionStarted: self._on_execution_started,
            OrchestratorStarted: self._on_orchestrator_started,
            OrchestratorCompleted: self._on_orchestrator_completed,
            TaskScheduled: self._on_scheduled,
            TimerCreated: self._on_scheduled,
            SubOrchestrationInstanceCreated: self._on_scheduled,
            EventSent: self._on_scheduled,
            EntityOperationCalled: self._on_scheduled,
            EntityOperationSignaled: self._on_scheduled,
            EntityLockRequested: self._on_scheduled,
            EntityUnlockSent: self._on_scheduled,
            EntityOperationCompleted: self._on_entity_answered,
            EntityOperationFailed: self._on_entity_answered,
            EntityLockGranted: self._on_lock_granted,
            TaskCompleted: self._on_task_completed,
            SubOrchestrationInstanceCompleted: self._on_task_completed,
            TaskFailed: self._on_task_failed,
            SubOrchestrationInstanceFailed: self._on_task_failed,
            TimerFired: self._on_timer_fired,
            EventRaised: self._on_event_raised,
            ExecutionTerminated: self._on_terminated,
            ExecutionSuspended: self._on_suspended,
            ExecutionResumed: self._on_resumed,
            ExecutionRewound: self._on_rewound,
            ExecutionCompleted: self._on_final_recorded,
            ContinueAsNew: self._on_final_recorded,
        }

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
        self.context._is_replaying = True
        held: list[HistoryEvent] = []
        try:
            for event in history:
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
        self.context._is_replaying = False
        started = OrchestratorStarted(now)
        # Recorded as in the seed's table: the episode's incoming events, then
        # OrchestratorStarted. Applied with OrchestratorStarted first, so the code runs at the
        # episode's time; replay() restores that order.
        out: list[HistoryEvent] = [*new_events, started]
        self._apply(started)
        for event in new_events:
            if self._state.is_final:
                if isinstance(event, EventRaised):
                    self.context._buffered_events.append(event)
                continue
            self._apply(event)
        actions = [a for _, a in sorted(self.context._pending_actions.items())]
        self.context._pending_actions.clear()
        out.extend(a.to_event(now) for a in actions)
        out.append(OrchestratorCompleted(now))
        carryover: list[EventRaised] = []
        withdrawn, self.context._withdrawn_lock = self.context._withdrawn_lock, None
        if self._state.is_final and not self._final_recorded:
            self._final_recorded = True
            out.append(self._final_event(now))
            if self._state is ExecutionState.CONTINUED_AS_NEW and self.context._continue_as_new[1]:  # type: ignore[index]
                carryover = list(self.context._buffered_events)
        changed, self.context._custom_status_changed = self.context._custom_status_changed, False
        return ExecutionResult(
            new_events=out,
            actions=actions,
            state=self._state,
            output=self._output,
            failure=self._failure,
            custom_status=self.context._custom_status,
            carryover=carryover,
            custom_status_changed=changed,
            withdrawn_lock=withdrawn,
        )

    def abandon(self) -> tuple[list[Action], tuple[tuple[str, ...], int] | None]:
        """The runtime fails this execution from outside, after an episode (a value it produced
        cannot be stored, so that episode's actions are dropped): what it must still send.
        Returns the unlock actions for every lock it holds (to record and send) and the lock
        request it was still waiting for (to withdraw), as :meth:`process` does for an
        execution that ends by itself."""
        ctx = self.context
        ctx._pending_actions.clear()
        ctx._release_all_locks()
        actions = [a for _, a in sorted(ctx._pending_actions.items())]
        ctx._pending_actions.clear()
        withdrawn, ctx._withdrawn_lock = ctx._withdrawn_lock, None
        return actions, withdrawn

    def close(self) -> None:
        """Drop the generator (eviction); user ``finally`` blocks run now, errors ignored."""
        gen, self._generator = self._generator, None
        if gen is not None:
            with contextlib.suppress(BaseException):  # eviction must not fail on user code
                gen.close()

    # -- event handlers ------------------------------------------------------------------------

    def _apply(self, event: HistoryEvent) -> None:
        if self._suspended and not isinstance(event, _ALWAYS_APPLIED) and not is_scheduling(event):
            self._held.append(event)
            return
        handler = self._handlers.get(type(event))
        if handler is None:
            raise DurableTypeError(f"unknown history event type {event.event_type}")
        handler(event)

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
        ctx._parent_instance_id = event.parent.instance_id if event.parent else None
        spec = self._lookup(event.name)
        if spec is None:
            known = self._known.keys() if self._known is not None else ()
            message = f"no orchestrator named {event.name!r} is registered ({did_you_mean(event.name, known)})"
            self._fail(FailureDetails("OrchestratorNotFound", message))
            return
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

    def _on_orchestrator_completed(self, event: OrchestratorCompleted) -> None:
        if self.context._is_replaying and self.context._pending_actions and not self._state.is_final:
            first = min(self.context._pending_actions)
            action = self.context._pending_actions[first]
            self._nondeterminism("no further action in this episode", action.describe())

    def _on_final_recorded(self, event: HistoryEvent) -> None:
        self._final_recorded = True

    def _on_scheduled(self, event: TaskScheduled | TimerCreated | SubOrchestrationInstanceCreated | EventSent) -> None:
        # Code that completed early during replay must still match what history scheduled
        # afterwards (that is how returning early is caught); a failed or terminated
        # execution has nothing left to match.
        if self._final_recorded or self._state in (ExecutionState.FAILED, ExecutionState.TERMINATED):
            # still match what the ending episode recorded (its unlocks), so replay adds nothing
            action = self.context._pending_actions.get(event.event_id)
            if action is not None and matches(action, event):
                del self.context._pending_actions[event.event_id]
            if isinstance(event, EntityUnlockSent):
                self.context._granted.pop(event.instance_id, None)
            return
        if isinstance(event, EntityUnlockSent):
            self.context._granted.pop(event.instance_id, None)
        action = self.context._pending_actions.pop(event.event_id, None)
        if action is None:
            self._nondeterminism(describe_event(event), "no action with that task number")
        elif not matches(action, event):
            self._nondeterminism(describe_event(event), action.describe())

    def _on_task_completed(
        self, event: TaskCompleted | SubOrchestrationInstanceCompleted | EntityOperationCompleted
    ) -> None:
        task = self.context._open_tasks.pop(event.task_scheduled_id, None)
        if task is None:
            return
        if isinstance(task, HttpTask):
            self._on_http_response(task, event.result)
            return
        task.complete(event.result)
        self._resume()

    def _on_http_response(self, task: HttpTask, response: Any) -> None:
        """A 202 + Location waits on a durable timer and then polls (or fails the task past its
        deadline); any other response completes the task."""
        try:
            delay = task.next_poll(response, self.context._now)
        except HttpTimeoutError as exc:
            task.fail(HttpTimeoutError(exc.message, exc.error_type, exc.details, None, task_label(task, None)))
            self._resume()
            return
        if delay is not None:
            self._reschedule_after(task, delay)
            return
        task.complete(response)
        self._resume()

    def _reschedule_after(self, task: RetryableTask | HttpTask, delay: timedelta) -> None:
        """Start a durable timer; when it fires, ``task``'s action is scheduled again under a
        new task id (see :meth:`_on_timer_fired`)."""
        timer = self.context.create_timer(self.context._now + delay)
        self.context._open_tasks.pop(timer.task_id)
        self.context._retry_timers[timer.task_id] = task

    def _on_task_failed(
        self, event: TaskFailed | SubOrchestrationInstanceFailed | EntityOperationFailed, label: str | None = None
    ) -> None:
        task = self.context._open_tasks.pop(event.task_scheduled_id, None)
        if task is None:
            return
        error = task_failed_error(event.failure, label or task_label(task, event))
        if isinstance(task, RetryableTask):
            task.attempts_failed += 1
            delay = task.retry_options.next_delay(
                task.attempts_failed, task.first_attempt_at, self.context._now, error
            )
            if delay is not None:
                self._reschedule_after(task, delay)
                return
        task.fail(error)
        self._resume()

    def _on_entity_answered(self, event: EntityOperationCompleted | EntityOperationFailed) -> None:
        call = self.context._entity_calls.pop(event.task_scheduled_id, None)
        if call is not None:
            self.context._section.call_done(call[0])
        if isinstance(event, EntityOperationCompleted):
            self._on_task_completed(event)
        else:
            label = f"Operation {call[1]!r} on entity {call[0]!r}" if call is not None else None
            self._on_task_failed(event, label)

    def _on_lock_granted(self, event: EntityLockGranted) -> None:
        ctx = self.context
        task = ctx._open_tasks.pop(event.task_scheduled_id, None) if not self._state.is_final else None
        if task is None:
            # a grant nobody waits for: the execution already ended (it failed, or replay
            # diverged before it saw its own request) or the grant is stale: hand the locks
            # straight back, so none is held by an execution that cannot release it
            ctx._unlock(list(event.lock_set), event.task_scheduled_id)
            return
        ctx._granted.update(dict.fromkeys(event.lock_set, event.task_scheduled_id))
        ctx._section.granted()
        section = ctx._section
        task.complete(LockHandle(ctx, section.locked, section.section_id))
        self._resume()

    def _on_timer_fired(self, event: TimerFired) -> None:
        ctx = self.context
        retry = ctx._retry_timers.pop(event.timer_id, None)
        if retry is not None:
            task_id = ctx._next_id()
            retry.task_id = task_id
            ctx._pending_actions[task_id] = retry.action_factory(task_id)
            ctx._open_tasks[task_id] = retry
            return
        task = ctx._open_tasks.pop(event.timer_id, None)
        if task is None or (isinstance(task, TimerTask) and task.is_cancelled):
            return
        task.complete(None)
        self._resume()

    def _on_event_raised(self, event: EventRaised) -> None:
        if self.context._deliver_event(event):
            self._resume()
        else:
            self.context._buffered_events.append(event)

    def _on_terminated(self, event: ExecutionTerminated) -> None:
        if self._state.is_final:
            return
        self._state = ExecutionState.TERMINATED
        self._output = event.reason
        self._suspended = False
        self.context._pending_actions.clear()  # nothing scheduled before it in the batch runs
        self.context._release_all_locks()
        self.close()

    def _on_rewound(self, event: ExecutionRewound) -> None:
        """A marker: the runtime cut the failing episode before re-delivering its events."""

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
            and self._current.is_completed
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
        self._fail_with(NonDeterminismError(expected, actual))

    def _final_event(self, now: datetime) -> HistoryEvent:
        if self._state is ExecutionState.CONTINUED_AS_NEW:
            return ContinueAsNew(now, self._output)
        if self._state is ExecutionState.TERMINATED:
            return ExecutionCompleted(now, "Terminated", self._output)
        if self._state is ExecutionState.FAILED:
            failure = self._failure
            return ExecutionCompleted(now, "Failed", failure.describe() if failure else None, failure)
        return ExecutionCompleted(now, "Completed", self._output)


#: events applied even while suspended (the rest are held until the instance resumes)
_ALWAYS_APPLIED = (
    ExecutionResumed, ExecutionTerminated, ExecutionSuspended, OrchestratorStarted, OrchestratorCompleted
)


def last_episode_start(history: Sequence[HistoryEvent]) -> int:
    """The index where the last episode's records begin (its incoming events, recorded before
    its OrchestratorStarted); ``len(history)`` if there is no episode."""
    starts = [i for i, e in enumerate(history) if isinstance(e, OrchestratorStarted)]
    if not starts:
        return len(history)
    cut = starts[-1]
    while cut > 0 and is_incoming(history[cut - 1]):
        cut -= 1
    return cut


def is_incoming(event: HistoryEvent) -> bool:
    """Events that arrive from outside (recorded before their episode's OrchestratorStarted)."""
    return not isinstance(event, _EPISODE_EVENTS) and not is_scheduling(event)


#: events the executor itself records around an episode
_EPISODE_EVENTS = (OrchestratorStarted, OrchestratorCompleted, ExecutionCompleted, ContinueAsNew)


def is_scheduling(event: HistoryEvent) -> bool:
    """Events an episode records for the actions its code took."""
    return isinstance(event, SCHEDULING_EVENTS)


def execute(
    lookup: Callable[[str], OrchestratorSpec | None],
    instance_id: str,
    history: Sequence[HistoryEvent],
    new_events: Sequence[HistoryEvent],
    now: datetime,
) -> ExecutionResult:
    """Replay ``history``, run one episode over ``new_events`` at ``now``, return the result.

    The pure form of the engine: the same inputs always give the same output.
    """
    executor = OrchestrationExecutor(lookup, instance_id)
    executor.replay(history)
    return executor.process(new_events, now)
