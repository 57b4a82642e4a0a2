"""Messages: history events on their way to an instance, and the instance records a shard
host keeps in memory."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from orchestrations import EventRaised, ExecutionStarted, HistoryEvent, OrchestrationExecutor, ParentInfo
from orchestrations._compat import tolerate_new_fields

from ._codec import LENIENT, dump_json, load_json, load_value
from ._codec_records import dump_parent, event_from_record, event_to_record, load_failure, load_parent
from ._schema import InstanceRow
from ._status import DurableOrchestrationStatus, OrchestrationRuntimeStatus


@tolerate_new_fields
@dataclass(slots=True)
class Message:
    """One event for one instance.

    ``execution_id`` addresses a reply to one execution (a stale reply to an execution that
    continued as new is dropped). ``msg_id`` is set for messages that went through an outbox:
    the receiver drops a duplicate id, and a shard's message to itself is acknowledged by
    deleting its outbox row in the turn that applies it. A ``client`` message carries an id too,
    so a call Ray retries after a shard host restart is applied once; only a client is told
    that its message was refused. ``ack`` is resolved after the commit that applied the
    message (or with the error that refused it).

    Fields after ``ack`` were appended later (stored messages written before them load with
    their defaults). ``due`` (epoch seconds) asks the receiving shard to apply the message not
    before that time: it parks it durably until then, and ``parked`` marks it when it comes
    back to be applied. ``recursive`` makes a terminate stop the instance's open
    sub-orchestrations too. ``restart`` is set on the rewind a parent sends its child: the
    child's start, to run it again if it was purged. ``fresh`` marks a client's start of an
    instance id the client has just made up (a random one): no record of it can be in the file
    unless this very start was applied before, which only a retried call can cause, so a host
    that has seen no retry creates its record without looking for it.
    """

    instance_id: str
    event: HistoryEvent
    execution_id: str | None = None
    msg_id: str | None = None
    from_self: bool = False
    continue_as_new: bool = False
    client: bool = False
    carryover: list[EventRaised] = field(default_factory=list)
    input_blob: str | None = None
    ack: asyncio.Future[Any] | None = None
    due: float | None = None
    parked: bool = False
    recursive: bool = False
    restart: ExecutionStarted | None = None
    fresh: bool = False
    #: in memory only, like ``ack``: the start is in the host's start journal, not yet in its
    #: file (``runtime._shard_intake``)
    journaled: bool = False

    def to_bytes(self) -> bytes:
        """The message without its ack future, encoded for an outbox, a parked row or another
        shard: a JSON record of its fields (events as event records; see the storage format),
        not a pickle of this class, so a stored message does not depend on module paths."""
        what = f"a message to {self.instance_id!r}"
        record: dict[str, Any] = {"instance_id": self.instance_id, "event": event_to_record(self.event, what)}
        for name in _PLAIN_FIELDS:
            value = getattr(self, name)
            if value is not None and value is not False:
                record[name] = value
        if self.carryover:
            record["carryover"] = [event_to_record(e, what) for e in self.carryover]
        if self.restart is not None:
            record["restart"] = event_to_record(self.restart, what)
        return dump_json(record).encode()

    @staticmethod
    def from_bytes(blob: bytes | str) -> Message:
        """The inverse of :meth:`to_bytes`."""
        record = load_json(blob)
        msg = Message(record["instance_id"], event_from_record(record["event"]))
        for name in _PLAIN_FIELDS:
            if name in record:
                setattr(msg, name, record[name])
        if "carryover" in record:
            msg.carryover = [event_from_record(e) for e in record["carryover"]]  # type: ignore[misc]
        if "restart" in record:
            msg.restart = event_from_record(record["restart"])  # type: ignore[assignment]
        return msg


#: the fields of a :class:`Message` stored as they are (the others: events, or not stored)
_PLAIN_FIELDS = ("execution_id", "msg_id", "continue_as_new", "client", "input_blob", "due", "recursive", "fresh")


def to_ts(dt: datetime) -> float:
    """A UTC datetime as epoch seconds (the storage form)."""
    return dt.timestamp()


def from_ts(ts: float) -> datetime:
    """Epoch seconds as a UTC datetime."""
    return datetime.fromtimestamp(ts, tz=UTC)


@dataclass(slots=True)
class Instance:
    """A shard host's in-memory record of one instance (the virtual actor's state).

    ``history_len`` is -1 until the history was loaded; ``executor`` holds the live generator
    of a hot instance (``None`` once evicted, then rebuilt by replay).
    """

    instance_id: str
    name: str
    execution_id: str
    status: OrchestrationRuntimeStatus
    input_blob: str | None
    created_at: float
    updated_at: float
    parent: ParentInfo | None = None
    output_blob: str | None = None
    custom_status_blob: str | None = None
    failure_blob: str | None = None
    history_len: int = -1
    #: the per-shard number its history rows are keyed by (new with every start or replace)
    num: int = 0
    executor: OrchestrationExecutor | None = None
    tasks_scheduled: int = 0
    tasks_done: int = 0
    #: the execution id of a client's start that created this execution, which Ray may still
    #: deliver again (a call retried after a shard host restart): when the instance row stops
    #: naming it (continue-as-new, replaced, purged), it is kept in ``delivered`` (see
    #: :func:`start_key`) so the retry is recognised. Loaded from a row, an execution without a
    #: parent may have been a client's start: assumed so.
    retriable_start: str | None = None
    #: the ``traceparent`` its execution's episode spans are children of (its
    #: ``ExecutionStarted.trace``; ``None`` while tracing is off or until its history is read)
    trace: str | None = None

    @staticmethod
    def from_row(row: InstanceRow) -> Instance:
        """Build from an ``instances`` row."""
        return Instance(
            instance_id=row.instance_id,
            name=row.name,
            execution_id=row.execution_id,
            status=OrchestrationRuntimeStatus(row.status),
            input_blob=row.input,
            output_blob=row.output,
            custom_status_blob=row.custom_status,
            failure_blob=row.failure,
            parent=load_parent(row.parent),
            created_at=row.created_at,
            updated_at=row.updated_at,
            num=row.num,
            retriable_start=row.execution_id if row.parent is None else None,
        )

    def to_row(self) -> InstanceRow:
        """The ``instances`` row."""
        return InstanceRow(
            self.instance_id,
            self.name,
            self.execution_id,
            self.status.value,
            self.input_blob,
            self.output_blob,
            self.custom_status_blob,
            self.failure_blob,
            dump_parent(self.parent),
            self.created_at,
            self.updated_at,
            self.num,
        )


def start_key(execution_id: str) -> str:
    """The ``delivered`` key of a client's start whose execution the instance row no longer
    names (message ids are random hex: they never start with ``start:``)."""
    return f"start:{execution_id}"


def status_from_row(row: InstanceRow, show_input: bool = True, mode: str = LENIENT) -> DurableOrchestrationStatus:
    """A client status record from an ``instances`` row, its payloads read in ``mode`` (see
    ``runtime._codec``: a value that cannot be decoded is an ``Undecodable``; a reader of a
    hub's files passes ``SAFE``, which runs no code from them, or ``RAW``)."""
    failure: Any = load_failure(row.failure, mode)  # an Undecodable or RawPayload where it cannot be read
    return DurableOrchestrationStatus(
        name=row.name,
        instance_id=row.instance_id,
        created_time=from_ts(row.created_at),
        last_updated_time=from_ts(row.updated_at),
        input_=load_value(row.input, mode) if show_input else None,
        output=load_value(row.output, mode),
        runtime_status=OrchestrationRuntimeStatus(row.status),
        custom_status=load_value(row.custom_status, mode),
        history=None,
        failure_details=failure,
    )
