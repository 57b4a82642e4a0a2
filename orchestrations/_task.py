"""Tasks: what an orchestrator yields, and what the executor completes from history."""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import Any

from ._errors import DurableTypeError, TaskCancelledError


class Task:
    """A durable result that may not be there yet.

    An orchestrator yields a task; the executor resumes the generator with the task's result
    (or throws its exception) once history says the task is done. During replay that happens
    immediately for every task whose completion is already recorded.
    """

    __slots__ = ("_done", "_exception", "_parents", "_result", "is_cancelled")

    def __init__(self) -> None:
        #: whether the orchestration cancelled it (timers and event waits: see :meth:`_cancel`)
        self.is_cancelled = False
        self._result: Any = None
        self._exception: BaseException | None = None
        self._done = False
        self._parents: list[CompositeTask] = []

    def __repr__(self) -> str:
        number = getattr(self, "task_id", -1)
        return f"<{type(self).__name__} #{number}>" if number >= 0 else f"<{type(self).__name__}>"

    @property
    def is_completed(self) -> bool:
        """Whether the task finished (successfully or not)."""
        return self._done

    @property
    def is_faulted(self) -> bool:
        """Whether the task finished with an exception."""
        return self._done and self._exception is not None

    @property
    def result(self) -> Any:
        """The value, once completed successfully; raises the task's exception if it failed."""
        if self._exception is not None:
            raise self._exception
        return self._result

    @property
    def exception(self) -> BaseException | None:
        """The exception of a faulted task, else ``None``."""
        return self._exception

    def __await__(self) -> Generator[Task, Any, Any]:
        """``await task`` in an ``async def`` orchestrator: the same as ``yield task``."""
        return (yield self)

    def _finish(self, result: Any = None, exception: BaseException | None = None) -> None:
        if self._done:
            return
        self._result, self._exception, self._done = result, exception, True
        for parent in self._parents:
            parent._on_child_done(self)

    def _cancel(self, error: BaseException | None) -> None:
        """Cancelled (a timer or an event wait, or a composite over them): it never completes, and
        ``error`` is raised where it is yielded. A composite that can no longer complete
        because of it (a ``task_all`` over it, once its other tasks ended; a ``task_any`` whose
        every task is cancelled) is cancelled in turn, and a ``task_any`` skips a cancelled
        task: so a composite that never completed before cancelled tasks raised still never
        completes, and instances in flight replay as they ran. Nothing is recorded: the code
        cancels it again on every replay."""
        assert error is not None  # a cancelled task (or the child that cancels it) has its error
        self.is_cancelled = True
        self._exception = error
        for parent in self._parents:
            parent._on_child_cancelled(self)


class CompletableTask(Task):
    """A task completed by one history event (activity, timer, event, sub-orchestration)."""

    __slots__ = ("task_id",)

    def __init__(self, task_id: int = -1) -> None:
        super().__init__()
        self.task_id = task_id

    def complete(self, result: Any) -> None:
        """Finish with ``result``."""
        self._finish(result=result)

    def fail(self, exception: BaseException) -> None:
        """Finish with ``exception``."""
        self._finish(exception=exception)


class TimerTask(CompletableTask):
    """A durable timer. ``cancel()`` makes it never complete; a later firing is ignored."""

    __slots__ = ("fire_at",)

    def __init__(self, task_id: int, fire_at: Any) -> None:
        super().__init__(task_id)
        self.fire_at = fire_at

    def cancel(self) -> bool:
        """Cancel the timer (deterministic: nothing is recorded, the firing is ignored); see
        :meth:`Task._cancel`. Returns ``False`` if it already fired or was cancelled."""
        if self._done or self.is_cancelled:
            return False
        self._cancel(TaskCancelledError.of(f"timer task #{self.task_id}"))
        return True


class CompositeTask(Task):
    """A task over several child tasks."""

    __slots__ = ("_pending", "children")

    def __init__(self, children: Sequence[Task]) -> None:
        super().__init__()
        self.children = list(children)
        for child in self.children:
            if not isinstance(child, Task):
                raise DurableTypeError(f"expected a Task, got {child!r}")
        self._pending = sum(1 for c in self.children if not (c.is_completed or c.is_cancelled))
        for child in self.children:
            child._parents.append(self)

    def _on_child_done(self, child: Task) -> None:
        raise NotImplementedError

    def _on_child_cancelled(self, child: Task) -> None:
        raise NotImplementedError


class WhenAllTask(CompositeTask):
    """Completes with the list of results (in the order of the children) once every child has
    finished. If any child failed, it fails, but only then, with the first failure (in
    completion order): as .NET's ``Task.WhenAll`` and durabletask-python's ``when_all``, the
    other children run to the end and the orchestration moves on once, with everything known.
    An empty list completes at once with ``[]``."""

    __slots__ = ("_first_failure",)

    def __init__(self, children: Sequence[Task]) -> None:
        super().__init__(children)
        self._first_failure = next((c.exception for c in self.children if c.is_faulted or c.is_cancelled), None)
        if self._pending == 0:
            self._settle()

    def _on_child_cancelled(self, child: Task) -> None:
        self._on_child_done(child)  # ended: with its TaskCancelledError

    def _on_child_done(self, child: Task) -> None:
        self._pending -= 1
        if child._exception is not None and self._first_failure is None:
            self._first_failure = child._exception
        if self._pending == 0:
            self._settle()

    def _settle(self) -> None:
        cancelled = next((c for c in self.children if c.is_cancelled), None)
        if cancelled is not None:  # it could never complete
            self._cancel(self._first_failure or cancelled._exception)
        elif self._first_failure is not None:
            self._finish(exception=self._first_failure)
        else:
            self._finish(result=[c._result for c in self.children])

    @property
    def completed_count(self) -> int:
        """How many children have finished."""
        return len(self.children) - self._pending


class WhenAnyTask(CompositeTask):
    """Completes with the first child *task* to finish (success or failure); the others keep
    running and their outcomes change nothing. An empty list completes at once with ``None``
    (as the Durable Functions Python SDK does)."""

    __slots__ = ()

    def __init__(self, children: Sequence[Task]) -> None:
        super().__init__(children)
        if not self.children:
            self._finish(result=None)
            return
        first = next((c for c in self.children if c.is_completed), None)
        if first is not None:
            self._finish(result=first)
        elif all(c.is_cancelled for c in self.children):
            self._cancel(self.children[0]._exception)

    def _on_child_done(self, child: Task) -> None:
        self._pending -= 1
        if not self._done:
            self._finish(result=child)

    def _on_child_cancelled(self, child: Task) -> None:
        self._pending -= 1
        if not self._done and not self.is_cancelled and all(c.is_cancelled for c in self.children):
            self._cancel(child._exception)  # nothing could finish it


class EventTask(CompletableTask):
    """The task of ``wait_for_external_event``: completes with the data of an event of its
    name. ``cancel()`` withdraws it (see :meth:`Task._cancel`): a later event of its name goes
    to another waiter or is buffered."""

    __slots__ = ("_withdraw", "name")

    def __init__(self, name: str, withdraw: Callable[[EventTask], None]) -> None:
        super().__init__()
        self.name = name
        self._withdraw = withdraw

    def cancel(self) -> bool:
        """Stop waiting (deterministic: nothing is recorded). Returns ``False`` if the event
        already arrived."""
        if self._done or self.is_cancelled:
            return False
        self._withdraw(self)
        self._cancel(TaskCancelledError.of(f"the wait for external event {self.name!r}"))
        return True


class TimedEventTask(CompositeTask):
    """``wait_for_external_event(name, timeout=...)``: the event's data, or, once the durable
    timer fires first, ``default`` (if given) or an :class:`EventTimeoutError`. Whichever
    comes second is ignored (the timer is cancelled, or the waiter withdrawn)."""

    __slots__ = ("_default", "_event", "_timeout_error", "_timer")

    def __init__(self, event: EventTask, timer: TimerTask, default: Any, timeout_error: BaseException) -> None:
        super().__init__([event, timer])
        self._event, self._timer = event, timer
        self._default, self._timeout_error = default, timeout_error
        if event.is_completed:
            self._on_child_done(event)

    def _on_child_done(self, child: Task) -> None:
        self._pending -= 1
        if self._done:  # the other child, cancelled once this task finished
            return
        if child is self._event:
            self._finish(result=child._result)
            self._timer.cancel()
        elif self._default is _NO_DEFAULT:
            self._finish(exception=self._timeout_error)
            self._event.cancel()
        else:
            self._finish(result=self._default)
            self._event.cancel()

    def _on_child_cancelled(self, child: Task) -> None:
        pass  # its own cancel, or the other half once it finished

    def cancel(self) -> bool:
        """Stop waiting for the event and its timer (see :meth:`Task._cancel`). Returns
        ``False`` if it had already finished or been cancelled."""
        if self._done or self.is_cancelled:
            return False
        self._cancel(TaskCancelledError.of(f"the wait for external event {self._event.name!r}"))
        self._timer.cancel()
        self._event.cancel()
        return True


#: ``wait_for_external_event(..., default=...)`` was not given
_NO_DEFAULT: Any = object()


class RetryableTask(CompletableTask):
    """An activity or sub-orchestration call with a retry policy.

    The executor re-schedules the underlying action (with a new task id) after a durable
    timer each time an attempt fails and the policy allows another.
    """

    __slots__ = ("action_factory", "attempts_failed", "first_attempt_at", "first_id", "retry_options")

    def __init__(self, task_id: int, action_factory: Any, retry_options: Any, now: Any) -> None:
        super().__init__(task_id)
        #: the task id of the first attempt (failure messages name the task by it)
        self.first_id = task_id
        self.action_factory = action_factory
        self.retry_options = retry_options
        self.attempts_failed = 0
        self.first_attempt_at = now
