"""A shard host's administration: purges, entity storage clean-up and lock listing (the
maintenance calls of ``TaskHub`` and the CLI, each under the host's database lock), counters,
settings, and the fault injection tests use."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from typing import Any

from orchestrations import SubOrchestrationInstanceCreated
from orchestrations._children import children_of

from ._codec_records import load_event
from ._entity_host import addressable, parse_holder
from ._messages import Instance, start_key
from ._shard_base import ShardBase, ShardConfig
from ._status import TERMINAL


class ShardAdmin(ShardBase):
    """Mixed into :class:`ShardHost`: purges, entity maintenance, counters and fault injection."""

    def fail_next_commits(self, count: int) -> None:
        """Fault injection for tests: the next ``count`` commits fail as on a full disk."""
        self._store.failing_commits = count

    def pid(self) -> int:
        """This host's process id (for fault-injection tests)."""
        return os.getpid()

    def get_config(self) -> ShardConfig:
        """This shard's settings (used by ``TaskHub.connect``)."""
        return self.config

    async def stats(self) -> dict[str, int]:
        """Counters for tests and benchmarks."""
        return {
            "turns": self.turns,
            "messages": self.messages,
            "local_messages": self.local_messages,
            "served_inline": self.served_inline,
            "calls": self.calls,
            "ray_deliveries": self.ray_deliveries,
            "cached": len(self._cache),
            "entities_cached": len(self._entities),
            "outstanding": self._activity_out.count(),
            "slow_episodes": self._watch.slow_episodes if self._watch is not None else 0,
            "warm_worker_connected": int(self._activity_out.warm_worker_connected),
            "parked": len(self._parking),
            "failed_commits": self.failed_commits,
            "early_starts": self.early_starts,
        }

    async def replication_status(self) -> dict[str, Any] | None:
        """The replication's state (mode, replica, lease generations, syncs, fencing), or
        ``None`` without a replica."""
        return None if self._replication is None else self._replication.status()

    def _crash_point(self, point: str) -> None:
        """Fault injection for tests: die here, once per shard and point (a marker file); at a
        point named ``error_...``, raise instead (a turn that fails, in a host that lives on)."""
        if point in self.config.crash_points and self.config.crash_marker_dir:
            marker = os.path.join(self.config.crash_marker_dir, f"{point}-{self.config.index}")
            if not os.path.exists(marker):
                with open(marker, "w") as f:
                    f.write(str(os.getpid()))
                if point == "lose_disk_before_sync" and self._replication is not None:
                    # the node's disk goes with the process: nothing unreplicated survives
                    shutil.rmtree(os.path.dirname(self._replication.local_path), ignore_errors=True)
                if point.startswith("error_"):
                    raise RuntimeError(f"fault injected at {point} (shard {self.config.index})")
                os._exit(17)

    async def purge(
        self, targets: Sequence[tuple[str, str | None]], recursive: bool = False
    ) -> tuple[int, list[tuple[str, str]]]:
        """Delete the terminal instances of ``targets`` and their history; active ones are left
        alone. A target is ``(instance id, parent id or None)``: with a parent id, the instance
        is purged only if that instance started it (an id reused since is left alone).

        Returns how many were deleted and, with ``recursive``, ``(child id, parent id)`` for
        every sub-orchestration the deleted ones started: the caller purges those next, on
        their own shards.
        """
        await self._ensure_started()
        async with self._db_lock:
            rows = await self._store.load_instances([t[0] for t in targets])
            insts = {iid: Instance.from_row(row) for iid, row in rows.items()}
            ids = [
                iid for iid, parent in dict(targets).items()
                if (inst := insts.get(iid)) is not None and inst.status in TERMINAL
                and (parent is None or (inst.parent is not None and inst.parent.instance_id == parent))
            ]
            children: list[tuple[str, str]] = []
            if recursive:
                for iid in ids:
                    created = await self._store.load_events(insts[iid].num, (SubOrchestrationInstanceCreated.__name__,))
                    children += [(child, iid) for child in children_of(load_event(blob) for _, blob in created)]
            with self._counted():
                count = await self._store.purge(ids, self._retired_starts([insts[i] for i in ids]))
        for iid in ids:
            self._evict(iid)
        await self._visible()
        return count, children

    def _retired_starts(self, purged: list[Instance]) -> list[str]:
        """What a purge keeps in ``delivered`` so that a client's start Ray retries after it
        changes nothing (see ``ShardHost._group``): on a host Ray restarted, the executions of
        the purged instances a client may have started (those without a parent). Elsewhere,
        those whose start the start journal still holds (a host that reads it after a crash
        must not start them again); none otherwise, as no retry can reach them."""
        return [
            start_key(inst.execution_id) for inst in purged
            if inst.parent is None and (self._retries_possible or inst.execution_id in self._journal_executions)
        ]

    async def purge_by(
        self, created_from: float | None, created_to: float | None, statuses: list[str] | None,
        prefix: str | None = None, recursive: bool = False,
    ) -> tuple[int, list[tuple[str, str]]]:
        """Purge the terminal instances that match the filters (see :meth:`purge`)."""
        await self._ensure_started()
        allowed = [s.value for s in TERMINAL]
        statuses = [s for s in statuses if s in allowed] if statuses is not None else allowed
        rows = await self._store.query_instances(created_from, created_to, statuses, None, None, prefix)
        return await self.purge([(r.instance_id, None) for r in rows], recursive)

    async def entity_names(self) -> list[str]:
        """The (lower-cased) names of the entities registered here: the union of every
        registry installed on this hub."""
        await self._ensure_started()
        return sorted(self._entity_specs)

    async def locked_entities(self) -> list[tuple[str, str, str | None, int | None]]:
        """The committed locks of this shard: (entity id, holder instance id, its execution
        id, the task id of its lock request); the last two are ``None`` for a lock recorded
        before holders were identified."""
        await self._ensure_started()
        locks = []
        for row in addressable(await self._store.query_entities(None, locked_only=True)):
            holder, lock = parse_holder(row.locked_by)
            assert holder is not None
            identity = (lock.execution_id, lock.task_scheduled_id) if lock else (None, None)
            locks.append((row.entity_id, holder, *identity))
        await self._visible()
        return locks

    async def remove_empty_entities(self) -> int:
        """Forget entities with no state, no lock and nothing queued."""
        await self._ensure_started()
        rows = await self._store.query_entities(None)
        keys = [r.entity_id for r in rows if not r.has_state and r.locked_by is None and r.queue is None]
        keys = [k for k in keys if k not in self._entities or self._entities[k].state.is_empty]
        async with self._db_lock:
            with self._counted():
                count = await self._store.delete_entities(keys)
        for key in keys:
            self._entities.pop(key, None)
        await self._visible()
        return count
