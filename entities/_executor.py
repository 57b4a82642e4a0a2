"""The entity executor: messages in order -> new state and outgoing messages. Pure.

One entity runs one message at a time. While an orchestration holds its lock, only that
orchestration's requests are served; every other message waits in a FIFO queue, which is
drained in order when the lock is released. An operation that raises leaves the state as it
was before that operation, and its error goes back to the caller.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from orchestrations import (
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
)
from orchestrations._executor import failure_of

from ._context import EntityContext, SignalOut, _current
from ._ids import EntityId
from ._registry import EntitySpec


@dataclass(slots=True)
class EntityState:
    """Everything durable about one entity: its state, its lock holder and its queue."""

    exists: bool = False
    state: Any = None
    locked_by: str | None = None
    queue: list[HistoryEvent] = field(default_factory=list)

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


class EntityExecutor:
    """Runs the messages of one entity against its state."""

    def __init__(self, spec: EntitySpec | None, entity_id: EntityId, state: EntityState, now: datetime) -> None:
        self.spec = spec
        self.entity_id = entity_id
        self.st = state
        self.now = now
        self.out: list[Outgoing] = []

    def run(self, messages: Sequence[HistoryEvent]) -> list[Outgoing]:
        """Apply ``messages`` in order; returns the messages to send after the commit."""
        for message in messages:
            self._receive(message)
        return self.out

    def _receive(self, message: HistoryEvent) -> None:
        st = self.st
        if isinstance(message, EntityUnlockMessage):
            if st.locked_by == message.holder_id:
                st.locked_by = None
                self._drain()
            return
        if st.locked_by is not None and _sender_id(message) != st.locked_by:
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
            holder = self.st.locked_by
            index = next((i for i, m in enumerate(queue) if _sender_id(m) == holder), None)
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
        self.st.locked_by = holder.instance_id
        nxt = message.position + 1
        if nxt < len(message.lock_set):
            forward = EntityLockMessage(self.now, holder, message.lock_set, nxt)
            self.out.append(Outgoing(message.lock_set[nxt], forward))
        else:
            granted = EntityLockGranted(self.now, holder.task_scheduled_id, message.lock_set)
            self.out.append(Outgoing(holder.instance_id, granted, holder.execution_id))

    def _operate(self, request: EntityRequest) -> None:
        st = self.st
        if request.name == "delete":
            st.exists, st.state = False, None
            self._answer(request, True, None)
            return
        spec = self.spec
        if spec is None:
            failure = FailureDetails("EntityNotFound", f"no entity named {self.entity_id.name!r} is registered")
            self._answer(request, False, failure)
            return
        # a deep copy: both styles may mutate the state in place before raising
        before = (st.exists, copy.deepcopy(st.state))
        ctx = EntityContext(self.entity_id, request.name, request.input, st.state, st.exists)
        token = _current.set(ctx)
        try:
            if spec.is_class:
                obj = st.state if st.exists else spec.target()
                method = spec.operation(obj, request.name)
                if method is None:
                    raise DurableValueError(f"entity {self.entity_id.name!r} has no operation {request.name!r}")
                result = _invoke(method, request.input)
                st.state, st.exists = (None, False) if ctx._deleted else (obj, True)
            else:
                spec.target(ctx)
                result = ctx._result
                st.state, st.exists = ctx._state, ctx._exists
        except Exception as exc:
            st.exists, st.state = before
            self._answer(request, False, failure_of(exc))
            return
        finally:
            _current.reset(token)
        for item in ctx.outbox:
            if isinstance(item, SignalOut):
                signal = EntityRequest(self.now, item.operation_name, item.operation_input, None, True)
                self.out.append(Outgoing(item.entity_id, signal))
            else:
                start = ExecutionStarted(self.now, item.name, item.input, item.instance_id, "")
                self.out.append(Outgoing(item.instance_id, start))
        self._answer(request, True, result)

    def _answer(self, request: EntityRequest, ok: bool, value: Any) -> None:
        sender = request.sender
        if request.is_signal or sender is None:
            return
        if ok:
            event: HistoryEvent = EntityOperationCompleted(self.now, sender.task_scheduled_id, value)
        else:
            event = EntityOperationFailed(self.now, sender.task_scheduled_id, value)
        self.out.append(Outgoing(sender.instance_id, event, sender.execution_id))


def _sender_id(message: HistoryEvent) -> str | None:
    if isinstance(message, EntityRequest):
        return message.sender.instance_id if message.sender is not None else None
    if isinstance(message, EntityLockMessage):
        return message.holder.instance_id
    return None


_arity: dict[Any, bool] = {}


def _invoke(method: Callable[..., Any], operation_input: Any) -> Any:
    """Call a class entity's method with the input if it takes a parameter, else with none."""
    func = getattr(method, "__func__", method)
    takes_input = _arity.get(func)
    if takes_input is None:
        params = [
            p for p in inspect.signature(method).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
        ]
        takes_input = _arity[func] = bool(params)
    return method(operation_input) if takes_input else method()


def run_entity(
    spec: EntitySpec | None, entity_id: EntityId, state: EntityState, messages: Sequence[HistoryEvent],
    now: datetime,
) -> list[Outgoing]:
    """Apply ``messages`` to ``state`` (changed in place); return the messages to send."""
    return EntityExecutor(spec, entity_id, state, now).run(messages)
