"""The directory of a shard host's activations: the orchestration instances and entity records
it holds in memory, by id, least recently used first. A turn loads the ones it needs that are
not there from the file; after each commit the directory is bounded (count and bytes of inputs
for instances, count for entities; the least recently used go, to be replayed or reloaded when
next needed); a record whose turn failed is evicted (it reloads from the file).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from entities import EntityId, EntityState

from ._entity_host import EntityRecord
from ._messages import Instance
from ._shard_base import ShardBase

if TYPE_CHECKING:
    from ._messages import Message


class ShardDirectory(ShardBase):
    """Mixed into :class:`ShardHost`: the records in memory (``_cache``, ``_entities``)."""

    def _evict(self, key: str) -> None:
        """Forget an instance's or entity's in-memory state; it reloads from the file."""
        self._entities.pop(key, None)
        inst = self._cache.pop(key, None)
        if inst is not None and inst.executor is not None:
            inst.executor.close()

    async def _load_missing_instances(self, groups: dict[str, list[Message]]) -> None:
        """Load the records of the turn's instances that are not in memory; not the record of
        a client's start of a made-up id (``fresh``) while no call was retried: it cannot exist."""
        missing = [i for i, msgs in groups.items() if not i.startswith("@") and i not in self._cache
                   and (self._retries_possible or not all(m.fresh for m in msgs))]
        if missing:
            for iid, row in (await self._store.load_instances(missing)).items():
                self._cache[iid] = Instance.from_row(row)

    async def _load_missing_entities(self, groups: dict[str, list[Message]]) -> None:
        """Load the records of the turn's entities that are not in memory."""
        missing = [i for i in groups if i.startswith("@") and i not in self._entities]
        if missing:
            rows = await self._store.load_entities(missing)
            for key in missing:
                found = rows.get(key)
                fresh = EntityRecord(EntityId.parse(key), EntityState())
                spec = self._entity_specs.get(fresh.entity_id.name)
                self._entities[key] = EntityRecord.from_row(found, spec) if found is not None else fresh

    def _bound_directory(self, touched: list[str]) -> None:
        """After a commit: with ``always_replay``, drop the generators of the records the turn
        ran; then let the least recently used records go while over the bounds."""
        if self.config.always_replay:
            for iid in touched:
                inst = self._cache.get(iid)
                if inst is not None and inst.executor is not None:
                    inst.executor.close()
                    inst.executor = None
        while self._cache.over(self.config.cache_size, self.config.cache_bytes):
            _, inst = self._cache.popitem(last=False)
            if inst.executor is not None:
                inst.executor.close()
        while len(self._entities) > self.config.cache_size:
            self._entities.popitem(last=False)
