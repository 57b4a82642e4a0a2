"""The entity path of a shard host: what a turn does with the messages of one entity (load its
record, run its operations, stage its row and the messages it sends), the check of entity names
that orchestrations and entities share, and the one-time move of entities written before entity
names were case-insensitive to their canonical ids.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from entities import EntityId, Outgoing, run_entity
from entities._executor import OperationWatch
from entities._registry import check_entity_name
from orchestrations import (
    DurableValueError,
    EntityLockMessage,
    EntityOperationCompleted,
    EntityOperationFailed,
    EntityRequest,
    FailureDetails,
    HistoryEvent,
)
from orchestrations._ids import entity_key, shard_of

from . import _tracing
from ._codec import failure_from_exception
from ._delivery import Outbound
from ._entity_host import (
    EntityMoved,
    EntityRecord,
    RowKeeper,
    addressable,
    canonical_row,
    held_by,
    outgoing_message,
    unlock_all,
)
from ._messages import Message
from ._shard_base import ShardBase
from ._turn_state import utcnow

if TYPE_CHECKING:
    from ._turn import Turn

log = logging.getLogger("ray_durable.shard")

#: an entity's answers to a call (a lock grant, which no inline message causes, always travels)
_ANSWERS = (EntityOperationCompleted, EntityOperationFailed)


class ShardEntities(ShardBase):
    """Mixed into :class:`ShardHost`: the entity path of a turn, and entity names."""

    # -- entity names and the files written before they were case-insensitive -------------------

    async def _move_legacy_entities(self) -> None:
        """Once per file written before entity names were case-insensitive: give its entities
        their canonical ids. A row whose canonical id this shard owns is renamed in place; one
        another shard owns goes there in an :class:`EntityMoved` message, in the same
        transaction that deletes it here (the outbox delivers it after the start)."""
        candidates = await self._store.legacy_entity_rows()
        if candidates is None:
            return
        rows = [r for r in addressable(candidates) if entity_key(r[0]) != r[0]]
        kept, outbox = [], []
        for row in rows:
            moved = canonical_row(row)
            if shard_of(moved[0], self.config.num_shards) == self.config.index:
                kept.append(moved)
            else:
                out = self._outgoing(Message(moved[0], EntityMoved(utcnow(), moved)))
                outbox.append((out.msg_id, out.dest, out.blob))
        if rows:
            log.warning("shard %s: %d entities moved to their canonical ids", self.config.index, len(rows))
        async with self._db_lock:
            await self._store.move_legacy_entities([r[0] for r in rows], kept, outbox)

    def _adopt_moved(self, record: EntityRecord, msgs: list[Message], spec: Any) -> list[Message]:
        """Take the state an :class:`EntityMoved` message carries, if the entity has none of its
        own yet (a later state wins: it was written by the current code); returns the other
        messages."""
        rest = []
        for msg in msgs:
            if type(msg.event) is not EntityMoved:
                rest.append(msg)
            elif record.state.is_empty:
                moved = EntityRecord.from_row(msg.event.row, spec)
                record.state, record.sealed = moved.state, moved.sealed
            else:
                log.warning("shard %s: %s already has state; the state moved from its old id is dropped",
                            self.config.index, msg.instance_id)
        return rest

    def _check_entity_name(self, name: str) -> None:
        """Raise ``ValueError`` naming the closest registered names unless an entity named
        ``name`` is registered (the union of every registry installed here)."""
        check_entity_name(name, self._entity_specs)

    # -- one entity's messages --------------------------------------------------------------------

    def _readdress_legacy(
        self, groups: dict[str, list[Message]], turn: Turn
    ) -> None:
        """Messages addressed to an entity id in the form written before entity names were
        case-insensitive (``@Account@a``, still in an outbox) go to the canonical id
        (``@account@a``): here, or through the outbox to the shard that owns it. Only ids not
        in memory are looked at (a cached entity's id is canonical), so this costs nothing on
        the hot path. Messages to an id no entity can have are refused (see :meth:`_refuse`)."""
        for key in [k for k in groups if k.startswith("@") and k not in self._entities]:
            try:
                canonical = entity_key(key)
            except DurableValueError as exc:  # an empty key (the previous version allowed it), a long one
                self._refuse(key, groups.pop(key), exc, turn)
                continue
            if canonical == key:
                continue
            msgs = groups.pop(key)
            if shard_of(canonical, self.config.num_shards) == self.config.index:
                for msg in msgs:
                    msg.instance_id = canonical
                groups.setdefault(canonical, []).extend(msgs)
                continue
            for msg in msgs:
                if msg.ack is not None:
                    turn.after.acks[msg.ack] = None
                self._stage_outgoing(Message(canonical, msg.event, execution_id=msg.execution_id), turn)

    def _refuse(
        self, key: str, msgs: list[Message], error: Exception, turn: Turn
    ) -> None:
        """Messages to ``key`` that this shard cannot accept: each is answered and let go in
        this turn, never refused back to a sender that would send it again ahead of
        everything it sends after it. A client is told ``error``; an orchestration that called
        the entity, or asked for its lock, gets ``error`` as the failure of that task (locks it
        took on the way are released); a signal is dropped. Loudly: one error in the log."""
        log.error("shard %s: %d message(s) to %.80r refused: %s", self.config.index, len(msgs), key, error)
        failure = failure_from_exception(error)
        for msg in msgs:
            if msg.ack is not None:
                turn.after.acks[msg.ack] = error if msg.client else None
            event = msg.event
            if isinstance(event, EntityRequest) and not event.is_signal and event.sender is not None:
                sender = event.sender
            elif isinstance(event, EntityLockMessage):
                sender = event.holder
                for unlock in unlock_all(
                    event.lock_set[: event.position], sender.instance_id, sender.execution_id,
                    sender.task_scheduled_id, turn.now,
                ):
                    self._stage_outgoing(unlock, turn)
            else:
                continue
            answer = EntityOperationFailed(turn.now, sender.task_scheduled_id, failure)
            self._stage_outgoing(Message(sender.instance_id, answer, execution_id=sender.execution_id), turn)

    def _serve_inline(self, msg: Message, iid: str, exec_id: str, turn: Turn) -> list[HistoryEvent] | None:
        """Serve ``msg`` (sent by execution ``exec_id`` of instance ``iid`` in the episode being
        run) at its entity now, instead of in the turn's next round, when the entity is in
        memory here, none of this round's messages to it is still to run (``turn.unrun``),
        and the message is one it serves ahead of everything it holds (:func:`held_by`: a call
        to an entity this execution holds locked, or the unlock that releases it). Returns the
        entity's answers to this execution (the events of its next executor run), or ``None``
        if the message must travel as usual (also when serving it failed: a bug, logged; the
        entity is put back and the message's own delivery fails or succeeds as it would).

        The operation, row and messages are those of the message's delivery in the next round;
        only the round trip is saved: a critical section's calls and unlock run in the chain
        of executor runs that makes them (``ShardInstances._process``)."""
        key = msg.instance_id
        record = self._entities.get(key)
        if record is None or key in turn.unrun or not held_by(record.state, msg.event, iid, exec_id):
            return None
        spec = self._entity_specs.get(record.entity_id.name)
        before, mark = record.checkpoint(spec), turn.mark()
        try:
            answers = self._run_entity(key, [msg], turn, (iid, exec_id))
        except Exception:
            log.exception("shard %s: %s failed serving %s inline; it is sent instead", self.config.index, key, iid)
            turn.rollback(mark)
            record.restore(before, spec)
            return None
        turn.served.setdefault(key, before)
        turn.touched.add(key)
        self.messages += 1
        self.served_inline += 1
        if self._metrics.enabled:
            self._metrics.count_messages({key: [msg]}, turn.now_ts)
        return answers

    def _put_back_served(self, turn: Turn) -> None:
        """The record whose executor runs had entities serve it inline failed, and its writes
        were rolled back: put those entities back as they were before it."""
        for key, checkpoint in turn.served.items():
            record = self._entities.get(key)
            if record is not None:
                record.restore(checkpoint, self._entity_specs.get(record.entity_id.name))
        turn.served.clear()

    def _run_entity(
        self, key: str, msgs: list[Message], turn: Turn, answers_for: tuple[str, str] | None = None
    ) -> list[HistoryEvent]:
        """Run an entity's messages in order and stage its new state and outgoing messages.

        The keeper encodes each operation's state and messages as the operation ends, so a
        value that cannot be stored fails that operation only; the same bytes make the row
        and the outbox rows. With ``answers_for`` (an instance id and execution id), the
        answers and lock grants to that execution are returned instead of sent."""
        record = self._entities[key]
        self._entities.move_to_end(key)
        for msg in msgs:
            if msg.ack is not None:
                turn.after.acks[msg.ack] = None
        spec = self._entity_specs.get(record.entity_id.name)
        if any(type(m.event) is EntityMoved for m in msgs):
            msgs = self._adopt_moved(record, msgs, spec)
        keeper = RowKeeper(record, spec, lambda out: self._prepare_outgoing(out).encode())
        watch = OperationSpans() if _tracing.enabled() else None
        outgoing = run_entity(
            spec, record.entity_id, record.state, [m.event for m in msgs], turn.now, keeper, self._check_entity_name,
            watch,
        )
        if record.state.queue:
            self._metrics.count_queued_locks((m.event for m in msgs), record.state.queue)
        record.updated_at = turn.now_ts
        turn.writes.entities.append(record.to_row(spec))
        prepared = keeper.prepared
        answers: list[HistoryEvent] = []
        if answers_for is not None:
            sent = []
            for out in outgoing:
                if (out.target, out.execution_id) == answers_for and type(out.event) in _ANSWERS:
                    answers.append(out.event)
                else:
                    sent.append(out)
            outgoing = sent
        turn.send([prepared.get(id(out)) or self._prepare_outgoing(out) for out in outgoing])
        return answers

    def _prepare_outgoing(self, out: Outgoing) -> Outbound:
        """Something an entity sends, as an outbox message (encoded once)."""
        return self._outgoing(outgoing_message(out))


class OperationSpans(OperationWatch):
    """While tracing is on: each entity operation runs in a span ``entity:<name>:<operation>``
    (current while it runs, so its log records carry its ids), child of the request's trace
    context; a failed operation's span has the error status. The signals and starts the
    operation sends carry its span's context."""

    def __init__(self) -> None:
        self._open: tuple[Any, Any] | None = None

    def begin(self, entity_id: EntityId, request: EntityRequest) -> str | None:
        attributes = {"durable.entity_id": str(entity_id), "durable.operation": request.name}
        if request.sender is not None:
            attributes["durable.instance_id"] = request.sender.instance_id
        opened = _tracing.open_span(f"entity:{entity_id.name}:{request.name}", request.trace, _tracing.SERVER,
                                    attributes)
        if opened is None:
            return request.trace
        self._open = (opened, _tracing.activate(opened))
        return _tracing.traceparent_of(opened)

    def end(self, request: EntityRequest, failure: FailureDetails | None) -> None:
        if self._open is None:
            return
        opened, token = self._open
        self._open = None
        _tracing.deactivate(token)
        if failure is None:
            _tracing.close_span(opened)
        else:
            _tracing.close_span(opened, failure.error_type, failure.message)
