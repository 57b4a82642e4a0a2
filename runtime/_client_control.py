"""The task hub client's control of orchestration instances: start (now, later, in batches),
raise events, terminate, suspend, resume, rewind and restart. Each call checks its arguments
before anything is sent and returns once its effect is committed."""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any

from orchestrations import (
    DurableTypeError,
    DurableValueError,
    EventRaised,
    ExecutionResumed,
    ExecutionRewound,
    ExecutionStarted,
    ExecutionSuspended,
    ExecutionTerminated,
    HistoryEvent,
    InstanceNotFoundError,
    validate_instance_id,
)
from orchestrations._ids import check_encodable, new_instance_id
from orchestrations._registry import function_name, function_version

from . import _tracing
from ._client_args import check_bool, utc_now, utc_timestamp
from ._client_base import ClientParts
from ._codec import dump_value, encode
from ._messages import Message


class ControlClient(ClientParts):
    """Mixed into :class:`TaskHub`: what a driver does to orchestration instances."""

    def start_new(
        self,
        orchestration_function_name: str | Callable[..., Any],
        instance_id: str | None = None,
        client_input: Any = None,
        *,
        start_at: datetime | None = None,
    ) -> str:
        """Start an orchestration; returns its instance id once the start is committed.

        The instance exists from then on. If its shard host was busy with a turn, it is Pending
        until the host's next turn starts it (a few milliseconds): the start was committed on
        its own rather than wait for the turn in progress.

        With ``start_at`` (a UTC ``datetime``; naive is taken as UTC) the instance exists at
        once, Pending (its status and created time are visible), and runs its first episode at
        that time, not before, even across a restart of its shard host. Events sent to it
        meanwhile are held and delivered when it starts; terminating it ends it without it ever
        running. A time that has passed starts it now. (durabletask's ``start_at``.)

        Raises ``ValueError`` (nothing written) for an unknown orchestrator, a bad instance id
        or an input that cannot be serialized, and :class:`InstanceAlreadyExistsError` when the
        id is Pending, Running or Suspended. A Completed, Failed or Terminated id is replaced.
        """
        msg = self._start_message(orchestration_function_name, instance_id, client_input, start_at)
        with traced_starts([msg]):
            self._submit([msg])
        return msg.instance_id

    def start_new_batch(
        self, orchestration_function_name: str | Callable[..., Any], inputs: Iterable[Any]
    ) -> list[str]:
        """Start one instance per input (random ids) with one call per shard; returns the ids.
        ``inputs``: a list (or any iterable) of the inputs, one per instance."""
        if isinstance(inputs, (str, bytes)) or not isinstance(inputs, Iterable):
            raise DurableTypeError(f"inputs must be a list with one input per instance, got {inputs!r}")
        msgs = [self._start_message(orchestration_function_name, None, x) for x in inputs]
        with traced_starts(msgs):
            self._submit(msgs)
        return [m.instance_id for m in msgs]

    def _start_message(
        self, fn: str | Callable[..., Any], instance_id: str | None, client_input: Any,
        start_at: datetime | None = None,
    ) -> Message:
        """The start of one instance (checked: name, id, input, ``start_at``), not yet sent."""
        due = utc_timestamp(start_at, "start_at") if start_at is not None else None
        name = function_name(fn, "orchestrator")
        self._sync_registry()  # the shard refuses a name neither this driver nor the hub has
        iid = new_instance_id() if instance_id is None else validate_instance_id(instance_id)
        blob = dump_value(client_input, "client_input")
        event = ExecutionStarted(utc_now(), name, client_input, iid, uuid.uuid4().hex, version=function_version(fn))
        return Message(iid, event, input_blob=blob, due=due, fresh=instance_id is None and due is None)

    def raise_event(self, instance_id: str, event_name: str, event_data: Any = None) -> None:
        """Send external event ``event_name`` to an instance (buffered if nobody waits yet).

        Raises :class:`InstanceNotFoundError` for an unknown id; an event for an instance that
        already finished is dropped.
        """
        self._submit([self._event_message(instance_id, event_name, event_data)])

    def _event_message(self, instance_id: str, event_name: str, event_data: Any) -> Message:
        validate_instance_id(instance_id)
        if not isinstance(event_name, str) or not event_name:
            raise DurableValueError(f"event name must be a non-empty string, got {event_name!r}")
        check_encodable(event_name, "event name")
        encode(event_data, "event_data")
        return Message(instance_id, EventRaised(utc_now(), event_name, event_data))

    def terminate(self, instance_id: str, reason: str | None = None, recursive: bool = True) -> None:
        """Terminate a Pending, Running or Suspended instance (no effect on a finished one).

        With ``recursive`` (the default, as in durabletask), the sub-orchestrations it is still
        waiting for are terminated too, and theirs, on whatever shard they live; ``False``
        terminates this instance only (its children run on, and their results are dropped).
        """
        self._submit([self._terminate_message(instance_id, reason, recursive)])

    def _terminate_message(self, instance_id: str, reason: str | None, recursive: bool) -> Message:
        validate_instance_id(instance_id)
        encode(reason, "reason")
        event = ExecutionTerminated(utc_now(), reason)
        return Message(instance_id, event, recursive=check_bool(recursive, "recursive"))

    def suspend(self, instance_id: str, reason: str | None = None) -> None:
        """Suspend an instance: events are held (durably, in order) until it resumes.

        Raises :class:`InstanceNotFoundError` for an unknown id; suspending one that is already
        suspended, or has finished, changes nothing (as the Durable Functions Python SDK,
        which does not report it either)."""
        self._control(instance_id, ExecutionSuspended(utc_now(), reason), reason)

    def resume(self, instance_id: str, reason: str | None = None) -> None:
        """Resume a suspended instance and apply what arrived meanwhile.

        Raises :class:`InstanceNotFoundError` for an unknown id; resuming one that is not
        suspended changes nothing."""
        self._control(instance_id, ExecutionResumed(utc_now(), reason), reason)

    def rewind(self, instance_id: str, reason: str | None = None) -> None:
        """Re-run a Failed instance from its last good state: the failing episode is cut from
        history and runs again, and the activities that failed are dispatched anew.

        Sub-orchestrations it has no answer from are asked again, recursively (as
        DurableTask.Core does): a Failed child is rewound the same way and the parent waits for
        its new result instead of receiving the old failure; a child that was purged is started
        again with its recorded input; a finished child answers again.

        Raises ``ValueError`` unless the instance is Failed.
        """
        self._control(instance_id, ExecutionRewound(utc_now(), reason), reason)

    def restart(self, instance_id: str, restart_with_new_instance_id: bool = True) -> str:
        """Start the instance's orchestrator again with the same input; returns the new id
        (the same id if ``restart_with_new_instance_id`` is false, which requires the old
        instance to be Completed, Failed or Terminated)."""
        status = self.get_status(instance_id)
        if status is None:
            raise InstanceNotFoundError(instance_id)
        new_id = None if restart_with_new_instance_id else instance_id
        return self.start_new(status.name, new_id, status.input_)

    def _control(self, instance_id: str, event: HistoryEvent, reason: Any) -> None:
        self._submit([self._control_message(instance_id, event, reason)])

    @staticmethod
    def _control_message(instance_id: str, event: HistoryEvent, reason: Any) -> Message:
        validate_instance_id(instance_id)
        encode(reason, "reason")
        return Message(instance_id, event)


@contextlib.contextmanager
def traced_starts(msgs: list[Message]) -> Iterator[None]:
    """While tracing is on in this process: a span ``create_orchestration:<name>`` (kind CLIENT,
    child of the current span) around the submission of each start in ``msgs``, whose
    ``traceparent`` the start carries (``ExecutionStarted.trace``), so that the instance's
    episodes, activities and entity operations join its trace. Off: nothing at all."""
    if not _tracing.enabled(fresh=True):
        yield
        return
    parent = _tracing.current_traceparent()
    spans = []
    for msg in msgs:
        event = msg.event
        assert isinstance(event, ExecutionStarted)
        attributes = {"durable.instance_id": msg.instance_id, "durable.execution_id": event.execution_id}
        opened = _tracing.open_span(f"create_orchestration:{event.name}", parent, _tracing.CLIENT, attributes)
        msg.event = dataclasses.replace(event, trace=_tracing.traceparent_of(opened))
        spans.append(opened)
    try:
        yield
    except BaseException as exc:
        for opened in spans:
            _tracing.close_span(opened, type(exc).__name__, str(exc))
        raise
    for opened in spans:
        _tracing.close_span(opened)
