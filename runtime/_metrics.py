"""The one place the runtime's metrics are defined and recorded (issue 15).

They are Ray metrics (``ray.util.metrics``): every process records into Ray's core worker,
which exports them to the node's metrics agent, which serves them on Ray's Prometheus endpoint
(``metrics_export_port``; the agent runs only with ``ray[default]`` installed, the ``metrics``
extra). Ray prefixes the exported names with ``ray_`` and gives counters a ``_total`` suffix.

Every metric is tagged with ``hub`` and ``shard``:

- ``durable_turns``: turns a shard host ran; ``durable_turn_duration_ms`` and
  ``durable_commit_duration_ms``: how long a turn took from taking its batch to the end of its
  after-commit work, and how long its one SQLite transaction took;
- ``durable_messages`` (tag ``kind``, the event's type): messages turns applied;
- ``durable_mailbox_depth``: the host's queue: how many messages a turn took, then how many
  waited for the next one when it ended (0 once the host is idle);
- ``durable_instances`` (tag ``status``): instances in the shard file by runtime status,
  counted every :data:`STATUS_SECONDS` off the turn path (after turns ran) from the read-only
  connection;
- ``durable_activity_latency_ms`` (tag ``name``): from dispatching a batch of activities to
  their results arriving at the shard host; one observation per batch and name (every call of
  a batch shares both times; a fan-out sends up to 512 calls in one batch, and an observation
  per call would add microseconds to each), so ``durable_activity_results`` counts the calls;
  ``durable_activity_failures``: the ones that failed;
- ``durable_lock_wait_ms``: from the turn in which an orchestration asked for its critical
  section's locks to the turn in which the grant reached it (measured on the orchestration's
  host; a host restarted meanwhile does not observe that wait); ``durable_lock_waits``: lock
  requests that reached an entity locked by another holder and had to queue.

Recording costs several microseconds per Ray call, so the turn path makes three (the depth a
turn took, its duration and its commit's), an answered batch of activities one (its latency),
and everything else is counted in plain fields that :meth:`ShardMetrics.flush` records every
:data:`REFRESH_SECONDS` (one call per counter that moved). The flush also sets the gauges again:
Ray drops a gauge from the endpoint when a process has not set it for two report intervals
(``RAY_metrics_report_interval_ms``, at least 1 s), so they stay while the host lives and go
with it. Without Ray (a shard host built in a pure test) nothing is recorded.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any

import ray

from orchestrations import EntityLockGranted, EntityLockMessage

#: histogram bucket boundaries in milliseconds: 0.1 ms to 10 s
BOUNDARIES_MS = [0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0,
                 10000.0]
#: how often a shard host records its counts and sets its gauges again (Ray's shortest report
#: interval: what is recorded more often than Ray reports is not seen sooner)
REFRESH_SECONDS = 1.0
#: how often a shard host counts its instances by status (only after turns ran since the last count)
STATUS_SECONDS = 5.0
#: the longest a count of instances by status may be skipped (a purge changes it without a turn)
STATUS_MAX_SECONDS = 60.0
#: counts instances by status with one scan of the ``instances_by_status`` covering index
STATUS_SQL = "SELECT status, COUNT(*) FROM instances GROUP BY status"

_SHARD = ("hub", "shard")


@cache
def agent_exports() -> bool:
    """Whether Ray here runs its full metrics agent, which serves the Prometheus endpoint: only
    with ``ray[default]`` installed (Ray's own check). Without it, recorded metrics go nowhere,
    so shard hosts record none and run no flush loop."""
    try:
        import ray.dashboard.optional_deps  # noqa: F401
    except ImportError:
        return False
    return True


@cache
def instruments() -> dict[str, Any]:
    """The Ray metric objects, created once per process on first use."""
    from ray.util.metrics import Counter, Gauge, Histogram

    def histogram(name: str, doc: str, *tags: str) -> Histogram:
        return Histogram(name, doc, boundaries=BOUNDARIES_MS, tag_keys=(*_SHARD, *tags))

    return {
        "turns": Counter("durable_turns", "Turns a shard host ran.", _SHARD),
        "turn_ms": histogram("durable_turn_duration_ms", "A turn, from its batch to its after-commit work (ms)."),
        "commit_ms": histogram("durable_commit_duration_ms", "A turn's SQLite transaction (ms)."),
        "messages": Counter("durable_messages", "Messages turns applied, by event type.", (*_SHARD, "kind")),
        "depth": Gauge("durable_mailbox_depth", "Messages in a shard host's queue at the last turn boundary.",
                       _SHARD),
        "instances": Gauge("durable_instances", "Instances in the shard file by runtime status.",
                           (*_SHARD, "status")),
        "activity_ms": histogram(
            "durable_activity_latency_ms", "Dispatch to result of a batch of activities (ms).", "name"
        ),
        "activity_results": Counter("durable_activity_results", "Activity results received.", (*_SHARD, "name")),
        "activity_failures": Counter("durable_activity_failures", "Activity results that were failures.",
                                     (*_SHARD, "name")),
        "lock_wait_ms": histogram("durable_lock_wait_ms", "Lock request to grant, at the orchestration (ms)."),
        "lock_waits": Counter("durable_lock_waits", "Lock requests that queued behind another holder.", _SHARD),
    }


class ShardMetrics:
    """One shard host's metrics. The turn path adds to plain fields and records only what must
    be observed one by one (its durations, the depth it took); counters and gauges go to Ray
    in :meth:`flush`, which the host calls every :data:`REFRESH_SECONDS`. Does nothing when
    Ray is not initialized in this process."""

    def __init__(self, hub: str, shard: int, enabled: bool | None = None) -> None:
        """``enabled``: record into Ray (by default, whether Ray is initialized here and its
        metrics agent can export them, see :func:`agent_exports`)."""
        self.tags = {"hub": hub, "shard": str(shard)}
        self.enabled = (ray.is_initialized() and agent_exports()) if enabled is None else enabled
        self._commit_seconds: float | None = None
        #: lock requests not granted yet: instance -> {task id of the request: when it was asked}
        self._asked: dict[str, dict[int, float]] = {}
        self._turns_at_count = -1
        self._counted_at = -STATUS_MAX_SECONDS
        # what :meth:`flush` records: counts since the last flush, the gauges' last values
        self._turns = 0
        self._kinds: dict[type, int] = {}
        self._lock_waits = 0
        self._grant_waits: list[float] = []
        self._activities: dict[str, list[int]] = {}
        self._depth = 0
        self._statuses: dict[str, int] = {}

    # -- the turn path ------------------------------------------------------------------------------

    def turn_started(self, depth: int) -> None:
        """A turn took ``depth`` messages from the queue (set at once: a long turn may hold
        the loop past the next flush)."""
        self._depth = depth
        if self.enabled:
            instruments()["depth"].set(depth, self.tags)

    def count_messages(self, groups: Mapping[str, list[Any]], now_ts: float) -> None:
        """Count a round's messages by kind; grants of locks asked for here end their wait."""
        if not self.enabled:
            return
        kinds = self._kinds
        for msgs in groups.values():
            for msg in msgs:
                kind = type(msg.event)
                kinds[kind] = kinds.get(kind, 0) + 1
        if EntityLockGranted in kinds and self._asked:
            for iid, msgs in groups.items():
                for msg in msgs:
                    if type(msg.event) is EntityLockGranted:
                        self._granted(iid, msg.event.task_scheduled_id, now_ts)

    def commit_took(self, seconds: float) -> None:
        self._commit_seconds = seconds

    def lock_asked(self, instance_id: str, task_id: int, now_ts: float) -> None:
        """An orchestration asked for the locks of a critical section (task ``task_id``)."""
        if self.enabled:
            self._asked.setdefault(instance_id, {})[task_id] = now_ts

    def _granted(self, instance_id: str, task_id: int, now_ts: float) -> None:
        asked = self._asked.get(instance_id)
        if asked is not None and (since := asked.pop(task_id, None)) is not None:
            self._grant_waits.append(now_ts - since)
            if not asked:
                del self._asked[instance_id]

    def forget(self, instance_id: str) -> None:
        """The instance ended or was replaced: a grant it waits for is moot."""
        self._asked.pop(instance_id, None)

    def count_queued_locks(self, events: Iterable[Any], queue: list[Any]) -> None:
        """Count the lock requests among ``events`` (an entity's messages of this turn) that
        are still in its ``queue`` after its turn: they wait behind another holder."""
        if self.enabled:
            queued = {id(e) for e in queue}
            self._lock_waits += sum(1 for e in events if type(e) is EntityLockMessage and id(e) in queued)

    def turn_ended(self, seconds: float, depth: int) -> None:
        """Record the turn that took ``seconds``; ``depth`` messages wait for the next one."""
        commit, self._commit_seconds = self._commit_seconds, None
        self._depth = depth
        if not self.enabled:
            return
        self._turns += 1
        m, tags = instruments(), self.tags
        m["turn_ms"].observe(seconds * 1000.0, tags)
        if commit is not None:
            m["commit_ms"].observe(commit * 1000.0, tags)

    # -- activities ---------------------------------------------------------------------------------

    def activity_results(self, dispatched_at: float, outcomes: Mapping[str, tuple[int, int]]) -> None:
        """A batch dispatched at ``dispatched_at`` (``time.monotonic()``) answered: by
        activity name, (results, failures) delivered to their instances."""
        if not self.enabled or not outcomes:
            return
        m, latency_ms = instruments(), (time.monotonic() - dispatched_at) * 1000.0
        for name, (results, failures) in outcomes.items():
            m["activity_ms"].observe(latency_ms, {**self.tags, "name": name})
            counts = self._activities.setdefault(name, [0, 0])
            counts[0] += results
            counts[1] += failures

    # -- off the turn path --------------------------------------------------------------------------

    def statuses_due(self, turns: int) -> bool:
        """Whether to count instances by status now: :data:`STATUS_SECONDS` passed and turns
        ran since the last count, or :data:`STATUS_MAX_SECONDS` passed."""
        if not self.enabled:
            return False
        age = time.monotonic() - self._counted_at
        return age >= STATUS_MAX_SECONDS or (age >= STATUS_SECONDS and turns != self._turns_at_count)

    def set_statuses(self, turns: int, counts: Mapping[str, int], statuses: Iterable[str]) -> None:
        """Keep a count of instances by status (``statuses``: every status, 0 when absent),
        made when ``turns`` turns had run; the next :meth:`flush` records it."""
        self._turns_at_count, self._counted_at = turns, time.monotonic()
        self._statuses = {status: counts.get(status, 0) for status in statuses}

    def flush(self) -> None:
        """Record the counts gathered since the last flush, and set the gauges again to their
        last values (Ray forgets a gauge left unset)."""
        if not self.enabled:
            return
        m, tags = instruments(), self.tags
        turns, self._turns = self._turns, 0
        kinds, self._kinds = self._kinds, {}
        lock_waits, self._lock_waits = self._lock_waits, 0
        grant_waits, self._grant_waits = self._grant_waits, []
        activities, self._activities = self._activities, {}
        if turns:
            m["turns"].inc(turns, tags)
        for kind, count in kinds.items():
            m["messages"].inc(count, {**tags, "kind": kind.__name__})
        if lock_waits:
            m["lock_waits"].inc(lock_waits, tags)
        for wait in grant_waits:
            m["lock_wait_ms"].observe(max(0.0, wait) * 1000.0, tags)
        for name, (results, failures) in activities.items():
            m["activity_results"].inc(results, {**tags, "name": name})
            if failures:
                m["activity_failures"].inc(failures, {**tags, "name": name})
        m["depth"].set(self._depth, tags)
        for status, count in self._statuses.items():
            m["instances"].set(count, {**tags, "status": status})
