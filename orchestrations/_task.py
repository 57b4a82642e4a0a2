"""Tasks: what an orchestrator yields, and what the executor completes from history."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._errors import DurableTypeError, DurableValueError


class Task:
    """A durable result that may not be there yet.

    An orchestrator yields a task; the executor resumes the generator with the task's result
    (or throws its exception) once history says the task is done. During replay that happens
    immediately for every task whose completion is already recorded.
    """

    __slots__ = ("_done", "_exception", "_parents", "_result")

    def __init__(self) -> None:
        self._result: Any = None
        self._exception: BaseException | None = None
        self._done = False
        self._parents: list[CompositeTask] = []

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

    def _finish(self, result: Any = None, exception: BaseException | None = None) -> None:
        if self._done:
            return
        self._result, self._exception, self._done = result, exception, True
        for parent in self._parents:
            parent._on_child_done(self)


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

    __slots__ = ("fire_at", "is_cancelled")

    def __init__(self, task_id: int, fire_at: Any) -> None:
        super().__init__(task_id)
        self.fire_at = fire_at
        self.is_cancelled = False

    def cancel(self) -> None:
        """Cancel the timer (deterministic: nothing is recorded, the firing is ignored)."""
        self.is_cancelled = True


class CompositeTask(Task):
    """A task over several child tasks."""

    __slots__ = ("_pending", "children")

    def __init__(self, children: Sequence[Task]) -> None:
        super().__init__()
        self.children = list(children)
        for child in self.children:
            if not isinstance(child, Task):
                raise DurableTypeError(f"expected a Task, got {child!r}")
        self._pending = sum(1 for c in self.children if not c.is_completed)
        for child in self.children:
            child._parents.append(self)

    def _on_child_done(self, child: Task) -> None:
        raise NotImplementedError


class WhenAllTask(CompositeTask):
    """Completes with the list of results once every child completed; fails with the first
    child failure (in completion order)."""

    __slots__ = ()

    def __init__(self, children: Sequence[Task]) -> None:
        super().__init__(children)
        failed = next((c for c in self.children if c.is_faulted), None)
        if failed is not None:
            self._finish(exception=failed.exception)
        elif self._pending == 0:
            self._finish(result=[c._result for c in self.children])

    def _on_child_done(self, child: Task) -> None:
        self._pending -= 1
        if self._done:
            return
        if child._exception is not None:
            self._finish(exception=child._exception)
        elif self._pending == 0:
            self._finish(result=[c._result for c in self.children])

    @property
    def completed_count(self) -> int:
        """How many children have finished."""
        return len(self.children) - self._pending


class WhenAnyTask(CompositeTask):
    """Completes with the first child *task* to finish (success or failure)."""

    __slots__ = ()

    def __init__(self, children: Sequence[Task]) -> None:
        if not children:
            raise DurableValueError("task_any needs at least one task (it would never complete)")
        super().__init__(children)
        first = next((c for c in self.children if c.is_completed), None)
        if first is not None:
            self._finish(result=first)

    def _on_child_done(self, child: Task) -> None:
        self._pending -= 1
        if not self._done:
            self._finish(result=child)


class RetryableTask(CompletableTask):
    """An activity or sub-orchestration call with a retry policy.

    The executor re-schedules the underlying action (with a new task id) after a durable
    timer each time an attempt fails and the policy allows another.
    """

    __slots__ = ("action_factory", "attempts_failed", "first_attempt_at", "retry_options")

    def __init__(self, task_id: int, action_factory: Any, retry_options: Any, now: Any) -> None:
        super().__init__(task_id)
        self.action_factory = action_factory
        self.retry_options = retry_options
        self.attempts_failed = 0
        self.first_attempt_at = now
