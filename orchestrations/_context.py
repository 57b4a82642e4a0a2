"""The orchestration context: the only door from orchestrator code to the outside world.

Every method that starts work returns a :class:`Task` and records an action with the next
sequence number. During replay the executor matches those actions against history instead of
running them again, so orchestrator code must call them in the same order every time.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from ._actions import (
    Action,
    CreateSubOrchestration,
    CreateTimer,
    ScheduleTask,
    SendEvent,
)
from ._checks import check_retry, task_list, timeout_delta
from ._context_entities import EntityMethods
from ._critical import CriticalSection
from ._errors import DurableTypeError, DurableValueError, EventTimeoutError
from ._guards import check_input
from ._handles import LockHandle, ReplaySafeLogger
from ._history import RULES_CHILD_IDS, EventRaised
from ._http import HttpTask, build_request
from ._ids import check_encodable, validate_instance_id
from ._registry import check_version, function_name
from ._retry import RetryOptions
from ._task import (
    _NO_DEFAULT,
    CompletableTask,
    EventTask,
    RetryableTask,
    Task,
    TimedEventTask,
    TimerTask,
    WhenAllTask,
    WhenAnyTask,
)

__all__ = ["LockHandle", "OrchestrationContext"]

_UUID_NAMESPACE = uuid.UUID("9e952958-5e33-4daf-827f-2fa12937b875")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class OrchestrationContext(EntityMethods):
    """What an orchestrator sees: deterministic facts and the methods that schedule work."""

    def __init__(self, instance_id: str, execution_id: str = "") -> None:
        self._instance_id = instance_id
        self._execution_id = execution_id
        self._parent_instance_id: str | None = None
        self._input: Any = None
        self._now: datetime = _EPOCH
        self._is_replaying = False
        self._sequence = 0
        self._uuid_counter = 0
        self._custom_status: Any = None
        #: set_custom_status was called outside replay since the last episode was recorded
        self._custom_status_changed = False
        #: actions created but not yet matched with history / committed, by task id
        self._pending_actions: dict[int, Action] = {}
        #: tasks waiting for a completion event, by task id
        self._open_tasks: dict[int, CompletableTask] = {}
        #: tasks waiting for a timer before their action is scheduled again (retry back-off,
        #: HTTP 202 polling), by timer id
        self._retry_timers: dict[int, RetryableTask | HttpTask] = {}
        #: external events that arrived before anyone waited, in arrival order
        self._buffered_events: list[EventRaised] = []
        #: waiters for external events, by case-folded name; an event goes to the newest
        self._event_waiters: dict[str, list[EventTask]] = {}
        self._continue_as_new: tuple[Any, bool] | None = None
        #: the version continue_as_new asked for (``None``: the latest)
        self._continue_version: int | None = None
        #: ``ExecutionStarted.generation`` of this execution (0: the first)
        self._generation = 0
        #: ``ExecutionStarted.rules`` of this execution (0: recorded before the marker)
        self._rules = 0
        #: the sub-orchestrations started with a caller's instance id, by that id
        self._named_children: dict[str, CompletableTask] = {}
        #: the critical-section state machine
        self._section = CriticalSection()
        #: entity calls waiting for an answer: task id -> (entity id, operation)
        self._entity_calls: dict[int, tuple[str, str]] = {}
        #: raises for an entity name nobody registered (set by the executor; None: no check)
        self._entity_check: Callable[[str], None] | None = None
        #: the locks this execution's history says it holds (granted, not yet unlocked), by
        #: entity, with the critical section (lock request) each belongs to, whatever the code's
        #: critical-section state says (it can diverge on replay)
        self._granted: dict[str, int] = {}
        #: the lock request (lock set, its task id) this execution was still waiting for when
        #: it ended: the runtime withdraws it from the entities (it is not in history)
        self._withdrawn_lock: tuple[tuple[str, ...], int] | None = None
        #: the patch ids whose PatchApplied marker is in this execution's history
        self._recorded_patches: set[str] = set()
        #: what is_patched answered for each patch id (its first answer holds for the execution)
        self._patches: dict[str, bool] = {}
        #: patch ids taken for the first time in this episode: markers to record
        self._new_patches: list[str] = []

    # -- facts -------------------------------------------------------------------------------

    @property
    def instance_id(self) -> str:
        """The id of this orchestration instance."""
        return self._instance_id

    @property
    def execution_id(self) -> str:
        """The id of this execution (changes with ``continue_as_new``)."""
        return self._execution_id

    @property
    def parent_instance_id(self) -> str | None:
        """The parent's instance id for a sub-orchestration, else ``None``."""
        return self._parent_instance_id

    @property
    def is_replaying(self) -> bool:
        """True while the code re-runs past episodes from history (use to silence side effects)."""
        return self._is_replaying

    @property
    def current_utc_datetime(self) -> datetime:
        """The start time of the current episode, from history: the same on every replay."""
        return self._now

    @property
    def custom_status(self) -> Any:
        """The value last given to :meth:`set_custom_status`."""
        return self._custom_status

    def get_input(self) -> Any:
        """The instance's input."""
        return self._input

    def is_patched(self, patch_id: str) -> bool:
        """Whether this execution takes the new branch of a code change named ``patch_id``::

            if context.is_patched("weigh-first"):
                yield context.call_activity(step, "weigh")   # new code
            yield context.call_activity(step, "pack")

        An instance that reaches this point running (not replaying) takes it: ``True``, and a
        ``PatchApplied`` marker is recorded in its history. An instance replaying history that
        has no such marker passed this point on code without the patch: ``False``, so it keeps
        the old branch. The first answer for an id holds for the rest of the execution (a second
        call with the same id, later, answers the same), and every replay answers the same.
        Once no instance that started before the patch is left, the check can be removed and
        the new branch kept: markers nobody asks about are ignored. A ``patch_id`` that is not
        a non-empty ``str`` raises ``ValueError``.
        """
        if not isinstance(patch_id, str) or not patch_id.strip():
            raise DurableValueError(f"is_patched: patch_id must be a non-empty str, got {patch_id!r}")
        decided = self._patches.get(patch_id)
        if decided is None:
            check_encodable(patch_id, "is_patched: patch_id")
            decided = patch_id in self._recorded_patches or not self._is_replaying
            self._patches[patch_id] = decided
            if decided and patch_id not in self._recorded_patches:
                self._recorded_patches.add(patch_id)
                self._new_patches.append(patch_id)
        return decided

    # -- scheduling ---------------------------------------------------------------------------

    def _next_id(self) -> int:
        self._sequence += 1
        return self._sequence

    def _schedule(self, action: Action, task: CompletableTask, checked: bool = False) -> CompletableTask:
        if not checked:
            check_input(getattr(action, "input", None), f"the input of {action.describe()}")
        self._pending_actions[action.task_id] = action
        self._open_tasks[action.task_id] = task
        return task

    def call_activity(self, name_or_fn: str | Callable[..., Any], input_: Any = None) -> Task:
        """Schedule activity ``name_or_fn`` with ``input_``; the task's result is its return
        value, and a failure raises :class:`TaskFailedError` at the ``yield``.

        Replay returns the recorded result without running the activity again.
        """
        name = function_name(name_or_fn, "activity")
        task_id = self._next_id()
        return self._schedule(ScheduleTask(task_id, name, input_), CompletableTask(task_id))

    def call_activity_with_retry(
        self, name_or_fn: str | Callable[..., Any], retry_options: RetryOptions, input_: Any = None
    ) -> Task:
        """Like :meth:`call_activity`, retried after durable timers as ``retry_options`` say."""
        name = function_name(name_or_fn, "activity")
        check_retry(retry_options)
        return self._schedule_retryable(lambda tid: ScheduleTask(tid, name, input_), retry_options)

    def call_sub_orchestrator(
        self, name_or_fn: str | Callable[..., Any], input_: Any = None, instance_id: str | None = None
    ) -> Task:
        """Start orchestrator ``name_or_fn`` as a child; the task's result is its output.

        The default child id is ``"<parent id>:<task number>"``, the same on every replay; in
        the n-th execution after ``continue_as_new``, ``"<parent id>:<task number>~<n>"``. The
        child is started by name, so it runs the latest version registered under that name.
        """
        name = function_name(name_or_fn, "orchestrator")
        self._section.check_sub_orchestration(name)
        self._check_child_id_free(instance_id)
        task_id = self._next_id()
        child_id = self._child_id(instance_id, task_id)
        task = self._schedule(CreateSubOrchestration(task_id, name, child_id, input_), CompletableTask(task_id))
        return self._named_child(instance_id, task)

    def call_sub_orchestrator_with_retry(
        self,
        name_or_fn: str | Callable[..., Any],
        retry_options: RetryOptions,
        input_: Any = None,
        instance_id: str | None = None,
    ) -> Task:
        """Like :meth:`call_sub_orchestrator`, retried as ``retry_options`` say (same child id)."""
        name = function_name(name_or_fn, "orchestrator")
        check_retry(retry_options)
        self._section.check_sub_orchestration(name)
        self._check_child_id_free(instance_id)
        child_id = self._child_id(instance_id, self._sequence + 1)
        task = self._schedule_retryable(
            lambda tid: CreateSubOrchestration(tid, name, child_id, input_), retry_options
        )
        return self._named_child(instance_id, task)

    def _check_child_id_free(self, instance_id: str | None) -> None:
        """Refuse an instance id a sub-orchestration of this execution still runs under: the
        second start would be refused (the id is taken) only once it reached the child's shard,
        and the task would fail when the first child ended, or never (DurableTask.Core's
        ``DuplicateSubOrchestrationInstanceId`` guard fails the orchestration the same way).
        An id whose child has finished may be used again. An execution recorded before this
        check (``ExecutionStarted.rules``) replays without it."""
        taken = None if instance_id is None else self._named_children.get(instance_id)
        if taken is not None and not taken.is_completed and self._rules >= RULES_CHILD_IDS:
            raise DurableValueError(
                f"call_sub_orchestrator: instance id {instance_id!r} is already used by task {taken.task_id} "
                f"of this execution, a sub-orchestration that has not finished; give each running child its own id"
            )

    def _named_child(self, instance_id: str | None, task: CompletableTask) -> CompletableTask:
        if instance_id is not None:
            self._named_children[instance_id] = task
        return task

    def _child_id(self, instance_id: str | None, task_id: int) -> str:
        if instance_id is not None:
            return validate_instance_id(instance_id)
        if self._generation:  # a child of each generation is a new instance
            return f"{self._instance_id}:{task_id}~{self._generation}"
        return f"{self._instance_id}:{task_id}"

    def _schedule_retryable(
        self, factory: Callable[[int], Action], retry_options: RetryOptions
    ) -> CompletableTask:
        task_id = self._next_id()
        task = RetryableTask(task_id, factory, retry_options, self._now)
        return self._schedule(factory(task_id), task)

    def call_http(
        self,
        method: str,
        uri: str,
        content: Any = None,
        headers: dict[str, str] | None = None,
        *,
        timeout: timedelta | float | None = None,
    ) -> Task:
        """Make an HTTP request; the task's result is a :class:`DurableHttpResponse`.

        A response with a status of 400 or more is returned, not raised; a request that
        cannot be made (connection refused, DNS, ...) fails the task with
        :class:`TaskFailedError`. ``content`` that is not ``str`` or ``bytes`` is sent as JSON.
        The 202 pattern is followed: a ``202 Accepted`` with a ``Location`` header starts a
        durable timer for its ``Retry-After`` (integer seconds or an HTTP date; 30 s if absent),
        then sends a ``GET`` to the location (with the original headers), and so on until
        another response arrives, which completes the task. ``timeout`` (a ``timedelta`` or
        seconds) bounds the whole exchange on the orchestration's clock: a poll that would
        start at or past it fails the task with :class:`HttpTimeoutError`; each request is
        also given the budget left as its own timeout.

        Each request is the built-in activity ``"ray_durable.http"`` (run at least once, as
        every activity) and each wait a durable timer, so replay re-reads every response from
        history and makes no request again. Bad arguments raise ``TypeError``/``ValueError``
        (:class:`DurableTypeError`/:class:`DurableValueError`) here, at the call.
        """
        request, budget = build_request(method, uri, content, headers, timeout)
        task_id = self._next_id()
        task = HttpTask(task_id, request, budget, self._now)
        return self._schedule(task.action_factory(task_id), task)

    def create_timer(self, fire_at: datetime | timedelta) -> TimerTask:
        """A durable timer that fires at ``fire_at`` (UTC; a naive datetime is taken as UTC, a
        ``timedelta`` counts from :attr:`current_utc_datetime`). The task's result is ``None``."""
        if isinstance(fire_at, timedelta):
            when = self._now + fire_at
        elif isinstance(fire_at, datetime):
            when = fire_at if fire_at.tzinfo is not None else fire_at.replace(tzinfo=UTC)
        else:
            raise DurableTypeError(f"fire_at must be a datetime or timedelta, got {fire_at!r}")
        task_id = self._next_id()
        task = TimerTask(task_id, when)
        self._schedule(CreateTimer(task_id, when), task)
        return task

    def wait_for_external_event(
        self, name: str, timeout: timedelta | float | None = None, default: Any = _NO_DEFAULT
    ) -> Task:
        """A task of the data of the next event called ``name`` (names are case-insensitive, as
        in Durable Functions).

        Events that arrived before anyone waited are buffered, first in first out per name. An
        event goes to the newest task still waiting for its name, so a loop that races
        ``task_any([wait("a"), wait("b")])`` each round is served by this round's tasks, not by
        an abandoned one (as the Durable Functions extension does); ``cancel()`` withdraws a
        task. With ``timeout`` (a ``timedelta`` or seconds), a durable timer races the event:
        if it fires first, the task completes with ``default`` when one is given and otherwise
        fails with :class:`EventTimeoutError`. Records nothing in history by itself (the
        EventRaised event is the record; a timeout records its timer).
        """
        if not isinstance(name, str) or not name.strip():
            raise DurableValueError(f"event name must be a non-empty str, got {name!r}")
        fire_in = timeout_delta(timeout) if timeout is not None else None
        task = EventTask(name, self._withdraw_waiter)
        key = name.casefold()
        for i, event in enumerate(self._buffered_events):
            if event.name.casefold() == key:
                del self._buffered_events[i]
                task.complete(event.input)
                break
        else:
            self._event_waiters.setdefault(key, []).append(task)
        if fire_in is None:
            return task
        timer = self.create_timer(fire_in)
        return TimedEventTask(task, timer, default, EventTimeoutError.waiting_for(name, fire_in))

    def _withdraw_waiter(self, task: EventTask) -> None:
        waiters = self._event_waiters.get(task.name.casefold())
        if waiters and task in waiters:
            waiters.remove(task)

    def _deliver_event(self, event: EventRaised) -> bool:
        """Give ``event`` to the newest task waiting for its name; ``False`` (the caller
        buffers it) if none waits."""
        waiters = self._event_waiters.get(event.name.casefold())
        if not waiters:
            return False
        waiters.pop().complete(event.input)
        return True

    def send_event(self, instance_id: str, event_name: str, event_data: Any = None) -> None:
        """Raise ``event_name`` on another instance (one-way; recorded as EventSent). The target
        and the name must be the same on replay; an instance that does not exist drops it.

        A blank ``instance_id`` or ``event_name``, or an entity id as target, raises
        ``ValueError`` here (failing the orchestration unless caught).
        """
        if not isinstance(instance_id, str) or not instance_id.strip():
            raise DurableValueError(f"send_event: instance_id must be a non-empty str, got {instance_id!r}")
        if instance_id.startswith("@"):
            raise DurableValueError(
                f"send_event: instance_id {instance_id!r} is reserved for entities (ids starting with '@'); "
                "use signal_entity to send an operation to an entity"
            )
        validate_instance_id(instance_id)
        if not isinstance(event_name, str) or not event_name.strip():
            raise DurableValueError(f"send_event: event_name must be a non-empty str, got {event_name!r}")
        check_encodable(event_name, "send_event: event_name")
        check_input(event_data, f"the data of send_event {event_name!r}")
        task_id = self._next_id()
        self._pending_actions[task_id] = SendEvent(task_id, instance_id, event_name, event_data)

    def task_all(self, tasks: Sequence[Task]) -> Task:
        """A task of the list of results of ``tasks``, in their order, once every one has
        finished; if any failed, it then fails with the first failure (the others still ran to
        the end). ``task_all([])`` completes at once with ``[]``."""
        return WhenAllTask(task_list(tasks, "task_all"))

    def task_any(self, tasks: Sequence[Task]) -> Task:
        """A task whose result is the first of ``tasks`` to finish (the task itself, which
        may have failed: read its ``result``). ``task_any([])`` completes at once with
        ``None``."""
        return WhenAnyTask(task_list(tasks, "task_any"))

    # -- other ---------------------------------------------------------------------------------

    def continue_as_new(
        self, input_: Any, preserve_unprocessed_events: bool = False, *, version: int | None = None
    ) -> None:
        """End this execution and start again with ``input_`` and fresh history.

        Takes effect when the orchestrator next yields or returns. With
        ``preserve_unprocessed_events``, external events nobody consumed are carried over.
        The new execution runs the latest version registered under this orchestrator's name
        (``@orchestrator(version=...)``), which is how a long-lived instance moves to new code;
        ``version=N`` runs that version instead (a bad one raises ``TypeError``/``ValueError``
        here; one not registered fails the new execution, naming it).
        """
        check_input(input_, "the input of continue_as_new")
        self._continue_version = check_version(version)
        self._continue_as_new = (input_, bool(preserve_unprocessed_events))

    def set_custom_status(self, value: Any) -> None:
        """Set the value shown as ``custom_status`` in status queries; ``None`` clears it.

        The value is stored when the episode commits; replay sets it again without storing it.
        It is carried over by ``continue_as_new`` until the new execution sets another.
        """
        check_input(value, "the custom status")
        self._custom_status = value
        if not self._is_replaying:
            self._custom_status_changed = True

    def new_uuid(self) -> str:
        """A UUID that is the same on every replay (derived from id, time and a counter, and
        in an execution continued as new from its execution id too: generations that run in
        one turn share its time)."""
        self._uuid_counter += 1
        name = f"{self._instance_id}_{self._now.isoformat()}_{self._uuid_counter}"
        if self._generation:
            name = f"{name}_{self._execution_id}"
        return str(uuid.uuid5(_UUID_NAMESPACE, name))

    def create_replay_safe_logger(self, logger: logging.Logger) -> logging.LoggerAdapter[logging.Logger]:
        """A logger adapter that drops records while replaying, so each line is logged once,
        and adds ``instance_id`` to every record."""
        return ReplaySafeLogger(logger, self)
