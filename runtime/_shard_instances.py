"""The orchestration-instance path of a shard host's turn: start (or refuse, or replace) an
instance, replay it when it is not in memory, run one episode of its executor over its messages,
and stage what the episode produced (history rows, activities, timers, messages, the instance
row, the answer to a parent) in the turn's writes.

Nothing here commits or sends: the host's turn loop (``runtime/_shard.py``) does both once every
record of the turn has run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
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
    EntityLockMessage,
    EntityUnlockMessage,
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
from orchestrations._starts import StartRule, start_rule

from . import _tracing
from ._activities import ActivityCall
from ._codec import dump_value, failure_from_exception, with_cause
from ._codec_records import dump_event, dump_failure, load_event
from ._delivery import Outbound
from ._entity_host import entity_action_message, is_call, unlock_all
from ._messages import Instance, Message, start_key, to_ts
from ._schema import HistoryRow
from ._shard_base import ShardBase
from ._shard_lifecycle import activity_call, terminated_failure
from ._status import TERMINAL, OrchestrationRuntimeStatus
from ._turn_state import due_later

if TYPE_CHECKING:
    from ._turn import Turn

log = logging.getLogger("ray_durable.shard")

#: Most executor runs of one instance in one round (its first, then one per batch of answers
#: from the entities that served its calls at once); the messages of the last travel.
MAX_INLINE_RUNS = 16

#: the ends of an execution after which the activities of its last episode still run (a
#: failing episode's actions are dropped by the executor, its unlocks aside)
_ENDS_KEEPING_WORK = frozenset({ExecutionState.COMPLETED})
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

    async def _run_instance(self, iid: str, msgs: list[Message], turn: Turn) -> None:
        """Run an instance's messages in order: starts and rewinds begin an execution, the
        messages between them run as episodes; messages it cannot take are held or dropped."""
        inst = self._cache.get(iid)
        if inst is not None:
            self._cache.move_to_end(iid)
            if inst.status is OrchestrationRuntimeStatus.ContinuedAsNew:
                # the restart goes first: events sent meanwhile belong to the new execution
                msgs = sorted(msgs, key=lambda m: not m.continue_as_new)
        pending: list[Message] = []
        for msg in msgs:
            if msg.ack is not None:
                turn.after.acks[msg.ack] = None
            if isinstance(msg.event, (ExecutionRewound, ExecutionStarted)):
                if inst is not None and pending:
                    await self._run_episode(inst, pending, turn)
                inst, pending = await self._begin(inst, msg, turn)
                continue
            if inst is not None and inst.status is OrchestrationRuntimeStatus.Pending:
                self._while_pending(inst, msg, turn)
                continue
            if inst is None or inst.status in TERMINAL or inst.status is OrchestrationRuntimeStatus.ContinuedAsNew:
                self._drop(msg, inst, turn)
                continue
            if msg.execution_id is not None and msg.execution_id != inst.execution_id:
                self._drop(msg, inst, turn)
                continue
            pending.append(msg)
        if inst is not None and pending:
            await self._run_episode(inst, pending, turn)
        if inst is not None:
            turn.after.touched.append(iid)

    async def _begin(self, inst: Instance | None, msg: Message, turn: Turn) -> tuple[Instance | None, list[Message]]:
        """A start or a rewind (the episode of the messages before it has run): returns the
        instance from now on and the messages of its next episode."""
        if isinstance(msg.event, ExecutionRewound):
            restart = await self._rewind(inst, msg, turn)
            if restart is not None:  # a purged child its rewinding parent starts again
                started = self._start(inst, restart, turn)
                if started is not None:
                    return started, [restart]
            return inst, []
        later = due_later(msg, turn.now_ts)
        started = self._begin_scheduled(inst, msg) if msg.parked else self._start(inst, msg, turn, held=later)
        if started is None:
            return inst, []
        if later:
            self._hold_start(started, msg, turn)
            return started, []
        return started, [msg, *(Message(msg.instance_id, e) for e in msg.carryover)]

    def _drop(self, msg: Message, inst: Instance | None, turn: Turn) -> None:
        """A message for an instance that does not exist, is over, or is another execution:
        dropped. A client (not another shard, which would only retry) is told the instance
        does not exist; locks granted to a holder that can no longer use them are released;
        an activity's result strikes off that execution's row of it (one its last episode
        started without waiting, or one a turn that also replaced the execution wrote)."""
        if inst is None and msg.ack is not None and msg.client:
            turn.after.acks[msg.ack] = InstanceNotFoundError(msg.instance_id)
        if isinstance(msg.event, (TaskCompleted, TaskFailed)) and inst is not None and msg.execution_id is not None:
            turn.writes.struck_activities.append((inst.instance_id, msg.event.task_scheduled_id, msg.execution_id))
        if isinstance(msg.event, EntityLockGranted):
            grant = msg.event
            unlocks = unlock_all(grant.lock_set, msg.instance_id, msg.execution_id, grant.task_scheduled_id, turn.now)
            for unlock in unlocks:
                self._stage_outgoing(unlock, turn)

    def _new_executor(self, instance_id: str) -> OrchestrationExecutor:
        """A new execution's executor (nothing replayed)."""
        return OrchestrationExecutor(self._orchestrators, instance_id, self._check_entity_name)

    def _start(self, inst: Instance | None, msg: Message, turn: Turn, held: bool = False) -> Instance | None:
        """Create, replace or continue the instance of an ExecutionStarted message as
        :func:`orchestrations._starts.start_rule` decides; ``None`` if the start changes nothing
        (refused, retried, or stale). A start that ``held`` back for later (``_hold_start``)
        gets no executor: its release makes one when it runs."""
        event = msg.event
        assert isinstance(event, ExecutionStarted)
        rule = start_rule(
            registered=event.name in self._orchestrators, from_client=msg.client,
            continue_as_new=msg.continue_as_new, status=None if inst is None else inst.status,
            current_execution_id=None if inst is None else inst.execution_id, execution_id=event.execution_id,
        )
        if not rule.creates:
            self._refuse_start(rule, inst, msg, turn)
            return None
        if inst is not None:
            self._clear_execution(inst, turn)
        carried = inst if rule is StartRule.CONTINUE else None  # the same instance, a new execution
        if event.trace is None and _tracing.enabled():  # started with no trace context: a trace of its own
            root = _tracing.root(f"start_orchestration:{event.name}", {"durable.instance_id": msg.instance_id})
            msg.event = event = dataclasses.replace(event, trace=root)
        input_blob = msg.input_blob if msg.input_blob is not None else dump_value(event.input, "orchestration input")
        fresh = Instance(
            instance_id=msg.instance_id,
            name=event.name,
            execution_id=event.execution_id,
            status=OrchestrationRuntimeStatus.Running,
            input_blob=input_blob,
            created_at=carried.created_at if carried is not None else turn.now_ts,
            updated_at=turn.now_ts,
            parent=event.parent,
            history_len=0,
            num=self._next_num(),
            executor=None if held else self._new_executor(msg.instance_id),
            # DurableTask.Core carries the custom status over continue-as-new
            custom_status_blob=carried.custom_status_blob if carried is not None else None,
            retriable_start=event.execution_id if msg.client else None,
            trace=event.trace,
        )
        self._cache[msg.instance_id] = fresh
        return fresh

    def _refuse_start(self, rule: StartRule, inst: Instance | None, msg: Message, turn: Turn) -> None:
        """Tell whoever must know that a start changed nothing: a client that started a name
        nobody registered, or an id that is active (its parent too); a retried or stale start
        is acknowledged in silence."""
        event = msg.event
        assert isinstance(event, ExecutionStarted)
        if rule is StartRule.UNKNOWN_ORCHESTRATOR and msg.ack is not None:
            hint = did_you_mean(event.name, self._orchestrators)
            turn.after.acks[msg.ack] = DurableValueError(f"no orchestrator named {event.name!r} is registered ({hint})")
        elif rule is StartRule.ALREADY_EXISTS and inst is not None:
            error = InstanceAlreadyExistsError(msg.instance_id, inst.status.value)
            if msg.ack is not None and msg.client:  # a client's start: refuse it
                turn.after.acks[msg.ack] = error
            if event.parent is not None:
                self._reply_to_parent(event.parent, None, failure_from_exception(error), turn)

    def _clear_execution(self, inst: Instance, turn: Turn) -> None:
        """A new execution replaces ``inst``'s: its history, outstanding work and generator go."""
        if inst.executor is not None:
            inst.executor.close()
        if inst.retriable_start is not None:
            turn.writes.delivered.append(start_key(inst.retriable_start))  # Ray may still bring it back
        turn.writes.clear_history.append(inst.num)
        turn.writes.clear_instance_work.append(inst.instance_id)
        turn.writes.history[:] = [row for row in turn.writes.history if row.num != inst.num]
        turn.after.forgotten.append(inst.instance_id)

    def _next_num(self) -> int:
        """A new instance number: history rows are keyed by it, so they are appended in order
        rather than inserted at random places (instance ids are random)."""
        self._last_num += 1
        return self._last_num

    async def _executor_for(self, inst: Instance) -> OrchestrationExecutor:
        if inst.executor is None:
            blobs = await self._store.load_history(inst.num)
            executor = self._new_executor(inst.instance_id)
            history = [load_event(b) for b in blobs]
            with self._watching(inst):
                executor.replay(history)
            inst.executor = executor
            inst.history_len = len(blobs)
            inst.tasks_scheduled = sum(1 for e in history if e.event_type == "TaskScheduled")
            inst.tasks_done = sum(1 for e in history if e.event_type in ("TaskCompleted", "TaskFailed"))
            inst.trace = _trace_of(history)
        return inst.executor

    async def _episode(
        self, inst: Instance, msgs: list[Message], turn: Turn
    ) -> None:
        """Run one episode of ``inst`` over ``msgs`` and stage what it produced; while tracing
        is on, in a span ``orchestration:<name>``, child of the instance's recorded context."""
        executor = await self._executor_for(inst)
        events = self._received(inst, msgs, turn)
        if not _tracing.enabled():
            self._process(inst, executor, events, turn, None)
            return
        if inst.trace is None:  # a start that was parked, or a history from before tracing
            inst.trace = _trace_of(events)
        attributes = {"durable.instance_id": inst.instance_id, "durable.execution_id": inst.execution_id}
        with _tracing.span(f"orchestration:{inst.name}", inst.trace, _tracing.SERVER, attributes) as span:
            result = self._process(inst, executor, events, turn, _tracing.traceparent_of(span))
            span.set_attribute("durable.outcome", result.state.name.lower())
            if result.failure is not None and result.state is ExecutionState.FAILED:
                _tracing.fail(span, result.failure.error_type, result.failure.message)

    def _received(self, inst: Instance, msgs: list[Message], turn: Turn) -> list[Any]:
        """The events of an episode's messages; the activities and timers they answer are
        done (staged for deletion)."""
        iid = inst.instance_id
        events = []
        for msg in msgs:
            event = msg.event
            if isinstance(event, (TaskCompleted, TaskFailed)):
                turn.writes.done_activities.append((iid, event.task_scheduled_id))
                inst.tasks_done += 1
            elif isinstance(event, TimerFired):
                turn.writes.done_timers.append((iid, event.timer_id))
                self._timer_handles.get(iid, {}).pop(event.timer_id, None)
            events.append(event)
        return events

    def _process(
        self, inst: Instance, executor: OrchestrationExecutor, events: list[Any], turn: Turn, trace: str | None
    ) -> ExecutionResult:
        """Run the executor over ``events`` and stage the result; ``trace`` (the episode span's
        ``traceparent``) goes with the activities, starts and entity requests it sends. What
        the entities it holds locked answered at once (``_serve_inline``) is run next, in the
        same way, until the execution waits for something else, ends, or has run
        ``MAX_INLINE_RUNS`` times (then its messages travel: a section that calls its entities
        forever must not hold the shard's turn)."""
        for runs in range(1, MAX_INLINE_RUNS + 1):
            result, answers = self._process_once(inst, executor, events, turn, trace, runs < MAX_INLINE_RUNS)
            if not answers or result.state.is_final:
                break
            events = answers
        return result

    def _process_once(
        self, inst: Instance, executor: OrchestrationExecutor, events: list[Any], turn: Turn, trace: str | None,
        may_inline: bool,
    ) -> tuple[ExecutionResult, list[Any]]:
        """One run of the executor over ``events``, staged; returns the result and, if
        ``may_inline``, the answers of the entities that served the execution's calls at once.
        A failed orchestration is logged (INFO; the record carries the episode span's ids)."""
        with self._watching(inst):
            result = executor.process(events, turn.now)
        inline: list[Message] | None = [] if may_inline else None
        try:
            rows = self._history_rows(inst, result)
            if result.custom_status_changed:
                status = result.custom_status
                inst.custom_status_blob = None if status is None else dump_value(status, "custom status")
            self._stage_actions(inst, result, turn, trace, inline)
        except PayloadError as exc:
            inline = [] if may_inline else None
            result = self._fail_unencodable(inst, executor, result, events, exc, turn.now)
            rows = self._history_rows(inst, result)
            self._stage_actions(inst, result, turn, trace, inline)  # its unlocks
        if result.failure is not None and result.state is ExecutionState.FAILED:  # in the episode's span, if any
            log.info("orchestration %s (%s) failed: %s", inst.instance_id, inst.name, result.failure.describe())
        turn.writes.history.extend(rows)
        inst.history_len += len(result.new_events)
        self._stage_state(inst, result, turn)
        return result, self._send_inline(inst, inline, turn) if inline else []

    def _send_inline(self, inst: Instance, msgs: list[Message], turn: Turn) -> list[Any]:
        """Offer ``msgs`` (held back by :meth:`_stage_actions`), in order, to their entities to
        serve now (``_serve_inline``); those not served travel as usual, and so does every
        later message of this record to the same entity. Returns the answers to this execution."""
        iid, exec_id = inst.instance_id, inst.execution_id
        answers: list[Any] = []
        traveling = turn.traveling
        for msg in msgs:
            key = msg.instance_id
            served = None if key in traveling else self._serve_inline(msg, iid, exec_id, turn)
            if served is None:
                traveling.add(key)
                turn.send([self._outgoing(msg)])
            else:
                answers.extend(served)
        return answers

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
        self, inst: Instance, result: ExecutionResult, turn: Turn, trace: str | None = None,
        inline: list[Message] | None = None,
    ) -> None:
        """Stage what the episode's actions ask for. With ``inline``, a call or unlock to an
        entity in memory here is held back in it, with every later message to that entity, for
        :meth:`_send_inline` to offer to its entity once the episode is staged (or send, if an
        earlier message of the record travels to it: ``turn.traveling``): so the messages of
        one record to one entity keep their order whichever way each goes."""
        iid, exec_id = inst.instance_id, inst.execution_id
        running = not result.state.is_final
        # an activity the last episode started without waiting for it runs all the same (as in
        # DurableTask.Core, which drops only a continued execution's); its result is dropped
        runs_activities = running or result.state in _ENDS_KEEPING_WORK
        staged_activities: list[ActivityCall] = []
        staged_timers: list[tuple[str, str, int, float]] = []
        staged_out: list[Outbound] = []
        held: set[str] = set()
        for action in result.actions:
            if isinstance(action, ScheduleTask):
                if runs_activities:
                    staged_activities.append(activity_call(inst, action.task_id, action.name, action.input, trace))
            elif isinstance(action, CreateTimer):
                if running:
                    staged_timers.append((iid, exec_id, action.task_id, to_ts(action.fire_at)))
            elif isinstance(action, CreateSubOrchestration):
                start = ExecutionStarted(
                    turn.now, action.name, action.input, action.instance_id, uuid.uuid4().hex,
                    ParentInfo(iid, action.task_id, exec_id), trace=trace,
                )
                staged_out.append(self._outgoing(Message(action.instance_id, start)))
            elif isinstance(action, SendEvent):
                event = EventRaised(turn.now, action.name, action.input)
                staged_out.append(self._outgoing(Message(action.instance_id, event)))
            else:
                msg = entity_action_message(action, iid, exec_id, turn.now, trace)
                if msg is not None:
                    if type(msg.event) is EntityLockMessage:
                        self._metrics.lock_asked(iid, action.task_id, turn.now_ts)
                    key = msg.instance_id
                    if inline is not None and (key in held or self._may_inline(key, msg.event)):
                        held.add(key)
                        inline.append(msg)
                        continue
                    turn.traveling.add(key)
                    staged_out.append(self._outgoing(msg))
        turn.send(staged_out)
        turn.stage_work(staged_activities, staged_timers)
        inst.tasks_scheduled += len(staged_activities)

    def _may_inline(self, key: str, event: Any) -> bool:
        """Whether an entity might serve ``event`` in its sender's run (``_send_inline`` and
        ``_serve_inline`` decide): a call or an unlock, to an entity in memory here."""
        return (type(event) is EntityUnlockMessage or is_call(event)) and key in self._entities

    def _stage_state(
        self, inst: Instance, result: ExecutionResult, turn: Turn
    ) -> None:
        iid = inst.instance_id
        inst.status = _STATE_TO_STATUS[result.state]
        inst.updated_at = turn.now_ts
        if result.state.is_final:
            turn.writes.clear_instance_work.append(iid)
            turn.after.forgotten.append(iid)
            if result.withdrawn_lock is not None:
                lock_set, section_id = result.withdrawn_lock
                for unlock in unlock_all(lock_set, iid, inst.execution_id, section_id, turn.now):
                    self._stage_outgoing(unlock, turn)
            if inst.executor is not None:
                inst.executor.close()
            inst.executor = None
        if result.state is ExecutionState.CONTINUED_AS_NEW:
            restart = ExecutionStarted(
                turn.now, inst.name, result.output, iid, uuid.uuid4().hex, inst.parent, result.continue_version,
                trace=inst.trace,  # the new execution's episodes join the same trace
                generation=result.continue_generation,
            )
            msg = Message(iid, restart, continue_as_new=True, carryover=list(result.carryover))
            self._stage_outgoing(msg, turn)
        elif result.state.is_final:
            failure = with_cause(result.failure, result.raised)
            inst.output_blob = dump_value(result.output, "orchestration output")
            inst.failure_blob = dump_failure(failure)
            if inst.parent is not None:
                if result.state is ExecutionState.TERMINATED:
                    failure = terminated_failure(iid, result.output)
                output = result.output if result.state is ExecutionState.COMPLETED else None
                self._reply_to_parent(inst.parent, output, failure, turn)
        row = inst.to_row()
        turn.writes.instances.append(row)
        if result.state.is_final and result.state is not ExecutionState.CONTINUED_AS_NEW:
            turn.after.finished.append((iid, row))

    def _reply_to_parent(
        self, parent: ParentInfo, output: Any, failure: FailureDetails | None, turn: Turn,
    ) -> None:
        if failure is None:
            event: Any = SubOrchestrationInstanceCompleted(turn.now, parent.task_scheduled_id, output)
        else:
            event = SubOrchestrationInstanceFailed(turn.now, parent.task_scheduled_id, failure)
        self._stage_outgoing(Message(parent.instance_id, event, execution_id=parent.execution_id), turn)


def _trace_of(events: list[Any]) -> str | None:
    """The recorded trace context of an execution: its ``ExecutionStarted``'s, if among
    ``events``."""
    return next((e.trace for e in events if isinstance(e, ExecutionStarted)), None)
