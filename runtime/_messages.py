"""Messages: history events on their way to an instance, and the instance records a shard
host keeps in memory."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from orchestrations import EventRaised, ExecutionStarted, HistoryEvent, OrchestrationExecutor, ParentInfo
from orchestrations._compat import tolerate_new_fields

from ._codec import decode, encode
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
    child's start, to run it again if it was purged.
    """

    instance_id: str
    event: HistoryEvent
    execution_id: str | None = None
    msg_id: str | None = None
    from_self: bool = False
    continue_as_new: bool = False
    client: bool = False
    carryover: list[EventRaised] = field(default_factory=list)
    input_blob: bytes | None = None
    ack: asyncio.Future[Any] | None = None
    due: float | None = None
    parked: bool = False
    recursive: bool = False
    restart: ExecutionStarted | None = None

    def to_bytes(self) -> bytes:
        """The message without its ack future, encoded for an outbox, a parked row or another
        shard."""
        return encode(replace(self, ack=None, from_self=False, parked=False), "message")

    @staticmethod
    def from_bytes(blob: bytes) -> Message:
        """The inverse of :meth:`to_bytes`."""
        msg: Message = decode(blob)
        return msg


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
    input_blob: bytes | None
    created_at: float
    updated_at: float
    parent: ParentInfo | None = None
    output_blob: bytes | None = None
    custom_status_blob: bytes | None = None
    failure_blob: bytes | None = None
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

    @staticmethod
    def from_row(row: Any) -> Instance:
        """Build from an ``instances`` row (see ``INSTANCE_COLUMNS``)."""
        return Instance(
            instance_id=row[0],
            name=row[1],
            execution_id=row[2],
            status=OrchestrationRuntimeStatus(row[3]),
            input_blob=row[4],
            output_blob=row[5],
            custom_status_blob=row[6],
            failure_blob=row[7],
            parent=decode(row[8]),
            created_at=row[9],
            updated_at=row[10],
            num=row[11],
            retriable_start=row[2] if row[8] is None else None,
        )

    def to_row(self) -> tuple[Any, ...]:
        """The ``instances`` row."""
        return (
            self.instance_id,
            self.name,
            self.execution_id,
            self.status.value,
            self.input_blob,
            self.output_blob,
            self.custom_status_blob,
            self.failure_blob,
            encode(self.parent) if self.parent is not None else None,
            self.created_at,
            self.updated_at,
            self.num,
        )


def start_key(execution_id: str) -> str:
    """The ``delivered`` key of a client's start whose execution the instance row no longer
    names (message ids are random hex: they never start with ``start:``)."""
    return f"start:{execution_id}"


def status_from_row(
    row: Any, show_input: bool = True, decode_value: Callable[[bytes | None], Any] = decode
) -> DurableOrchestrationStatus:
    """A client status record from an ``instances`` row (payloads through ``decode_value``:
    a reader of a hub's files passes one that runs no code from them)."""
    return DurableOrchestrationStatus(
        name=row[1],
        instance_id=row[0],
        created_time=from_ts(row[9]),
        last_updated_time=from_ts(row[10]),
        input_=decode_value(row[4]) if show_input else None,
        output=decode_value(row[5]),
        runtime_status=OrchestrationRuntimeStatus(row[3]),
        custom_status=decode_value(row[6]),
        history=None,
        failure_details=decode_value(row[7]),
    )
