"""The settings of a shard host, and :class:`ShardBase`: what the parts a shard host is made of
(``ShardTurns`` with ``ShardInstances``, ``ShardEntities``, ``ShardLifecycle`` and
``ShardDirectory``; ``ShardQueries``, ``ShardClients``, ``ShardAdmin``) use from the host and
from each other, declared once so the type checker checks every part against it.

``ShardBase`` comes last in ``ShardHost``'s MRO, so its stubs never hide a real method, whatever
the order of the parts; a test pins that the host defines every one of them.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio
    import contextlib
    from collections import OrderedDict

    from orchestrations import FailureDetails, HistoryEvent, OrchestrationExecutor, ParentInfo
    from orchestrations._registry import OrchestratorSpec

    from ._activities import ActivityDispatcher
    from ._cache import InstanceCache
    from ._delivery import Courier, Outbound
    from ._entity_host import EntityRecord
    from ._messages import Instance, Message
    from ._metrics import ShardMetrics
    from ._parking import Parking
    from ._replication import ShardReplication
    from ._store import ShardStore
    from ._turn import Turn
    from ._watchdog import EpisodeWatch


@dataclass(frozen=True, slots=True)
class ShardConfig:
    """Settings of one shard host."""

    hub: str
    index: int
    num_shards: int
    path: str
    always_replay: bool = False
    cache_size: int = 10_000
    synchronous: str = "FULL"
    lock_timeout: float = 10.0
    #: keep one long-lived activity worker actor for light load (see ``WarmWorker``)
    warm_worker: bool = True
    #: warn about an episode of orchestrator code that runs longer than this (None: never)
    slow_episode_seconds: float | None = 1.0
    #: fault injection for tests: points at which the host dies once ("before_commit", ...), or
    #: raises once ("error_before_commit": the turn fails after staging, before its commit)
    crash_points: tuple[str, ...] = ()
    crash_marker_dir: str | None = None
    #: the instances kept in memory hold at most this many bytes of inputs (besides cache_size)
    cache_bytes: int = 512 * 2**20
    #: the hub's identity (its hub.json's ``hub_id``), recorded in and checked against the file
    hub_id: str = ""
    #: whether a missing or empty file may be created (a new hub); once the hub's hub.json lists
    #: its shard files, one that is missing is refused, never recreated
    create: bool = True
    #: ``TaskHub(tracing_setup=...)``: run once in the host's process and, with each activity
    #: batch, in the worker's (see ``runtime._tracing.setup``)
    tracing_setup: str | Callable[[], Any] | None = None
    #: ``TaskHub(replica=...)``: where the shard's file is replicated (``None``: nowhere)
    replica: str | None = None
    #: ``"local"``, or with a replica ``"replicated"`` or ``"async"`` (see ``runtime._replication``)
    replication: str = "local"
    #: how long the shard's lease in the replica store lasts unless renewed
    lease_seconds: float = 15.0


class ShardBase:
    """The state and methods the parts of :class:`ShardHost` share (set up by its
    ``__init__``). Not used on its own."""

    config: ShardConfig
    _store: ShardStore
    _db_lock: asyncio.Lock
    _orchestrators: dict[str, OrchestratorSpec]
    _entity_specs: dict[str, Any]
    #: instances and entity records in memory, least recently used first
    _cache: InstanceCache
    _entities: OrderedDict[str, EntityRecord]
    _last_num: int
    _timer_handles: dict[str, dict[int, asyncio.TimerHandle]]
    _watch: EpisodeWatch | None
    _loop_task: asyncio.Task[None] | None
    _parking: Parking
    _waiters: dict[str, list[asyncio.Future[Any]]]
    _start_waiters: dict[str, list[asyncio.Future[Any]]]
    #: Ray restarted this host: a client's call its predecessor applied may come again
    _retries_possible: bool
    _activity_out: ActivityDispatcher
    _courier: Courier
    #: the replication of its file (``None`` without a replica)
    _replication: ShardReplication | None
    #: the host's metrics (``runtime._metrics``)
    _metrics: ShardMetrics
    #: ids of ``delivered`` records the next turn deletes (their senders cannot resend them)
    _forget_delivered: list[str]
    #: counters for ``stats()``
    turns: int
    messages: int
    local_messages: int
    #: messages a lock holder's episode had its entities serve at once (``_serve_inline``)
    served_inline: int
    calls: int
    ray_deliveries: int
    failed_commits: int
    #: fresh client starts made durable in the start journal (``runtime._shard_intake``)
    early_starts: int
    #: the execution ids of the starts the start journal holds (``runtime._shard_intake``)
    _journal_executions: set[str]

    # -- ShardHost: the actor and its turn loop ---------------------------------------------------

    async def _ensure_started(self) -> None:
        raise NotImplementedError

    def _enqueue(self, msg: Message) -> None:
        raise NotImplementedError

    def _enqueue_many(self, msgs: list[Message]) -> None:
        raise NotImplementedError

    # -- ShardIntake: the start journal ----------------------------------------------------------

    def _journal_done(self, batch: Iterable[Message], lost: Collection[Message] = ()) -> None:
        raise NotImplementedError

    async def _journal_visible(self, ids: Iterable[str] | None) -> None:
        raise NotImplementedError

    def _release(self, effects: Callable[..., None], *args: Any) -> None:
        raise NotImplementedError

    def _counted(self) -> contextlib.AbstractContextManager[None]:
        raise NotImplementedError

    async def _visible(self) -> None:
        raise NotImplementedError

    # -- ShardAdmin -------------------------------------------------------------------------------

    def _crash_point(self, point: str) -> None:
        raise NotImplementedError

    # -- ShardDirectory ---------------------------------------------------------------------------

    def _evict(self, key: str) -> None:
        raise NotImplementedError

    # -- ShardTurns -------------------------------------------------------------------------------

    def _outgoing(self, msg: Message) -> Outbound:
        raise NotImplementedError

    def _stage_outgoing(self, msg: Message, turn: Turn) -> None:
        raise NotImplementedError

    # -- ShardEntities ----------------------------------------------------------------------------

    def _serve_inline(self, msg: Message, iid: str, exec_id: str, turn: Turn) -> list[HistoryEvent] | None:
        raise NotImplementedError

    def _check_entity_name(self, name: str) -> None:
        raise NotImplementedError

    # -- ShardInstances ---------------------------------------------------------------------------

    def _new_executor(self, instance_id: str) -> OrchestrationExecutor:
        raise NotImplementedError

    def _watching(self, inst: Instance) -> contextlib.AbstractContextManager[None]:
        raise NotImplementedError

    async def _episode(
        self, inst: Instance, msgs: list[Message], turn: Turn
    ) -> None:
        raise NotImplementedError

    def _reply_to_parent(
        self, parent: ParentInfo, output: Any, failure: FailureDetails | None, turn: Turn,
    ) -> None:
        raise NotImplementedError

    # -- ShardLifecycle ---------------------------------------------------------------------------

    async def _run_episode(
        self, inst: Instance, msgs: list[Message], turn: Turn
    ) -> None:
        raise NotImplementedError

    async def _rewind(
        self, inst: Instance | None, msg: Message, turn: Turn
    ) -> Message | None:
        raise NotImplementedError

    def _hold_start(self, inst: Instance, msg: Message, turn: Turn) -> None:
        raise NotImplementedError

    def _begin_scheduled(self, inst: Instance | None, msg: Message) -> Instance | None:
        raise NotImplementedError

    def _while_pending(self, inst: Instance, msg: Message, turn: Turn) -> None:
        raise NotImplementedError
