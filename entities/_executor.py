"""The entity executor: messages in order -> new state and outgoing messages. Pure.

One entity runs one message at a time. While an orchestration holds its lock, only that
orchestration's requests are served; every other message waits in a FIFO queue, which is
drained in order when the lock is released. An operation that raises (any exception but
``KeyboardInterrupt``), or leaves a state or messages the :class:`StateKeeper` refuses, leaves
the state as it was before that operation and sends none of its messages; its error goes back
to the caller.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from orchestrations import (
    DurableTypeError,
    DurableValueError,
    EntityLockGranted,
    EntityLockMessage,
    EntityOperationCompleted,
    EntityOperationFailed,
    EntityRequest,
    EntityUnlockMessage,
    ExecutionStarted,
    FailureDetails,
    HistoryEvent,
    ParentInfo,
)
from orchestrations._failures import failure_of

from ._context import EntityContext, SignalOut, _current
from ._ids import EntityId
from ._registry import EntitySpec


@dataclass(slots=True)
class EntityState:
    """Everything durable about one entity: its state, its lock holder and its queue.

    ``locked_by`` is the holder's instance id; ``lock`` its full identity (instance, the task
    id of its lock request, execution), which an unlock must name to release the lock. A lock
    recorded before holders were identified has ``lock`` ``None`` and is released by any unlock
    from its instance.
    """

    exists: bool = False
    state: Any = None
    locked_by: str | None = None
    queue: list[HistoryEvent] = field(default_factory=list)
    lock: ParentInfo | None = None

    @property
    def is_empty(self) -> bool:
        """No state, no lock, nothing waiting: the entity can be forgotten."""
        return not self.exists and self.locked_by is None and not self.queue


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message an entity sends: to an orchestration (answers, lock grants, starts) or to an
    entity (signals, lock requests passed on). ``execution_id`` addresses one execution."""

    target: str
    event: HistoryEvent
    execution_id: str | None = None


class StateKeeper:
    """How an executor keeps an entity's state between its operations.

    ``snapshot`` gives what to roll back to, ``restore`` a fresh (exists, state) from it, and
    ``seal`` is called after each operation that returned, with its new state and the messages
    it sends: it returns the snapshot of that state, or raises to fail the operation (rolled
    back, its messages dropped). This default deep-copies the state (an operation of either
    style may mutate it in place before raising) and accepts everything; the runtime's keeper
    encodes state and messages once, where they are sealed, so that a value that cannot be
    stored fails its own operation and the same bytes serve as the rollback copy and the row.
    """

    def snapshot(self, exists: bool, state: Any) -> Any:
        """What to roll back to (the state as it is before the next operation)."""
        return exists, copy.deepcopy(state)

    def restore(self, snapshot: Any) -> tuple[bool, Any]:
        """A fresh (exists, state) from ``snapshot`` (it may be restored again later)."""
        exists, state = snapshot
        return exists, copy.deepcopy(state)

    def seal(self, exists: bool, state: Any, outgoing: list[Outgoing]) -> Any:
        """Accept an operation's result; returns the snapshot of the new state."""
        return self.snapshot(exists, state)


#: Called with an entity name an operation signals; raises if no entity of that name exists.
EntityCheck = Callable[[str], None]


class OperationWatch:
    """Told when each operation begins and ends (the runtime makes a trace span of it). The
    executor stays pure: a trace context is an opaque string to it."""

    def begin(self, entity_id: EntityId, request: EntityRequest) -> str | None:
        """An operation begins; returns the trace context the messages it sends carry (this
        default: the request's own)."""
        return request.trace

    def end(self, request: EntityRequest, failure: FailureDetails | None) -> None:
        """The operation ended, with ``failure`` if it failed (its state rolled back)."""


class EntityExecutor:
    """Runs the messages of one entity against its state."""

    def __init__(
        self, spec: EntitySpec | None, entity_id: EntityId, state: EntityState, now: datetime,
        keeper: StateKeeper | None = None, entity_check: EntityCheck | None = None,
        watch: OperationWatch | None = None,
    ) -> None:
        self.spec = spec
        self.watch = watch
        #: the trace context of the operation running (what its signals and starts carry)
        self._trace: str | None = None
        self.entity_id = entity_id
        self.st = state
        self.now = now
        self.keeper = keeper if keeper is not None else StateKeeper()
        self.entity_check = entity_check
        self.out: list[Outgoing] = []
        #: the keeper's snapshot of the current state (taken before the first operation)
        self._snapshot: Any = None
        self._has_snapshot = False

    def run(self, messages: Sequence[HistoryEvent]) -> list[Outgoing]:
        """Apply ``messages`` in order; returns the messages to send after the commit."""
        for message in messages:
            self._receive(message)
        return self.out

    def _receive(self, message: HistoryEvent) -> None:
        st = self.st
        if isinstance(message, EntityUnlockMessage):
            if _releases(st, message):
                st.locked_by = st.lock = None
                self._drain()
            else:
                _withdraw(st, message)
            return
        if st.locked_by is not None and not _from_holder(st, message):
            st.queue.append(message)
            return
        self._serve(message)

    def _drain(self) -> None:
        """Serve the queue in order while unlocked; once a queued lock request re-locks the
        entity, serve the new holder's queued messages (in order) and leave the rest waiting."""
        queue = self.st.queue
        while queue:
            if self.st.locked_by is None:
                self._serve(queue.pop(0))
                continue
            index = next((i for i, m in enumerate(queue) if _from_holder(self.st, m)), None)
            if index is None:
                return
            self._serve(queue.pop(index))

    def _serve(self, message: HistoryEvent) -> None:
        if isinstance(message, EntityLockMessage):
            self._lock(message)
        elif isinstance(message, EntityRequest):
            self._operate(message)
        else:
            raise DurableValueError(f"an entity cannot handle {message.event_type}")

    def _lock(self, message: EntityLockMessage) -> None:
        holder = message.holder
        self.st.locked_by, self.st.lock = holder.instance_id, holder
        nxt = message.position + 1
        if nxt < len(message.lock_set):
            forward = EntityLockMessage(self.now, holder, message.lock_set, nxt)
            self.out.append(Outgoing(message.lock_set[nxt], forward))
        else:
            granted = EntityLockGranted(self.now, holder.task_scheduled_id, message.lock_set)
            self.out.append(Outgoing(holder.instance_id, granted, holder.execution_id))

    def _operate(self, request: EntityRequest) -> None:
        watch = self.watch
        if watch is None:
            self._trace = request.trace
            self._apply(request)
            return
        self._trace = watch.begin(self.entity_id, request)
        failure = None
        try:
            failure = self._apply(request)
        finally:
            watch.end(request, failure)

    def _apply(self, request: EntityRequest) -> FailureDetails | None:
        """Run one operation and keep or roll back its effects; returns its failure, if any."""
        if request.name != "delete" and self.spec is None:
            failure = FailureDetails("EntityNotFound", f"no entity named {self.entity_id.name!r} is registered")
            self._reply(request, False, failure)
            return failure
        st, keeper = self.st, self.keeper
        if not self._has_snapshot:
            self._snapshot, self._has_snapshot = keeper.snapshot(st.exists, st.state), True
        before = self._snapshot
        try:
            exists, state, outgoing = self._run_operation(request)
            self._snapshot = keeper.seal(exists, state, outgoing)
        except KeyboardInterrupt:
            raise  # an interrupt of the process, not of the operation
        except BaseException as exc:  # user code: anything else fails only this operation
            st.exists, st.state = keeper.restore(before)
            failure = failure_of(exc)
            self._reply(request, False, failure)
            return failure
        st.exists, st.state = exists, state
        self.out.extend(outgoing)
        return None

    def _run_operation(self, request: EntityRequest) -> tuple[bool, Any, list[Outgoing]]:
        """Run one operation; returns the entity's new (exists, state) and the messages the
        operation sends (its signals and starts, then its answer). Raises what it raised."""
        spec, st = self.spec, self.st
        if request.name == "delete" and not (spec is not None and spec.is_class and _defines_delete(spec.target)):
            return False, None, self._answer(request, True, None)  # the built-in delete
        assert spec is not None
        ctx = EntityContext(self.entity_id, request.name, request.input, st.state, st.exists, self.entity_check)
        token = _current.set(ctx)
        try:
            if spec.is_class:
                obj = st.state if st.exists else spec.target()
                method = spec.operation(obj, request.name)
                if method is None:
                    raise DurableValueError(f"entity {self.entity_id.name!r} has no operation {request.name!r}")
                result = _invoke(method, request.input)
                exists, state = (False, None) if ctx._deleted else (True, obj)
            else:
                _check_sync(spec.target(ctx), self.entity_id.name)
                result = ctx._result
                exists, state = ctx._exists, ctx._state
        finally:
            _current.reset(token)
        _check_sync(result, self.entity_id.name, request.name)
        outgoing = []
        for item in ctx.outbox:
            if isinstance(item, SignalOut):
                signal = EntityRequest(self.now, item.operation_name, item.operation_input, None, True, self._trace)
                outgoing.append(Outgoing(item.entity_id, signal))
            else:
                start = ExecutionStarted(self.now, item.name, item.input, item.instance_id, "", trace=self._trace)
                outgoing.append(Outgoing(item.instance_id, start))
        return exists, state, outgoing + self._answer(request, True, result)

    def _answer(self, request: EntityRequest, ok: bool, value: Any) -> list[Outgoing]:
        """The answer to ``request`` (none for a signal)."""
        sender = request.sender
        if request.is_signal or sender is None:
            return []
        if ok:
            event: HistoryEvent = EntityOperationCompleted(self.now, sender.task_scheduled_id, value)
        else:
            event = EntityOperationFailed(self.now, sender.task_scheduled_id, value)
        return [Outgoing(sender.instance_id, event, sender.execution_id)]

    def _reply(self, request: EntityRequest, ok: bool, value: Any) -> None:
        self.out.extend(self._answer(request, ok, value))


def _releases(st: EntityState, unlock: EntityUnlockMessage) -> bool:
    """Whether ``unlock`` releases the entity's current lock: it names the holder and, when
    both sides know it, the holder's execution and lock request exactly."""
    if st.locked_by != unlock.holder_id:
        return False
    lock = st.lock
    if lock is None or unlock.execution_id is None:
        return True  # recorded before holders were identified: the instance alone
    return lock.execution_id == unlock.execution_id and lock.task_scheduled_id == unlock.section_id


def _withdraw(st: EntityState, unlock: EntityUnlockMessage) -> None:
    """An unlock that names a lock request still waiting in the queue withdraws it: the
    execution that asked ended before it was granted (an unlock without an execution, from a
    holder recorded before identities were, withdraws nothing)."""
    if unlock.execution_id is None:
        return
    st.queue[:] = [
        m for m in st.queue
        if not (
            isinstance(m, EntityLockMessage)
            and m.holder.instance_id == unlock.holder_id
            and m.holder.execution_id == unlock.execution_id
            and m.holder.task_scheduled_id == unlock.section_id
        )
    ]


def _sender(message: HistoryEvent) -> ParentInfo | None:
    if isinstance(message, EntityRequest):
        return message.sender
    if isinstance(message, EntityLockMessage):
        return message.holder
    return None


def _from_holder(st: EntityState, message: HistoryEvent) -> bool:
    """Whether ``message`` comes from the execution that holds the lock. Another execution of
    the holder's instance (started again after the holder was terminated, or continued as
    new) is not the holder: it waits like anyone else. A lock recorded before holders were
    identified is the instance's."""
    sender = _sender(message)
    if sender is None or sender.instance_id != st.locked_by:
        return False
    lock = st.lock
    return lock is None or not sender.execution_id or sender.execution_id == lock.execution_id


def _check_sync(value: Any, entity: str, operation: str | None = None) -> None:
    """A coroutine (or other awaitable) returned by an operation never ran: refuse it loudly."""
    if inspect.isawaitable(value):
        if inspect.iscoroutine(value):
            value.close()
        where = f"operation {operation!r} of entity {entity!r}" if operation else f"entity function {entity!r}"
        raise DurableTypeError(f"{where} returned an awaitable: entity operations must be plain (not async) functions")


_signatures: dict[Any, tuple[bool, bool]] = {}


def _invoke(method: Callable[..., Any], operation_input: Any) -> Any:
    """Call a class entity's method with the operation's input if it takes a parameter, else
    with none. Without input (``None``), a parameter that has a default keeps it: ``def
    add(self, amount=1)`` signalled with no input adds 1."""
    func = getattr(method, "__func__", method)
    signature = _signatures.get(func)
    if signature is None:
        params = [
            p for p in inspect.signature(method).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
        ]
        first = params[0] if params else None
        optional = first is not None and (first.default is not first.empty or first.kind is first.VAR_POSITIONAL)
        signature = _signatures[func] = (bool(params), optional)
    takes_input, optional = signature
    if not takes_input or (operation_input is None and optional):
        return method()
    return method(operation_input)


def run_entity(
    spec: EntitySpec | None, entity_id: EntityId, state: EntityState, messages: Sequence[HistoryEvent],
    now: datetime, keeper: StateKeeper | None = None, entity_check: EntityCheck | None = None,
    watch: OperationWatch | None = None,
) -> list[Outgoing]:
    """Apply ``messages`` to ``state`` (changed in place); return the messages to send.
    ``watch``, if given, is told when each operation begins and ends."""
    return EntityExecutor(spec, entity_id, state, now, keeper, entity_check, watch).run(messages)


def _defines_delete(cls: Any) -> bool:
    """Whether a class entity has an operation ``delete`` of its own (it runs instead of the
    built-in one, as in Durable Functions: a class's own ``Delete`` is dispatched)."""
    return callable(getattr(cls, "delete", None))
