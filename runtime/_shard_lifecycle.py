"""The lifecycle transitions of a shard host's instances that reach beyond one instance or one
turn: recursive terminate and rewind (children, on any shard, through the outbox), scheduled
starts and the Pending state, and parked messages.

What is decided here is decided by the engine (``orchestrations._children``,
``orchestrations._rewind``); the host only loads history, stages rows and sends messages, all in
the turn's one commit.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any

from orchestrations import (
    ExecutionRewound,
    ExecutionStarted,
    ExecutionTerminated,
    FailureDetails,
    HistoryEvent,
    ParentInfo,
    SubOrchestrationInstanceCreated,
    TaskCompleted,
    TaskFailed,
    TaskScheduled,
    TimerCreated,
    TimerFired,
)
from orchestrations._children import CHILD_EVENT_TYPES, open_children
from orchestrations._rewind import plan_rewind, rewind_locks_refusal
from orchestrations._starts import ChildRewind, child_rewind, rewind_refusal

from ._activities import ActivityCall
from ._codec import dump_value, load_value
from ._codec_records import load_event, load_failure
from ._messages import Instance, Message, to_ts
from ._shard_base import ShardBase
from ._status import TERMINAL, OrchestrationRuntimeStatus

if TYPE_CHECKING:
    from ._turn import Turn

S = OrchestrationRuntimeStatus


def terminated_failure(instance_id: str, reason: Any) -> FailureDetails:
    """What a parent receives from a sub-orchestration that was terminated."""
    return FailureDetails("Terminated", f"sub-orchestration {instance_id!r} was terminated: {reason}")


def activity_call(inst: Instance, task_id: int, name: str, input_: Any, trace: str | None = None) -> ActivityCall:
    """An activity of ``inst``'s current execution, its input encoded for table and worker;
    ``trace``: the ``traceparent`` of the episode span that scheduled it."""
    blob = dump_value(input_, f"input of activity {name!r}")
    return ActivityCall(inst.instance_id, inst.execution_id, task_id, name, blob, trace)


class ShardLifecycle(ShardBase):
    """Mixed into :class:`ShardHost`: terminate and rewind across children, Pending instances,
    parked messages."""

    # -- history as the turn leaves it ----------------------------------------------------------

    async def _current_history(
        self, inst: Instance, turn: Turn, event_types: tuple[str, ...] | None = None
    ) -> list[HistoryEvent]:
        """``inst``'s history as ``turn`` leaves it: the committed rows, then what earlier
        rounds and episodes of the turn staged (a start, or a rewind's cut, may be in this same
        turn). Only the events of ``event_types``, if given."""
        if event_types is None:
            rows = dict(enumerate(await self._store.load_history(inst.num)))
        else:
            rows = dict(await self._store.load_events(inst.num, event_types))
        for staged in turn.rounds:
            for num, cut in staged.truncate_history:
                if num == inst.num:
                    rows = {seq: blob for seq, blob in rows.items() if seq < cut}
            rows.update(
                (row.seq, row.data)
                for row in staged.history
                if row.num == inst.num and (event_types is None or row.event_type in event_types)
            )
        return [load_event(rows[seq]) for seq in sorted(rows)]

    # -- terminate ------------------------------------------------------------------------------

    async def _run_episode(
        self, inst: Instance, msgs: list[Message], turn: Turn
    ) -> None:
        """Run one episode; if a recursive terminate ended the instance in it, terminate the
        sub-orchestrations it left open too (on whatever shard they live, through the outbox)."""
        was_open = inst.status not in TERMINAL
        await self._episode(inst, msgs, turn)
        if was_open and inst.status is S.Terminated:
            for msg in msgs:  # the first terminate is the one that took effect
                if isinstance(msg.event, ExecutionTerminated):
                    if msg.recursive:
                        await self._terminate_children(inst, msg.event.reason, turn)
                    break

    async def _terminate_children(
        self, inst: Instance, reason: str | None, turn: Turn
    ) -> None:
        for child in open_children(await self._current_history(inst, turn, CHILD_EVENT_TYPES)):
            self._stage_outgoing(Message(child, ExecutionTerminated(turn.now, reason), recursive=True), turn)

    # -- rewind ---------------------------------------------------------------------------------

    async def _rewind(
        self, inst: Instance | None, msg: Message, turn: Turn
    ) -> Message | None:
        """A client's rewind of a Failed instance, or a parent's rewind reaching its child
        (``msg.restart``). Returns the start to run when the child was purged."""
        if msg.restart is not None:
            return await self._rewind_for_parent(inst, msg, turn)
        refusal = rewind_refusal(msg.instance_id, None if inst is None else inst.status)
        if refusal is not None or inst is None:
            if msg.ack is not None:
                turn.after.acks[msg.ack] = refusal
            return None
        assert isinstance(msg.event, ExecutionRewound)
        refusal = await self._rewind_failed(inst, msg.event, turn)
        if refusal is not None and msg.ack is not None:
            turn.after.acks[msg.ack] = refusal
        return None

    async def _rewind_failed(
        self, inst: Instance, event: ExecutionRewound, turn: Turn
    ) -> Exception | None:
        """Cut a Failed instance's failing episode from history and run it again (see
        :func:`orchestrations._rewind.plan_rewind`): its incoming events are delivered again
        without the failures, every activity without an answer is dispatched again, every timer
        not fired armed again, and every sub-orchestration without an answer asked again."""
        iid = inst.instance_id
        history = await self._current_history(inst, turn)
        plan = plan_rewind(history)
        refusal = rewind_locks_refusal(iid, plan)
        if refusal is not None:  # left Failed, unchanged
            return refusal
        kept = history[: plan.cut]
        executor = self._new_executor(iid)
        with self._watching(inst):
            executor.replay(kept)
        inst.executor, inst.history_len = executor, plan.cut
        inst.status, inst.output_blob, inst.failure_blob = S.Running, None, None
        turn.writes.truncate_history.append((inst.num, plan.cut))
        for staged in turn.rounds:  # rows this turn staged past the cut go too (the commit
            # deletes before it inserts, so a staged row would otherwise outlive the cut)
            staged.history[:] = [row for row in staged.history if row.num != inst.num or row.seq < plan.cut]
        self._restage_unanswered(inst, [*kept, *plan.redeliver], turn)
        self._ask_children(inst, plan.children, event.reason, turn)
        rewound = Message(iid, ExecutionRewound(event.timestamp, event.reason))
        await self._episode(inst, [rewound, *(Message(iid, e) for e in plan.redeliver)], turn)
        return None

    def _restage_unanswered(self, inst: Instance, history: list[Any], turn: Turn) -> None:
        """Dispatch again every activity ``history`` scheduled without an answer; arm again every
        timer it created that has not fired."""
        iid, exec_id = inst.instance_id, inst.execution_id
        answered = {e.task_scheduled_id for e in history if isinstance(e, (TaskCompleted, TaskFailed))}
        fired = {e.timer_id for e in history if isinstance(e, TimerFired)}
        activities = [
            activity_call(inst, e.event_id, e.name, e.input)
            for e in history
            if isinstance(e, TaskScheduled) and e.event_id not in answered
        ]
        timers = [
            (iid, exec_id, e.event_id, to_ts(e.fire_at))
            for e in history
            if isinstance(e, TimerCreated) and e.event_id not in fired
        ]
        turn.stage_work(activities, timers)

    def _ask_children(
        self, inst: Instance, children: list[SubOrchestrationInstanceCreated], reason: str | None, turn: Turn,
    ) -> None:
        """Send each unanswered child a rewind carrying its start (to run it again if purged)."""
        for created in children:
            parent = ParentInfo(inst.instance_id, created.event_id, inst.execution_id)
            now = turn.now
            start = ExecutionStarted(now, created.name, created.input, created.instance_id, uuid.uuid4().hex, parent)
            msg = Message(created.instance_id, ExecutionRewound(now, reason), restart=start)
            self._stage_outgoing(msg, turn)

    async def _rewind_for_parent(
        self, inst: Instance | None, msg: Message, turn: Turn
    ) -> Message | None:
        """A rewinding parent asks this child for its result: a Failed child is rewound (and so
        on down), a purged one is started again (the start is returned), a finished one answers
        again; a running one answers when it ends. An instance that holds the id but is not that
        child (the id was reused after the child ended, or the child's own start was refused
        because the id was taken) is left alone: the parent gets a failure naming it."""
        start, event = msg.restart, msg.event
        assert start is not None and start.parent is not None and isinstance(event, ExecutionRewound)
        if inst is not None and inst.parent != start.parent:
            self._reply_to_parent(start.parent, None, _not_the_child(inst), turn)
            return None
        step = child_rewind(None if inst is None else inst.status)
        if step is ChildRewind.START_AGAIN or inst is None:
            return Message(msg.instance_id, start)
        if step is ChildRewind.REWIND:
            refusal = await self._rewind_failed(inst, event, turn)
            if refusal is not None:  # it cannot be rewound: its parent gets its failure again
                failure = load_failure(inst.failure_blob)
                if not isinstance(failure, FailureDetails):
                    failure = FailureDetails("DurableValueError", str(refusal))
                self._reply_to_parent(start.parent, None, failure, turn)
        elif step is ChildRewind.ANSWER_OUTPUT:
            self._reply_to_parent(start.parent, load_value(inst.output_blob), None, turn)
        elif step is ChildRewind.ANSWER_TERMINATED:
            failure = terminated_failure(inst.instance_id, load_value(inst.output_blob))
            self._reply_to_parent(start.parent, None, failure, turn)
        return None

    # -- scheduled starts and Pending instances -------------------------------------------------

    def _hold_start(self, inst: Instance, msg: Message, turn: Turn) -> None:
        """A start due later: the instance exists now, Pending, and its start waits parked."""
        assert msg.due is not None
        if inst.executor is not None:
            inst.executor.close()
        inst.status, inst.executor = S.Pending, None
        turn.writes.instances.append(inst.to_row())
        self._parking.note_start(inst.instance_id, msg.due)
        turn.park(msg, msg.due)

    def _begin_scheduled(self, inst: Instance | None, msg: Message) -> Instance | None:
        """A parked start that is due: the Pending instance starts running (``None``: it was
        terminated or replaced while it waited, so the start is dropped)."""
        event = msg.event
        assert isinstance(event, ExecutionStarted)
        if inst is None or inst.status is not S.Pending or inst.execution_id != event.execution_id:
            return None
        self._parking.forget_start(inst.instance_id)
        inst.status, inst.history_len = S.Running, 0
        inst.executor = self._new_executor(inst.instance_id)
        return inst

    def _while_pending(
        self, inst: Instance, msg: Message, turn: Turn
    ) -> None:
        """A message for a Pending instance: a terminate ends it; anything else is held (parked)
        until it starts, then delivered to that execution only."""
        if isinstance(msg.event, ExecutionTerminated):
            self._terminate_pending(inst, msg.event, turn)
            return
        if msg.execution_id is None:
            msg.execution_id = inst.execution_id
        due = self._parking.start_due(inst.instance_id)
        turn.park(msg, due if due is not None else turn.now_ts + 1.0)

    def _terminate_pending(
        self, inst: Instance, event: ExecutionTerminated, turn: Turn
    ) -> None:
        """Terminate an instance that never started: its parked start and held messages go."""
        iid = inst.instance_id
        inst.status, inst.updated_at = S.Terminated, turn.now_ts
        inst.output_blob = dump_value(event.reason, "termination reason")
        self._parking.forget_start(iid)
        stale = self._parking.of_instance(iid)
        turn.writes.done_scheduled.extend(stale)
        turn.after.unparked.extend(stale)
        row = inst.to_row()
        turn.writes.instances.append(row)
        turn.after.finished.append((iid, row))

    async def _load_parked(self) -> None:
        """On start: hold again every message parked before a restart."""
        parked = []
        for msg_id, due, blob in await self._store.load_scheduled():
            msg = Message.from_bytes(blob)
            msg.msg_id, msg.due = msg_id, due
            parked.append(msg)
        self._parking.add(parked)

    def _start_answers(self, touched: list[str]) -> list[tuple[asyncio.Future[Any], Any]]:
        """The answers of ``wait_for_orchestration_start`` callers whose instance left Pending
        (call right after the commit, with the committed in-memory records): (future, row)."""
        answers = []
        for iid in touched:
            futures = self._start_waiters.get(iid)
            inst = self._cache.get(iid)
            if futures and inst is not None and inst.status is not S.Pending:
                row = inst.to_row()
                answers += [(future, row) for future in futures]
        return answers


def _not_the_child(inst: Instance) -> FailureDetails:
    """A rewinding parent's failure for a child id held by another instance."""
    parent = inst.parent
    holder = (
        "an instance started by a client" if parent is None
        else f"the sub-orchestration of task {parent.task_scheduled_id} of {parent.instance_id!r}"
    )
    return FailureDetails(
        "DurableValueError",
        f"the rewind cannot ask sub-orchestration {inst.instance_id!r} again: that id now belongs to {holder}, "
        f"a {inst.name!r} instance that is {inst.status.value}",
    )
