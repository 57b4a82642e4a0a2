"""Activities run on Ray workers, many per Ray task.

A shard host groups the activities one turn scheduled by their Ray options and sends them in
batches: one Ray task runs a whole batch (sync activities one after another, async ones
concurrently on one event loop) and returns every outcome encoded in one blob. This is what
lets a fan-out beat one-Ray-task-per-call: scheduling cost is paid per batch, not per call.

A few calls without Ray options go to the host's warm worker instead (``runtime._warm``). Calls
of activities its last runs showed quick (under :data:`QUICK_SECONDS` each, timed by the
worker) go in one batch, one round trip for all. Any other call goes one at a time, each
outcome delivered as it comes, and one that has not answered within :data:`SPILL_SECONDS`
sends the calls still waiting behind it to Ray tasks: so a small fan-out of slow activities
runs in parallel, and ``task_any`` of a quick and a slow activity completes with the quick one.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import ray

from orchestrations import FailureDetails, TaskCompleted, TaskFailed
from orchestrations._registry import ActivitySpec, did_you_mean

from ._batch import BatchCall, run_batch
from ._codec import decode, encode, failure_from_exception
from ._messages import Message
from ._metrics import ShardMetrics
from ._warm import WarmLane
from ._wire import ConnectionLostError

#: Most activities one Ray task runs.
MAX_BATCH = 512
#: Largest encoded activity table sent inline with every batch rather than through the object store.
INLINE_REGISTRY_BYTES = 64 * 1024
#: How often Ray runs a batch again when its worker dies (activities run at least once), unless
#: the activity's own ``max_retries`` says otherwise.
DEFAULT_MAX_RETRIES = 10


@dataclass(frozen=True, slots=True)
class ActivityCall:
    """One scheduled activity: who asked (instance, execution, task id), what, and its input."""

    instance_id: str
    execution_id: str
    task_id: int
    name: str
    input_blob: str
    #: the ``traceparent`` of the episode span that scheduled it (``None``: tracing was off, or
    #: it was dispatched again after a restart); the worker's ``activity:<name>`` span is its child
    trace: str | None = None

    def for_batch(self) -> tuple[str, str, str | None]:
        """What a batch carries to the worker (see ``runtime._batch.run_batch``)."""
        return (self.name, self.input_blob, self.trace)


_remote_run_batch = ray.remote(run_batch)

#: Most calls a dispatch may hand to the warm worker (bigger ones go to Ray tasks).
WARM_MAX_CALLS = 16
#: How long a call may run on the warm worker before the calls queued behind it go to Ray
#: tasks instead (a quick activity answers in well under a millisecond)
SPILL_SECONDS = 0.01
#: An activity whose calls last ran on the warm worker in less than this each goes there in
#: batches (one round trip for the batch) rather than one call at a time
QUICK_SECONDS = 0.002


def batch_sizes(count: int, parallelism: int) -> int:
    """How many calls one Ray task takes when ``count`` are ready and ``parallelism`` CPUs run
    them: enough batches to keep every CPU busy twice over, none larger than MAX_BATCH."""
    return max(1, min(MAX_BATCH, math.ceil(count / max(1, 2 * parallelism))))


#: the batch task with each option set, built once (``.options()`` is not free)
_with_options: dict[tuple[tuple[str, Any], ...], Any] = {}


def submit_batch(
    registry_key: str, registry: Any, calls: Sequence[BatchCall], options: tuple[tuple[str, Any], ...],
    tracing_setup: Any = None,
) -> Any:
    """Start one Ray task for ``calls``; returns its ObjectRef. ``registry`` is the encoded
    activity table (small ones travel inline in the task) or an ObjectRef to it."""
    fn = _with_options.get(options)
    if fn is None:
        settings = {"max_retries": DEFAULT_MAX_RETRIES, **dict(options)}
        fn = _with_options[options] = _remote_run_batch.options(**settings)
    return fn.remote(registry_key, registry, list(calls), tracing_setup)


class ActivityDispatcher:
    """Sends a shard's activities to Ray workers in batches and turns outcomes into messages.

    ``outstanding`` holds every activity dispatched and not yet answered, by instance: a
    result for anything else (a duplicate from a retried dispatch, or for an instance that
    ended meanwhile) is dropped.
    """

    def __init__(
        self, hub: str, deliver: Callable[[list[Message]], None], spawn: Callable[[Any], None],
        tracing_setup: Any = None, metrics: ShardMetrics | None = None,
    ) -> None:
        self._hub = hub
        #: the hub's ``tracing_setup``, sent with every batch (see ``runtime._tracing.setup``); a
        #: callable encoded once, so it reaches the warm worker by value too
        encoded = tracing_setup is None or isinstance(tracing_setup, str)
        self._tracing_setup = tracing_setup if encoded else encode(tracing_setup, "tracing_setup")
        self._metrics = metrics
        self._deliver = deliver
        self._spawn = spawn
        self.specs: dict[str, ActivitySpec] = {}
        self._registry_key = ""
        self._registry_ref: Any = None
        self.parallelism = 1
        self.outstanding: dict[str, set[tuple[str, int]]] = {}
        self._warm = WarmLane(spawn)
        #: ``None``: no warm worker; else it is created with the first batch it could take,
        #: and whether this process runs small batches until it answers
        self._warm_run_here: bool | None = None
        #: calls are being sent to the warm worker one at a time (``_run_warm``)
        self._warm_queued = False
        #: the activities whose calls last ran quickly on the warm worker (see :meth:`_timed`)
        self._quick: set[str] = set()

    def start_warm_worker(self, run_here_meanwhile: bool = True) -> None:
        """Give this host a warm worker (see ``runtime._warm``), created with the first batch
        it could take (a host that runs no activity starts no process for it, and opening a
        hub waits for none). It takes small batches once it is up and idle (whenever it is
        busy, Ray tasks do; until it is up, this process does if ``run_here_meanwhile``, else
        Ray tasks)."""
        self._warm_run_here = run_here_meanwhile

    def set_registry(self, specs: dict[str, ActivitySpec], version: int) -> None:
        """Use these activities from now on (shipped to workers once, through the object store)."""
        self.specs = specs
        self._registry_key = f"{self._hub}:{version}:{uuid.uuid4().hex}"
        blob = encode(specs, "activity registry")
        # a small table rides inline in every task (no object fetch on the worker); a large one
        # is put in the object store once
        self._registry_ref = blob if len(blob) <= INLINE_REGISTRY_BYTES else ray.put(blob)

    def forget(self, instance_id: str) -> set[tuple[str, int]]:
        """The instance ended or was replaced: its late results are moot. Returns the
        (execution id, task id) of those it waited for (see :meth:`restore`)."""
        return self.outstanding.pop(instance_id, set())

    def restore(self, instance_id: str, keys: set[tuple[str, int]]) -> None:
        """The instance waits again for the results :meth:`forget` returned (the turn that
        ended it failed)."""
        if keys:
            self.outstanding.setdefault(instance_id, set()).update(keys)

    def discard(self, calls: Sequence[ActivityCall]) -> None:
        """``calls`` were started by a turn whose commit failed: their results are moot (the
        instance schedules them again when it replays)."""
        for call in calls:
            self._take(call)

    def _take(self, call: ActivityCall) -> bool:
        """Strike ``call`` from what its instance waits for; whether it was waited for."""
        waiting = self.outstanding.get(call.instance_id)
        key = (call.execution_id, call.task_id)
        if waiting is None or key not in waiting:
            return False
        waiting.discard(key)
        if not waiting:
            del self.outstanding[call.instance_id]
        return True

    @property
    def warm_worker_connected(self) -> bool:
        """Whether this host's warm worker is up and connected (see ``runtime._warm``)."""
        return self._warm.connected

    def count(self) -> int:
        """How many activities are dispatched and not answered."""
        return sum(len(v) for v in self.outstanding.values())

    def dispatch(self, calls: Sequence[ActivityCall]) -> None:
        """Start ``calls``, grouped by Ray options, in batches sized to keep every CPU busy."""
        if not calls:
            return
        groups: dict[tuple[tuple[str, Any], ...], list[ActivityCall]] = {}
        unknown: list[ActivityCall] = []
        for call in calls:
            self.outstanding.setdefault(call.instance_id, set()).add((call.execution_id, call.task_id))
            spec = self.specs.get(call.name)
            if spec is None:
                unknown.append(call)
            else:
                groups.setdefault(spec.ray_options, []).append(call)
        if unknown:
            outcomes = [
                (False, FailureDetails(
                    "ActivityNotFound",
                    f"no activity named {c.name!r} is registered ({did_you_mean(c.name, self.specs)})",
                ))
                for c in unknown
            ]
            self._spawn(self._answer(unknown, outcomes, time.monotonic()))
        for options, group in groups.items():
            if not options and len(group) <= WARM_MAX_CALLS and isinstance(self._registry_ref, bytes):
                if self._warm_run_here is not None:
                    self._warm.start(self._warm_run_here)  # once; nothing if it exists
                if self._warm.available() and not self._warm_queued:
                    if all(c.name in self._quick for c in group):
                        self._submit(group, options, warm=True)
                    else:
                        self._submit_warm(group)
                    continue
            self._submit_ray(group, options)

    def _submit_ray(self, calls: Sequence[ActivityCall], options: tuple[tuple[str, Any], ...]) -> None:
        """``calls`` in Ray tasks, as many as keep every CPU busy (see :func:`batch_sizes`)."""
        size = batch_sizes(len(calls), self.parallelism)
        for start in range(0, len(calls), size):
            self._submit(calls[start : start + size], options)

    def _submit(self, calls: Sequence[ActivityCall], options: tuple[tuple[str, Any], ...], warm: bool = False) -> None:
        """Hand ``calls`` to Ray (or the warm worker) now, in the caller's step, so a turn's
        activities are on their way before its commit starts, and await the outcome in the
        background."""
        ref, dispatched_at = self._send(calls, options, warm)
        self._spawn(self._run_batch(list(calls), ref, options, dispatched_at, warm))

    def _send(
        self, calls: Sequence[ActivityCall], options: tuple[tuple[str, Any], ...], warm: bool
    ) -> tuple[Any, float]:
        """Send ``calls`` as one batch: (the future or ObjectRef of its outcomes, or the error
        that kept it from being sent, which fails every call; when it was sent)."""
        blob_calls = [c.for_batch() for c in calls]
        dispatched_at = time.monotonic()
        try:
            if warm:
                ref: Any = self._warm.submit(self._registry_key, self._registry_ref, blob_calls, self._tracing_setup)
            else:
                ref = submit_batch(self._registry_key, self._registry_ref, blob_calls, options, self._tracing_setup)
        except Exception as exc:  # could not even submit
            ref = exc
        return ref, dispatched_at

    def _submit_warm(self, calls: list[ActivityCall]) -> None:
        """Send ``calls`` to the warm worker one at a time, the first now (see the module
        docstring); the lane takes nothing else until they are answered or sent on."""
        first = self._send(calls[:1], (), warm=True)
        self._warm_queued = True
        self._spawn(self._run_warm(first, calls[0], calls[1:]))

    async def _run_warm(self, sent: tuple[Any, float], call: ActivityCall, queue: list[ActivityCall]) -> None:
        try:
            while True:
                ref, dispatched_at = sent
                if queue and not isinstance(ref, Exception):
                    await asyncio.wait([ref], timeout=SPILL_SECONDS)
                    if not ref.done() or ref.cancelled() or ref.exception() is not None:
                        # a slow call, or a lost worker (the call runs again on a Ray task):
                        # the rest go on without waiting for it
                        self._submit_ray(queue, ())
                        queue = []
                await self._run_batch([call], ref, (), dispatched_at, warm=True)
                if not queue:
                    return
                if not self._warm.available():  # the worker was lost meanwhile
                    self._submit_ray(queue, ())
                    return
                call, queue = queue[0], queue[1:]
                sent = self._send([call], (), warm=True)
        finally:
            self._warm_queued = False

    async def _run_batch(
        self, calls: list[ActivityCall], ref: Any, options: tuple[tuple[str, Any], ...], dispatched_at: float,
        warm: bool = False,
    ) -> None:
        """Deliver the outcomes of ``calls`` once ``ref`` has them (the warm worker's: with
        the seconds it took to run them, which say whether their activities are quick)."""
        try:
            if isinstance(ref, Exception):
                raise ref
            try:
                blob = await ref
                if warm:
                    blob, seconds = blob
                    self._timed(calls, seconds)
            except ConnectionLostError:  # the warm worker died running it: run it on a Ray task
                blob = await submit_batch(
                    self._registry_key, self._registry_ref, [c.for_batch() for c in calls], options,
                    self._tracing_setup,
                )
            outcomes = decode(blob)
        except Exception as exc:
            failure = failure_from_exception(exc)
            outcomes = [(False, failure)] * len(calls)
        await self._answer(calls, outcomes, dispatched_at)

    def _timed(self, calls: Sequence[ActivityCall], seconds: float) -> None:
        """The warm worker ran ``calls`` in ``seconds``: their activities are quick if each
        took less than :data:`QUICK_SECONDS` on average (a slow one among them makes them all
        go one at a time next time)."""
        names = {c.name for c in calls}
        if seconds < QUICK_SECONDS * len(calls):
            self._quick.update(names)
        else:
            self._quick.difference_update(names)

    async def _answer(
        self, calls: Sequence[ActivityCall], outcomes: Sequence[tuple[bool, Any]], dispatched_at: float
    ) -> None:
        """Deliver the outcomes of calls dispatched at ``dispatched_at`` (``time.monotonic()``)
        to their instances, dropping those nobody waits for, and record them in the metrics."""
        now = datetime.now(UTC)
        messages = []
        counts: dict[str, tuple[int, int]] | None = {} if self._metrics is not None and self._metrics.enabled else None
        for call, (ok, value) in zip(calls, outcomes):
            if not self._take(call):
                continue
            event: Any = TaskCompleted(now, call.task_id, value) if ok else TaskFailed(now, call.task_id, value)
            messages.append(Message(call.instance_id, event, execution_id=call.execution_id))
            if counts is not None:  # only where the metrics go somewhere: not a cost per result otherwise
                results, failures = counts.get(call.name, (0, 0))
                counts[call.name] = (results + 1, failures + (not ok))
        self._deliver(messages)
        if counts is not None and self._metrics is not None:
            self._metrics.activity_results(dispatched_at, counts)
