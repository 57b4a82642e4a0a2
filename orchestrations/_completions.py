"""The executor's handlers of the events that finish tasks: activity, sub-orchestration and
entity results and failures, lock grants, timers (with retry back-off and HTTP polling) and
external events. Pure.

A mixin of :class:`~orchestrations._executor.OrchestrationExecutor`, kept apart so each module
reads as one concern: the executor owns the generator and the episode, this owns what a
completion does to the tasks the code waits for.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from ._context import LockHandle, OrchestrationContext
from ._errors import HttpTimeoutError, TaskFailedError
from ._execution import ExecutionState
from ._failures import error_type_name, exception_message, task_failed_error, task_label
from ._history import (
    EntityLockGranted,
    EntityOperationCompleted,
    EntityOperationFailed,
    EventRaised,
    SubOrchestrationInstanceCompleted,
    SubOrchestrationInstanceFailed,
    TaskCompleted,
    TaskFailed,
    TimerFired,
)
from ._http import HttpTask
from ._task import RetryableTask, TimerTask


class CompletionHandlers:
    """Event handlers that complete (or fail, or reschedule) the tasks of ``context``."""

    context: OrchestrationContext
    _state: ExecutionState

    def _resume(self) -> None:
        """Advance the code past every completed task (the executor's)."""
        raise NotImplementedError

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
        except ValueError as exc:  # a Location that is no URL: the task fails, not the engine
            message = f"call_http could not follow the 202 response's Location: {exception_message(exc)}"
            task.fail(TaskFailedError(message, error_type_name(type(exc)), None, None, task_label(task, None)))
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
            try:
                delay = task.retry_options.next_delay(
                    task.attempts_failed, task.first_attempt_at, self.context._now, error
                )
            except BaseException as exc:  # the policy's handle raised: the orchestration's own code
                note = f"raised by the retry policy's handle, deciding whether to retry: {error}"
                if note not in getattr(exc, "__notes__", ()):  # a handle may raise one object on every replay
                    exc.add_note(note)
                task.fail(exc)
                self._resume()
                return
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
