"""The orchestration-instance path of a shard host's turn: start (or refuse, or replace) an
instance, replay it when it is not in memory, run one episode of its executor over its messages,
and stage what the episode produced (history rows, activities, timers, messages, the instance
row, the answer to a parent) in the turn's writes.

Nothing here commits or sends: the host's turn loop (``runtime/_shard.py``) does both once every
record of the turn has run.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from orchestrations import (
    Action,
    CreateSubOrchestration,
    CreateTimer,
    DurableValueError,
    EntityLockGranted,
    EventRaised,
    ExecutionCompleted,
    ExecutionResult,
    ExecutionRewound,
    ExecutionStarted,
    ExecutionState,
    FailureDetails,
    InstanceAlreadyExistsError,
    InstanceNotFoundError,
    OrchestrationExecutor,
    ParentInfo,
    PayloadError,
    ScheduleTask,
    SendEvent,
    SubOrchestrationInstanceCompleted,
    SubOrchestrationInstanceFailed,
    TaskCompleted,
    TaskFailed,
    TimerFired,
    UnlockEntity,
)
from orchestrations._registry import did_you_mean

from ._activities import ActivityCall
from ._codec import dump_event, dump_failure, dump_value, failure_from_exception, load_event
from ._delivery import Outbound
from ._entity_host import entity_action_message, unlock_all
from ._messages import Instance, Message, start_key, to_ts
from ._schema import HistoryRow
from ._shard_base import ShardBase
from ._shard_lifecycle import activity_call, stage_work, terminated_failure
from ._status import TERMINAL, OrchestrationRuntimeStatus
from ._turn_state import AfterCommit, due_later

if TYPE_CHECKING:
    from ._store import TurnWrites

_STATE_TO_STATUS = {
    ExecutionState.RUNNING: OrchestrationRuntimeStatus.Running,
    ExecutionState.SUSPENDED: OrchestrationRuntimeStatus.Suspended,
    ExecutionState.COMPLETED: OrchestrationRuntimeStatus.Completed,
    ExecutionState.FAILED: OrchestrationRuntimeStatus.Failed,
    ExecutionState.TERMINATED: OrchestrationRuntimeStatus.Terminated,
    ExecutionState.CONTINUED_AS_NEW: OrchestrationRuntimeStatus.ContinuedAsNew,
}


class ShardInstances(ShardBase):
    """Mixed into :class:`ShardHost`: what a turn does with the messages of one orchestration
    instance."""

    # -- one instance's messages ------------------------------------------------------------------

    async def _load_missing_instances(self, groups: dict[str, list[Message]]) -> None:
        """Load the records of the turn's instances that are not in memory."""
        missing = [i for i in groups if not i.startswith("@") and i not in self._cache]
        if missing:
            for iid, row in (await self._store.load_instances(missing)).items():
                self._cache[iid] = Instance.from_row(row)

    async def _run_instance(
        self, iid: str, msgs: list[Message], now: datetime, w: TurnWrites, after: AfterCommit
    ) -> None:
        inst = self._cache.get(iid)
        if inst is not None:
            self._cache.move_to_end(iid)
            if inst.status is OrchestrationRuntimeStatus.ContinuedAsNew:
                # the restart goes first: events sent meanwhile belong to the new execution
                msgs = sorted(msgs, key=lambda m: not m.continue_as_new)
        pending: list[Message] = []
        for msg in msgs:
            if msg.ack is not None:
                after.acks[msg.ack] = None
            if isinstance(msg.event, ExecutionRewound):
                if inst is not None and pending:
                    await self._run_episode(inst, pending, now, w, after)
                pending = []
                restart = await self._rewind(inst, msg, now, w, after)
                if restart is not None:  # a purged child its rewinding parent starts again
                    started = self._start(inst, restart, now, w, after)
                    if started is not None:
                        inst, pending = started, [restart]
                continue
            if isinstance(msg.event, ExecutionStarted):
                if inst is not None and pending:
                    await self._run_episode(inst, pending, now, w, after)
                pending = []
                if msg.parked:
                    started = self._begin_scheduled(inst, msg)
                else:
                    started = self._start(inst, msg, now, w, after)
                if started is not None:
                    inst = started
                    if due_later(msg, to_ts(now)):
                        self._hold_start(inst, msg, w, after)
                    else:
                        pending = [msg, *(Message(iid, e) for e in msg.carryover)]
                continue
            if inst is not None and inst.status is OrchestrationRuntimeStatus.Pending:
                self._while_pending(inst, msg, now, w, after)
                continue
            if inst is None or inst.status in TERMINAL or inst.status is OrchestrationRuntimeStatus.ContinuedAsNew:
                self._drop(msg, inst is not None, now, w, after)
                continue
            if msg.execution_id is not None and msg.execution_id != inst.execution_id:
                self._drop(msg, True, now, w, after)
                continue
            pending.append(msg)
        if inst is not None and pending:
            await self._run_episode(inst, pending, now, w, after)
        if inst is not None:
            after.touched.append(iid)

    def _drop(self, msg: Message, known: bool, now: datetime, w: TurnWrites, after: AfterCommit) -> None:
        """A message for an instance that does not exist, is over, or is another execution:
        dropped. A client (not another shard, which would only retry) is told the instance
        does not exist; locks granted to a holder that can no longer use them are released."""
        if not known and msg.ack is not None and msg.client:
            after.acks[msg.ack] = InstanceNotFoundError(msg.instance_id)
        if isinstance(msg.event, EntityLockGranted):
            grant = msg.event
            for unlock in unlock_all(grant.lock_set, msg.instance_id, msg.execution_id, grant.task_scheduled_id, now):
                self._stage_outgoing(unlock, w, after)

    def _start(
        self, inst: Instance | None, msg: Message, now: datetime, w: TurnWrites, after: AfterCommit
    ) -> Instance | None:
        """Create (or replace) the instance of an ExecutionStarted message; ``None`` if refused."""
        event = msg.event
        assert isinstance(event, ExecutionStarted)
        iid = msg.instance_id
        if msg.client and event.name not in self._orchestrators:
            # a driver may start by name code it does not have itself, but not unknown code
            if msg.ack is not None:
                hint = did_you_mean(event.name, self._orchestrators)
                after.acks[msg.ack] = DurableValueError(f"no orchestrator named {event.name!r} is registered ({hint})")
            return None
        if inst is not None:
            if msg.client and inst.execution_id == event.execution_id:
                return None  # a retried start that was applied already: acknowledge, change nothing
            restarting = msg.continue_as_new and inst.status is OrchestrationRuntimeStatus.ContinuedAsNew
            if msg.continue_as_new and not restarting:
                return None  # terminated (or replaced) while its restart was on the way
            if not restarting and inst.status not in TERMINAL:
                error = InstanceAlreadyExistsError(iid, inst.status.value)
                if msg.ack is not None and msg.client:  # a client's start: refuse it
                    after.acks[msg.ack] = error
                if event.parent is not None:
                    self._reply_to_parent(event.parent, None, failure_from_exception(error), now, w, after)
                return None
            if inst.executor is not None:
                inst.executor.close()
            if inst.retriable_start is not None:
                w.delivered.append(start_key(inst.retriable_start))  # Ray may still bring it back
            w.clear_history.append(inst.num)
            w.clear_instance_work.append(iid)
            w.history[:] = [row for row in w.history if row.num != inst.num]
            after.forgotten.append(iid)
        carried = inst is not None and msg.continue_as_new  # the same instance, a new execution
        created = inst.created_at if carried and inst is not None else to_ts(now)
        input_blob = msg.input_blob if msg.input_blob is not None else dump_value(event.input, "orchestration input")
        fresh = Instance(
            instance_id=iid,
            name=event.name,
            execution_id=event.execution_id,
            status=OrchestrationRuntimeStatus.Running,
            input_blob=input_blob,
            created_at=created,
            updated_at=to_ts(now),
            parent=event.parent,
            history_len=0,
            num=self._next_num(),
            executor=OrchestrationExecutor(self._orchestrators, iid, self._check_entity_name),
            # DurableTask.Core carries the custom status over continue-as-new
            custom_status_blob=inst.custom_status_blob if carried and inst is not None else None,
            retriable_start=event.execution_id if msg.client else None,
        )
        self._cache[iid] = fresh
        return fresh

    def _next_num(self) -> int:
        """A new instance number: history rows are keyed by it, so they are appended in order
        rather than inserted at random places (instance ids are random)."""
        self._last_num += 1
        return self._last_num

    async def _executor_for(self, inst: Instance) -> OrchestrationExecutor:
        if inst.executor is None:
            blobs = await self._store.load_history(inst.num)
            executor = OrchestrationExecutor(self._orchestrators, inst.instance_id, self._check_entity_name)
            history = [load_event(b) for b in blobs]
            with self._watching(inst):
                executor.replay(history)
            inst.executor = executor
            inst.history_len = len(blobs)
            inst.tasks_scheduled = sum(1 for e in history if e.event_type == "TaskScheduled")
            inst.tasks_done = sum(1 for e in history if e.event_type in ("TaskCompleted", "TaskFailed"))
        return inst.executor

    async def _episode(
        self, inst: Instance, msgs: list[Message], now: datetime, w: TurnWrites, after: AfterCommit
    ) -> None:
        """Run one episode of ``inst`` over ``msgs`` and stage what it produced."""
        executor = await self._executor_for(inst)
        iid = inst.instance_id
        events = []
        for msg in msgs:
            event = msg.event
            if isinstance(event, (TaskCompleted, TaskFailed)):
                w.done_activities.append((iid, event.task_scheduled_id))
                inst.tasks_done += 1
            elif isinstance(event, TimerFired):
                w.done_timers.append((iid, event.timer_id))
                self._timer_handles.get(iid, {}).pop(event.timer_id, None)
            events.append(event)
        with self._watching(inst):
            result = executor.process(events, now)
        try:
            rows = self._history_rows(inst, result)
            self._stage_actions(inst, result, now, w, after)
            if result.custom_status_changed:
                status = result.custom_status
                inst.custom_status_blob = None if status is None else dump_value(status, "custom status")
        except PayloadError as exc:
            result = self._fail_unencodable(inst, executor, result, events, exc, now)
            rows = self._history_rows(inst, result)
            self._stage_actions(inst, result, now, w, after)  # its unlocks
        w.history.extend(rows)
        inst.history_len += len(result.new_events)
        self._stage_state(inst, result, now, w, after)

    @contextlib.contextmanager
    def _watching(self, inst: Instance) -> Iterator[None]:
        """Run orchestrator code of ``inst`` under the slow-episode watchdog."""
        watch = self._watch
        if watch is None:
            yield
            return
        spec = self._orchestrators.get(inst.name)
        watch.begin(inst.instance_id, inst.name, getattr(spec.fn, "__code__", None) if spec else None)
        try:
            yield
        finally:
            watch.end()

    def _history_rows(self, inst: Instance, result: ExecutionResult) -> list[HistoryRow]:
        base, iid = inst.history_len, inst.instance_id
        return [
            HistoryRow(inst.num, base + i, e.event_type, to_ts(e.timestamp), e.name,
                       dump_event(e, f"{e.event_type} of {iid!r}"))
            for i, e in enumerate(result.new_events)
        ]

    def _fail_unencodable(
        self, inst: Instance, executor: OrchestrationExecutor, result: ExecutionResult,
        received: list[Any], exc: PayloadError, now: datetime,
    ) -> ExecutionResult:
        """An episode produced a value that cannot be stored: keep what was received, fail.
        Of the episode's actions only its unlocks remain, with those of the locks the execution
        still holds; a lock request it still waits for is withdrawn."""
        released, withdrawn = executor.abandon()
        unlocks: list[Action] = [*(a for a in result.actions if isinstance(a, UnlockEntity)), *released]
        executor.close()
        inst.executor = None
        failure = FailureDetails("PayloadError", str(exc))
        kept = result.new_events[: len(received)]  # process() records what it received first (a start with its version)
        return ExecutionResult(
            new_events=[*kept, *(a.to_event(now) for a in unlocks), ExecutionCompleted(now, "Failed", None, failure)],
            actions=unlocks,
            state=ExecutionState.FAILED,
            failure=failure,
            withdrawn_lock=result.withdrawn_lock or withdrawn,
        )

    def _stage_actions(
        self, inst: Instance, result: ExecutionResult, now: datetime, w: TurnWrites, after: AfterCommit
    ) -> None:
        iid, exec_id = inst.instance_id, inst.execution_id
        running = not result.state.is_final
        staged_activities: list[ActivityCall] = []
        staged_timers: list[tuple[str, str, int, float]] = []
        staged_out: list[Outbound] = []
        for action in result.actions:
            if isinstance(action, ScheduleTask):
                if running:
                    staged_activities.append(activity_call(inst, action.task_id, action.name, action.input))
            elif isinstance(action, CreateTimer):
                if running:
                    staged_timers.append((iid, exec_id, action.task_id, to_ts(action.fire_at)))
            elif isinstance(action, CreateSubOrchestration):
                start = ExecutionStarted(
                    now, action.name, action.input, action.instance_id, uuid.uuid4().hex,
                    ParentInfo(iid, action.task_id, exec_id),
                )
                staged_out.append(self._outgoing(Message(action.instance_id, start)))
            elif isinstance(action, SendEvent):
                event = EventRaised(now, action.name, action.input)
                staged_out.append(self._outgoing(Message(action.instance_id, event)))
            else:
                msg = entity_action_message(action, iid, exec_id, now)
                if msg is not None:
                    staged_out.append(self._outgoing(msg))
        self._stage_outs(staged_out, w, after)
        stage_work(staged_activities, staged_timers, w, after)
        inst.tasks_scheduled += len(staged_activities)

    def _stage_state(
        self, inst: Instance, result: ExecutionResult, now: datetime, w: TurnWrites, after: AfterCommit
    ) -> None:
        iid = inst.instance_id
        inst.status = _STATE_TO_STATUS[result.state]
        inst.updated_at = to_ts(now)
        if result.state.is_final:
            w.clear_instance_work.append(iid)
            after.forgotten.append(iid)
            if result.withdrawn_lock is not None:
                lock_set, section_id = result.withdrawn_lock
                for unlock in unlock_all(lock_set, iid, inst.execution_id, section_id, now):
                    self._stage_outgoing(unlock, w, after)
            if inst.executor is not None:
                inst.executor.close()
            inst.executor = None
        if result.state is ExecutionState.CONTINUED_AS_NEW:
            restart = ExecutionStarted(
                now, inst.name, result.output, iid, uuid.uuid4().hex, inst.parent, result.continue_version
            )
            msg = Message(iid, restart, continue_as_new=True, carryover=list(result.carryover))
            self._stage_outgoing(msg, w, after)
        elif result.state.is_final:
            inst.output_blob = dump_value(result.output, "orchestration output")
            inst.failure_blob = dump_failure(result.failure)
            if inst.parent is not None:
                failure = result.failure
                if result.state is ExecutionState.TERMINATED:
                    failure = terminated_failure(iid, result.output)
                output = result.output if result.state is ExecutionState.COMPLETED else None
                self._reply_to_parent(inst.parent, output, failure, now, w, after)
        row = inst.to_row()
        w.instances.append(row)
        if result.state.is_final and result.state is not ExecutionState.CONTINUED_AS_NEW:
            after.finished.append((iid, row))

    def _reply_to_parent(
        self, parent: ParentInfo, output: Any, failure: FailureDetails | None, now: datetime,
        w: TurnWrites, after: AfterCommit,
    ) -> None:
        if failure is None:
            event: Any = SubOrchestrationInstanceCompleted(now, parent.task_scheduled_id, output)
        else:
            event = SubOrchestrationInstanceFailed(now, parent.task_scheduled_id, failure)
        self._stage_outgoing(Message(parent.instance_id, event, execution_id=parent.execution_id), w, after)
