"""The task hub client: what a Ray driver uses to start, query and control orchestrations."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar, overload

import ray
from ray.exceptions import ActorAlreadyExistsError, RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from orchestrations import (
    DurableValueError,
    EventRaised,
    ExecutionResumed,
    ExecutionRewound,
    ExecutionStarted,
    ExecutionSuspended,
    ExecutionTerminated,
    HistoryEvent,
    InstanceNotFoundError,
    default_registry,
    validate_instance_id,
)
from orchestrations._ids import check_encodable, new_instance_id, shard_of
from orchestrations._registry import Registry, function_name, function_version

from ._client_args import (
    check_bool,
    check_prefix,
    check_settings,
    check_timeout,
    instance_ids,
    utc_now,
    utc_timestamp,
)
from ._client_async import AsyncClient
from ._client_entities import EntityClient
from ._client_link import ClientLink, unwrap
from ._codec import dump_value, encode
from ._delivery import NAMESPACE
from ._delivery import actor_name as _actor_name
from ._history_json import history_to_json
from ._http import BUILTIN_ACTIVITIES
from ._hub_file import default_num_shards, open_hub_file, record_shards, recorded_num_shards, shard_file
from ._messages import Message
from ._paging import ShardRow, StatusFilter, query_page, status_values, timestamp_of
from ._shard import ShardHost
from ._shard_base import ShardConfig
from ._shard_queries import READS
from ._status import (
    DurableOrchestrationStatus,
    InstancePage,
    PurgeHistoryResult,
)

log = logging.getLogger("ray_durable")

_HUB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
#: status, history and entity reads run on their own loop: a blocked turn does not hold them
_ShardActor = ray.remote(concurrency_groups={READS: 4})(ShardHost)  # type: ignore[call-overload]
T = TypeVar("T")


class TaskHub(EntityClient, AsyncClient):
    """A durable task hub: shard host actors plus their SQLite files under ``data_dir/name/``.

    Opening a hub starts a local Ray if none is running, creates one shard host actor per
    shard (``num_cpus=0``: they mostly wait) and recovers any work left in the files. All
    methods block until the shard has committed what they asked for.

    ``num_shards`` is fixed when the hub is created (``hub.json`` records it). Left ``None``, a
    new hub gets one shard per CPU of the Ray cluster (``ray.cluster_resources()["CPU"]``, 1 to
    16: more shard hosts than cores only adds processes that compete for them), and an existing
    hub reopens with the count it was created with, whatever the CPUs are now. A count given
    explicitly must match an existing hub's (else :class:`ShardMismatchError`).

    Each shard host keeps its most recently used unfinished instances in memory: at most
    ``cache_size`` of them, holding at most ``cache_bytes`` of inputs (the least recently
    used leave first and are replayed from the file when next needed; a finished instance
    leaves at once).
    """

    def __init__(
        self,
        name: str = "default",
        *,
        data_dir: str | os.PathLike[str] = ".durable",
        num_shards: int | None = None,
        always_replay: bool = False,
        detached: bool = False,
        cache_size: int = 10_000,
        cache_bytes: int = 512 * 2**20,
        durability: str = "full",
        lock_timeout: float = 10.0,
        warm_worker: bool = True,
        slow_episode_warning: float | None = 1.0,
        registry: Registry | None = None,
        _crash_points: tuple[str, ...] = (),
        _crash_marker_dir: str | None = None,
        ray_init_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if not isinstance(name, str) or not _HUB_NAME.match(name):
            raise DurableValueError(
                f"hub name must be 1-64 letters, digits, '_', '.' or '-' (no path separator), got {name!r}"
            )
        check_settings(
            num_shards=num_shards, cache_size=cache_size, lock_timeout=lock_timeout,
            slow_episode_warning=slow_episode_warning, always_replay=always_replay, detached=detached,
            warm_worker=warm_worker, cache_bytes=cache_bytes,
        )
        sync = {"full": "FULL", "normal": "NORMAL"}.get(durability)
        if sync is None:
            raise DurableValueError(f"durability must be 'full' or 'normal', got {durability!r}")
        self.name = name
        self.directory = os.path.join(os.path.abspath(os.fspath(data_dir)), name)
        self._registry = registry or default_registry
        self._hub_entities: frozenset[str] | None = None
        self._started_ray = False
        if num_shards is None:  # the count the hub was created with, or one that suits the CPUs
            num_shards = recorded_num_shards(self.directory)
            if num_shards is None:
                self._init_ray(ray_init_kwargs)
                num_shards = default_num_shards(ray.cluster_resources().get("CPU", 1))
        self.num_shards = num_shards
        record = open_hub_file(self.directory, name, num_shards)
        self._init_ray(ray_init_kwargs)
        self._detached = detached
        self._closed = False
        self._registry_version = -1
        self._shards: list[Any] = []
        self._link = ClientLink(self._shards, name)
        options: dict[str, Any] = {
            "namespace": NAMESPACE,
            "num_cpus": 0,
            "max_concurrency": 100_000,
            # Ray restarts a dead shard host, and retries the calls it was running on the new
            # one (client messages carry ids, so a retried call is applied once).
            "max_restarts": -1,
            "max_task_retries": -1,
        }
        if detached:
            options["lifetime"] = "detached"
        placement = _placement(num_shards)
        for i in range(num_shards):
            config = ShardConfig(
                hub=name, index=i, num_shards=num_shards,
                path=os.path.join(self.directory, shard_file(i)),
                always_replay=always_replay, cache_size=cache_size, synchronous=sync, lock_timeout=lock_timeout,
                warm_worker=warm_worker, slow_episode_seconds=slow_episode_warning,
                crash_points=_crash_points, crash_marker_dir=_crash_marker_dir, cache_bytes=cache_bytes,
                hub_id=record.hub_id, create=record.create,
            )
            try:  # Ray looks the name up itself (a second lookup here cost a round trip per shard)
                host = _ShardActor.options(name=_actor_name(name, i), **options, **placement[i]).remote(config)
            except ActorAlreadyExistsError:
                self._kill()  # the hosts created before this one, if any
                self._shards = []
                already = f"task hub {name!r} is already open in this Ray cluster (connect to it)"
                raise DurableValueError(already) from None
            self._shards.append(host)
        blob = self._registry_blob()
        try:
            self._call(lambda: [s.start.remote(blob) for s in self._shards])
        except BaseException:
            self._kill()
            raise
        if record.create:  # every shard file exists now: from here on a missing one is refused
            record_shards(self.directory, name, num_shards, record.hub_id)

    # -- opening ----------------------------------------------------------------------------------

    def _init_ray(self, ray_init_kwargs: dict[str, Any] | None) -> None:
        """Start a local Ray unless one is running (this hub then shuts it down on close)."""
        if not ray.is_initialized():
            ray.init(**{"include_dashboard": False, "logging_level": logging.WARNING, **(ray_init_kwargs or {})})
            self._started_ray = True

    @classmethod
    def connect(cls, name: str = "default", *, registry: Registry | None = None) -> TaskHub:
        """Attach to a hub another driver opened with ``detached=True`` (Ray must be initialized
        with the same cluster address)."""
        if not ray.is_initialized():
            ray.init(address="auto", include_dashboard=False, logging_level=logging.WARNING)
        try:
            first = ray.get_actor(_actor_name(name, 0), namespace=NAMESPACE)
        except ValueError:
            raise DurableValueError(f"no running task hub named {name!r} to connect to") from None
        ref: Any = first.get_config.remote()
        config: ShardConfig = ray.get(ref)
        hub = cls.__new__(cls)
        hub.name, hub.num_shards = name, config.num_shards
        hub.directory = os.path.dirname(config.path)
        hub._registry = registry or default_registry
        hub._started_ray, hub._detached, hub._closed = False, True, False
        hub._registry_version = -1
        hub._hub_entities = None
        hub._shards = [ray.get_actor(_actor_name(name, i), namespace=NAMESPACE) for i in range(config.num_shards)]
        hub._link = ClientLink(hub._shards, name)
        hub._sync_registry()
        return hub

    def close(self) -> None:
        """Stop the shard hosts this driver started (unless detached); data stays on disk."""
        if self._closed:
            return
        self._closed = True
        self._link.close()
        if not self._detached:
            try:
                ray.get([s.close.remote() for s in self._shards], timeout=30)
            except Exception:
                log.warning("task hub %s: a shard did not close cleanly", self.name)
            self._kill()
        if self._started_ray:
            ray.shutdown()

    def shutdown(self) -> None:
        """Stop the shard hosts even if detached (the files stay)."""
        self._detached = False
        self._closed = False
        self.close()

    def export_history(self, instance_id: str) -> str:
        """The instance's history as a JSON document (``runtime._history_json``): events by type
        name and named fields, values as JSON where JSON carries them exactly, else marked
        pickles; ``runtime.replay`` loads it back for the replayer. Raises for an unknown id."""
        return history_to_json(instance_id, self.get_history(instance_id))

    def _kill(self) -> None:
        """Kill the shard hosts and wait until Ray has released their names, so the hub can
        be reopened at once (Ray frees a killed actor's name asynchronously)."""
        for shard in self._shards:
            with contextlib.suppress(Exception):  # already gone
                ray.kill(shard, no_restart=True)
        deadline = time.monotonic() + 30
        for i in range(len(self._shards)):
            while time.monotonic() < deadline:
                try:
                    ray.get_actor(_actor_name(self.name, i), namespace=NAMESPACE)
                except ValueError:
                    break
                time.sleep(0.02)

    def __enter__(self) -> TaskHub:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- orchestrations ----------------------------------------------------------------------------

    def start_new(
        self,
        orchestration_function_name: str | Callable[..., Any],
        instance_id: str | None = None,
        client_input: Any = None,
        *,
        start_at: datetime | None = None,
    ) -> str:
        """Start an orchestration; returns its instance id once the start is committed.

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
        self._submit([msg])
        return msg.instance_id

    def start_new_batch(
        self, orchestration_function_name: str | Callable[..., Any], inputs: Iterable[Any]
    ) -> list[str]:
        """Start one instance per input (random ids) with one call per shard; returns the ids."""
        msgs = [self._start_message(orchestration_function_name, None, x) for x in inputs]
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
        return Message(iid, event, input_blob=blob, due=due)

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
        """Suspend an instance: events are held (durably, in order) until it resumes."""
        self._control(instance_id, ExecutionSuspended(utc_now(), reason), reason)

    def resume(self, instance_id: str, reason: str | None = None) -> None:
        """Resume a suspended instance and apply what arrived meanwhile."""
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

    # -- queries -----------------------------------------------------------------------------------

    @overload
    def get_status(
        self, instance_id: str, show_history: bool = False, show_history_output: bool = False,
        show_input: bool = True,
    ) -> DurableOrchestrationStatus | None: ...

    @overload
    def get_status(
        self, instance_id: list[str] | tuple[str, ...], show_history: bool = False, show_history_output: bool = False,
        show_input: bool = True,
    ) -> list[DurableOrchestrationStatus | None]: ...

    def get_status(
        self, instance_id: str | list[str] | tuple[str, ...], show_history: bool = False,
        show_history_output: bool = False, show_input: bool = True,
    ) -> DurableOrchestrationStatus | list[DurableOrchestrationStatus | None] | None:
        """The committed status of an instance, or ``None`` if there is none.

        Given a list (or tuple) of ids, returns a list of the same length and order, each a
        status or ``None``, read with one call per shard (DF .NET's
        ``GetStatusAsync(IEnumerable<string>)``).
        """
        ids = instance_ids(instance_id)
        if ids is None:
            iid = validate_instance_id(instance_id)
            index = self._shard_index(iid)
            return self._link.run(self._link.status(index, iid, show_history, show_history_output, show_input))
        by_shard = self._by_shard(ids, lambda iid: iid)
        parts = self._on_shards("get_statuses", by_shard, show_history, show_history_output, show_input)
        found = {iid: status for part, statuses in zip(by_shard.values(), parts) for iid, status in zip(part, statuses)}
        return [found[iid] for iid in ids]

    def get_history(self, instance_id: str) -> list[HistoryEvent]:
        """The instance's history events, oldest first. Raises for an unknown id."""
        validate_instance_id(instance_id)
        history = self._call(lambda: self._shard(instance_id).get_history.remote(instance_id))
        if history is None:
            raise InstanceNotFoundError(instance_id)
        return history

    def wait_for_completion(
        self, instance_id: str, timeout: float | None = None, show_progress: bool = False
    ) -> DurableOrchestrationStatus:
        """Block until the instance is Completed, Failed or Terminated and return its status.

        The shard host answers when the instance ends (no polling). Raises ``TimeoutError``
        past ``timeout`` seconds. ``show_progress`` draws a progress bar of its activities.
        """
        validate_instance_id(instance_id)
        check_timeout(timeout)
        if show_progress:
            shard = self._shard(instance_id)
            ref = shard.wait.remote(instance_id, timeout)
            _progress_until(ref, lambda: ray.get(shard.progress.remote(instance_id)), instance_id)
            status = self._call(lambda: ref)
        else:
            status = self._link.run(self._link.wait(self._shard_index(instance_id), "wait", instance_id, timeout))
        if status is None:
            raise TimeoutError(f"orchestration {instance_id!r} did not finish within {timeout} s")
        return status

    def wait_for_orchestration_start(
        self, instance_id: str, timeout: float | None = None
    ) -> DurableOrchestrationStatus:
        """Block until the instance is no longer Pending (it started running, or ended before)
        and return its status (durabletask's ``wait_for_orchestration_start``).

        Only an instance started with ``start_at`` is ever Pending: any other returns at once.
        The shard host answers when the start commits (no polling). Raises ``TimeoutError``
        past ``timeout`` seconds and :class:`InstanceNotFoundError` for an unknown id.
        """
        validate_instance_id(instance_id)
        check_timeout(timeout)
        status = self._link.run(self._link.wait(self._shard_index(instance_id), "wait_start", instance_id, timeout))
        if status is None:
            raise TimeoutError(f"orchestration {instance_id!r} did not start within {timeout} s")
        return status

    def get_status_by(
        self,
        created_time_from: datetime | None = None,
        created_time_to: datetime | None = None,
        runtime_status: StatusFilter = None,
        instance_id_prefix: str | None = None,
    ) -> list[DurableOrchestrationStatus]:
        """Every instance matching the filters, oldest first (``instance_id_prefix``: only ids
        that start with it)."""
        page = self.list_instances(
            created_time_from, created_time_to, runtime_status, page_size=None, instance_id_prefix=instance_id_prefix
        )
        return page.instances

    def list_instances(
        self,
        created_time_from: datetime | None = None,
        created_time_to: datetime | None = None,
        runtime_status: StatusFilter = None,
        page_size: int | None = 100,
        continuation_token: str | None = None,
        show_input: bool = True,
        instance_id_prefix: str | None = None,
    ) -> InstancePage:
        """One page of instances ordered by creation time; pass the token back for the next.

        ``instance_id_prefix`` keeps only the ids that start with it (each shard reads just
        that range of its primary key); paging works the same with it.
        """

        def query_shards(lo: float | None, hi: float | None, statuses: list[str] | None,
                         after: tuple[float, str] | None, limit: int | None, prefix: str | None,
                         ) -> list[list[ShardRow]]:
            return self._call(
                lambda: [s.query.remote(lo, hi, statuses, after, limit, show_input, prefix) for s in self._shards]
            )

        return query_page(
            query_shards, created_time_from, created_time_to, runtime_status, page_size, continuation_token,
            instance_id_prefix,
        )

    def purge_instance_history(self, instance_id: str | Sequence[str], recursive: bool = True) -> PurgeHistoryResult:
        """Delete a Completed, Failed or Terminated instance and its history (a Pending,
        Running or Suspended one is left alone and not counted).

        Given a list (or tuple) of ids, purges each of them (one call per shard) and returns
        the total. With ``recursive`` (the default, as in durabletask), the sub-orchestrations
        a purged instance started are purged too, and theirs, under the same rule: only the
        finished ones. A purge is not one transaction across shards: a crash midway leaves the
        rest to purge again.
        """
        ids = instance_ids(instance_id)
        if ids is None:
            ids = [validate_instance_id(instance_id)]
        return self._purge_tree([(iid, None) for iid in ids], check_bool(recursive, "recursive"))

    def purge_instance_history_by(
        self,
        created_time_from: datetime | None = None,
        created_time_to: datetime | None = None,
        runtime_status: StatusFilter = None,
        instance_id_prefix: str | None = None,
        recursive: bool = True,
    ) -> PurgeHistoryResult:
        """Delete every finished instance matching the filters (and, with ``recursive``, the
        sub-orchestrations they started, as :meth:`purge_instance_history`); returns how many."""
        statuses = status_values(runtime_status)
        lo, hi = timestamp_of(created_time_from), timestamp_of(created_time_to)
        prefix, recursive = check_prefix(instance_id_prefix), check_bool(recursive, "recursive")
        parts = self._call(lambda: [s.purge_by.remote(lo, hi, statuses, prefix, recursive) for s in self._shards])
        deleted = sum(count for count, _ in parts)
        children = [child for _, found in parts for child in found]
        return PurgeHistoryResult(deleted + self._purge_tree(children, recursive).instances_deleted)

    def _purge_tree(self, targets: list[tuple[str, str | None]], recursive: bool) -> PurgeHistoryResult:
        """Purge ``targets`` ((id, required parent id or None)), then, level by level, the
        children the shards report, each level with one call per shard."""
        deleted, seen = 0, {iid for iid, _ in targets}
        while targets:
            parts = self._on_shards("purge", self._by_shard(targets, lambda target: target[0]), recursive)
            deleted += sum(count for count, _ in parts)
            targets = []
            for _, children in parts:
                for child, parent in children:
                    if child not in seen:
                        seen.add(child)
                        targets.append((child, parent))
        return PurgeHistoryResult(deleted)

    def stats(self) -> list[dict[str, int]]:
        """Per-shard counters (turns, cached instances, outstanding activities)."""
        return self._call(lambda: [s.stats.remote() for s in self._shards])

    def shard_nodes(self) -> list[str]:
        """The id (hex) of the Ray node each shard host runs on, by shard index.

        Asks the hosts themselves, so a host Ray is restarting after losing its node answers
        from its new node once it is up.
        """
        return self._call(lambda: [s.__ray_call__.remote(_node_of_host) for s in self._shards])

    def serve_ui(self, port: int = 0, host: str = "127.0.0.1", allow_remote: bool = False) -> Any:
        """Serve the web UI for this hub on a background thread of this process (``port=0``:
        a free port) and return the server: its ``url`` is where to point a browser, its
        ``stop()`` ends it. Only the local host unless ``allow_remote`` (it has no
        authentication). See :mod:`runtime.ui`."""
        from .ui import serve

        server = serve(self, self.name, live=True, host=host, port=port, allow_remote=allow_remote,
                       registry=self._registry)
        log.info("task hub %s: web UI at %s", self.name, server.url)
        return server

    # -- plumbing ----------------------------------------------------------------------------------

    def _shard(self, instance_id: str) -> Any:
        return self._shards[self._shard_index(instance_id)]

    def _shard_index(self, instance_id: str) -> int:
        if self._closed:
            raise DurableValueError(f"task hub {self.name!r} is closed")
        return shard_of(instance_id, self.num_shards)

    def _by_shard(self, items: list[T], key: Callable[[T], str]) -> dict[int, list[T]]:
        """``items`` grouped by the shard of their id ``key(item)``, each group in given order."""
        groups: dict[int, list[T]] = {}
        for item in items:
            groups.setdefault(shard_of(key(item), self.num_shards), []).append(item)
        return groups

    def _on_shards(self, method: str, by_shard: dict[int, list[Any]], *args: Any) -> list[Any]:
        """Call shard method ``method(part, *args)`` on each shard of ``by_shard``, all at once;
        the answers in ``by_shard``'s order."""
        if self._closed:
            raise DurableValueError(f"task hub {self.name!r} is closed")
        shards = self._shards
        return self._call(lambda: [getattr(shards[i], method).remote(part, *args) for i, part in by_shard.items()])

    def _submit(self, msgs: list[Message]) -> None:
        """Send client messages to their shards (over the link); returns once all are
        committed, raising the error that refused any of them."""
        self._link.run(self._send(self._client_batches(msgs)))

    async def _submit_async(self, msgs: list[Message]) -> None:
        """:meth:`_submit` for the asyncio client."""
        await self._link.run_async(self._send(self._client_batches(msgs)))

    def _client_batches(self, msgs: list[Message]) -> dict[int, list[Message]]:
        """``msgs`` marked as a client's, each with its id, grouped by shard."""
        by_shard: dict[int, list[Message]] = {}
        for msg in msgs:
            msg.client, msg.msg_id = True, uuid.uuid4().hex
            by_shard.setdefault(shard_of(msg.instance_id, self.num_shards), []).append(msg)
        if self._closed:
            raise DurableValueError(f"task hub {self.name!r} is closed")
        return by_shard

    async def _send(self, by_shard: dict[int, list[Message]]) -> None:
        """On the link's loop: each shard's messages at once."""
        if len(by_shard) == 1:
            [(index, part)] = by_shard.items()
            await self._link.submit(index, part)
        else:
            await asyncio.gather(*(self._link.submit(i, part) for i, part in by_shard.items()))

    def _registry_blob(self) -> bytes:
        """The registry shipped to the shards, with the built-in activities (``call_http``'s)
        merged in, so they exist whatever registry the hub was given."""
        orchestrators, activities, entity_specs, version = self._registry.snapshot()
        self._registry_version = version
        activities = {**activities, **BUILTIN_ACTIVITIES}
        return encode((orchestrators, activities, entity_specs, version), "registry")

    def _sync_registry(self) -> None:
        """Install this driver's registry on the shards if it changed since the last install
        (the shards merge it by name into what they run, so a partial or empty one takes
        nothing away)."""
        if self._registry.version != self._registry_version:
            blob = self._registry_blob()
            self._call(lambda: [s.set_registry.remote(blob) for s in self._shards])

    @staticmethod
    def _call(make: Callable[[], T]) -> T:
        """``ray.get`` that re-raises the library's own errors unwrapped."""
        try:
            return ray.get(make())  # type: ignore[call-overload,no-any-return]
        except RayTaskError as exc:
            error = unwrap(exc)
            if error is exc:
                raise
            raise error from None


def _placement(num_shards: int) -> list[dict[str, Any]]:
    """Scheduling options per shard host: on a cluster of N > 1 alive nodes (sorted by id),
    shard i prefers node i mod N, so hosts and their files spread over the nodes.

    The affinity is soft: when that node is lost, Ray restarts the host on another node, which
    reopens the file at the same path (the data survives if ``data_dir`` is shared storage).
    On a single node this adds nothing.
    """
    nodes = sorted(node["NodeID"] for node in ray.nodes() if node.get("Alive"))
    if len(nodes) <= 1:
        return [{} for _ in range(num_shards)]
    # Ray places a task that asks for no resource at all on a random node, ignoring a soft
    # affinity (only a hard one is honoured; ray-project/ray#25360): one byte of memory makes
    # the request non-empty at no cost (activities ask for CPU, not memory).
    return [
        {"scheduling_strategy": NodeAffinitySchedulingStrategy(nodes[i % len(nodes)], soft=True), "memory": 1}
        for i in range(num_shards)
    ]


def _node_of_host(host: object) -> str:
    """Run inside a shard host (through ``__ray_call__``): the id of the node it runs on."""
    return ray.get_runtime_context().get_node_id()


def _progress_until(ref: Any, poll: Callable[[], tuple[int, int]], label: str) -> None:
    """Draw a progress bar of (done, scheduled) until ``ref`` is ready."""
    from tqdm import tqdm

    with tqdm(desc=label[:24], unit="task", total=0) as bar:
        while True:
            ready, _ = ray.wait([ref], timeout=0.25)
            done, scheduled = poll()
            if scheduled != bar.total:
                bar.total = scheduled
            bar.n = done
            bar.refresh()
            if ready:
                return



