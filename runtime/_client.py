"""The task hub client: what a Ray driver uses to start, query and control orchestrations."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

import ray
from ray.exceptions import ActorAlreadyExistsError, RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from orchestrations import (
    DurableValueError,
    default_registry,
)
from orchestrations._ids import shard_of
from orchestrations._registry import Registry

from ._client_args import (
    check_hub_name,
    check_settings,
    replication_settings,
)
from ._client_async import AsyncClient
from ._client_control import ControlClient
from ._client_entities import EntityClient
from ._client_link import ClientLink, unwrap
from ._client_queries import QueryClient
from ._codec import encode
from ._delivery import NAMESPACE
from ._delivery import actor_name as _actor_name
from ._history_json import history_to_json
from ._http import BUILTIN_ACTIVITIES
from ._hub_file import HubRecord, default_num_shards, open_hub_file, record_shards, recorded_num_shards, shard_file
from ._messages import Message
from ._shard_actor import ShardHost as ShardActor  # the actor class: the host's Ray-called methods
from ._shard_base import ShardConfig
from ._shard_queries import READS
from ._tracing import install_log_filter

log = logging.getLogger("ray_durable")


def _preload_ray_serialization() -> None:
    """Import what Ray's first serialization in this process imports (its pydantic and
    starlette support, ~0.15 s here), so that opening a hub does not wait for it: done in a
    background thread when this module is imported, which is usually while ``ray.init()``
    waits for its processes. Anything missing or failing is left for Ray to meet itself."""
    for module in ("ray._common.pydantic_compat", "pydantic.v1.fields", "starlette.datastructures"):
        with contextlib.suppress(Exception):
            __import__(module)


threading.Thread(target=_preload_ray_serialization, name="durable-preload", daemon=True).start()

#: status, history and entity reads run on their own loop: a blocked turn does not hold them
_ShardActor = ray.remote(concurrency_groups={READS: 4})(ShardActor)  # type: ignore[call-overload]
T = TypeVar("T")


class TaskHub(QueryClient, ControlClient, EntityClient, AsyncClient):
    """A durable task hub: shard host actors plus their SQLite files under ``data_dir/name/``.

    Opening a hub starts a local Ray if none is running, creates one shard host actor per
    shard (``num_cpus=0``: they mostly wait) and recovers any work left in the files. All
    methods block until the shard has committed what they asked for.

    ``num_shards`` is fixed when the hub is created (``hub.json`` records it). Left ``None``, a
    new hub gets one shard per two CPUs of the Ray cluster (``ray.cluster_resources()["CPU"]``,
    1 to 16: a busy shard host keeps about a core busy, and activities need the rest), and an existing
    hub reopens with the count it was created with, whatever the CPUs are now. A count given
    explicitly must match an existing hub's (else :class:`ShardMismatchError`).

    Each shard host keeps its most recently used unfinished instances in memory: at most
    ``cache_size`` of them, holding at most ``cache_bytes`` of inputs (the least recently
    used leave first and are replayed from the file when next needed; a finished instance
    leaves at once).

    ``tracing_setup`` (``"package.module:function"``, or a picklable callable) is called once in
    every process that hosts this hub's durable work (shard hosts, activity workers) before its
    first span: it sets OpenTelemetry's global tracer provider there (see ``runtime._tracing``
    and the README's "Traces"). The driver sets its own provider as usual.

    ``replica`` (``"s3://bucket/prefix"``, with ``?endpoint=`` for MinIO or another S3, or
    ``"file:///path"``) replicates every shard file there with Litestream (the ``replica``
    extra), so losing a node loses nothing: with ``durability="replicated"`` (the default with a
    replica) nothing a client, an entity or another shard was told leaves a host before the
    replica has it; with ``"async"`` the replica trails by about a second. Each shard's owner
    holds a lease in the replica store for ``lease_seconds`` (renewed every third of it): a host
    that Ray restarts on another node waits for a dead owner's lease to lapse, restores the shard
    from the replica and carries on. Without a replica, ``durability`` is ``"local"`` (SQLite's
    ``synchronous=FULL``, also called ``"full"``) or ``"normal"``. See
    ``runtime._replication`` and the README's "Multi-node".
    """

    def __init__(
        self,
        name: str = "default",
        *,
        data_dir: str | os.PathLike[str] = ".durable",
        num_shards: int | None = None,
        always_replay: bool = False,
        detached: bool = False,
        cache_size: int = 10_000, cache_bytes: int = 512 * 2**20,
        durability: str | None = None,
        replica: str | None = None, lease_seconds: float = 15.0,
        lock_timeout: float = 10.0,
        warm_worker: bool = True,
        slow_episode_warning: float | None = 1.0,
        registry: Registry | None = None,
        tracing_setup: str | Callable[[], Any] | None = None,
        _crash_points: tuple[str, ...] = (), _crash_marker_dir: str | None = None,
        ray_init_kwargs: dict[str, Any] | None = None,
    ) -> None:
        check_hub_name(name)
        check_settings(
            num_shards=num_shards, cache_size=cache_size, lock_timeout=lock_timeout,
            slow_episode_warning=slow_episode_warning, always_replay=always_replay, detached=detached,
            warm_worker=warm_worker, cache_bytes=cache_bytes, tracing_setup=tracing_setup,
        )
        sync, replication = replication_settings(replica, durability, lease_seconds)
        self.name, self._replica = name, replica
        self.directory = os.path.join(os.path.abspath(os.fspath(data_dir)), name)
        self._registry = registry or default_registry
        self._hub_entities: frozenset[str] | None = None
        self._started_ray = False
        self.num_shards = num_shards = self._shard_count(num_shards, ray_init_kwargs)
        record = open_hub_file(self.directory, name, num_shards, replica)
        self._init_ray(ray_init_kwargs)
        self._detached, self._closed, self._registry_version = detached, False, -1
        self._shards: list[Any] = []
        self._link = ClientLink(self._shards, name)
        configs = [
            ShardConfig(
                hub=name, index=i, num_shards=num_shards, path=os.path.join(self.directory, shard_file(i)),
                always_replay=always_replay, cache_size=cache_size, synchronous=sync, lock_timeout=lock_timeout,
                warm_worker=warm_worker, slow_episode_seconds=slow_episode_warning,
                crash_points=_crash_points, crash_marker_dir=_crash_marker_dir, cache_bytes=cache_bytes,
                hub_id=record.hub_id, create=record.create, tracing_setup=tracing_setup,
                replica=replica, replication=replication, lease_seconds=float(lease_seconds),
            )
            for i in range(num_shards)
        ]
        self._create_hosts(configs, detached)
        self._start_hosts(record)

    # -- opening ----------------------------------------------------------------------------------

    def _start_hosts(self, record: HubRecord) -> None:
        """Have every host open its file, install the registry and recover (all killed if one
        fails); then, for a new hub, record its shard files (from here on a missing one is
        refused, never created again)."""
        install_log_filter()  # this process's runtime log records carry trace ids too
        blob = self._registry_blob()
        try:
            self._call(lambda: [s.start.remote(blob) for s in self._shards])
        except BaseException:
            self._kill()
            raise
        if record.create:
            record_shards(self.directory, self.name, self.num_shards, record.hub_id, self._replica)

    def _shard_count(self, num_shards: int | None, ray_init_kwargs: dict[str, Any] | None) -> int:
        """``num_shards``, or if ``None`` the count the hub was created with, or (a new hub) one
        that suits the cluster's CPUs (only then is Ray started before the hub file is read)."""
        if num_shards is None:
            num_shards = recorded_num_shards(self.directory)
            if num_shards is None:
                self._init_ray(ray_init_kwargs)
                num_shards = default_num_shards(ray.cluster_resources().get("CPU", 1))
        return num_shards

    def _create_hosts(self, configs: list[ShardConfig], detached: bool) -> None:
        """Create one shard host actor per config, named for this hub and spread over the
        nodes; raises :class:`DurableValueError` (having killed those it created) if the hub is
        already open in this Ray cluster."""
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
        placement = _placement(len(configs))
        for config in configs:
            name, i = config.hub, config.index
            try:  # Ray looks the name up itself (a second lookup here cost a round trip per shard)
                host = _ShardActor.options(name=_actor_name(name, i), **options, **placement[i]).remote(config)
            except ActorAlreadyExistsError:
                self._kill()  # the hosts created before this one, if any
                self._shards = []
                already = f"task hub {name!r} is already open in this Ray cluster (connect to it)"
                raise DurableValueError(already) from None
            self._shards.append(host)

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
        committed, raising the error that refused any of them. Messages for one shard go from
        the caller's thread; for several, at once from the link's loop."""
        by_shard = self._client_batches(msgs)
        if len(by_shard) == 1:
            [(index, part)] = by_shard.items()
            self._link.submit_blocking(index, part)
        else:
            self._link.run(self._send(by_shard))

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
