"""The task hub client's reads of orchestration instances: status (one or many), history,
waits for an end or a start, listing by filters and pages, and purges."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, overload

import ray

from orchestrations import HistoryEvent, InstanceNotFoundError, validate_instance_id

from ._client_args import check_bool, check_prefix, check_timeout, instance_ids
from ._client_base import ClientParts
from ._paging import ShardRow, StatusFilter, query_page, status_values, timestamp_of
from ._status import DurableOrchestrationStatus, InstancePage, PurgeHistoryResult


class QueryClient(ClientParts):
    """Mixed into :class:`TaskHub`: what a driver reads about orchestration instances, and purges."""

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
            return self._link.status_blocking(index, iid, show_history, show_history_output, show_input)
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
        past ``timeout`` seconds. An id no instance has yet is waited for too (the child a
        parent is about to create, say): if none was created by the timeout, this raises
        :class:`InstanceNotFoundError` instead. ``show_progress`` draws a progress bar of its
        activities.
        """
        validate_instance_id(instance_id)
        check_timeout(timeout)
        if show_progress:
            shard = self._shard(instance_id)
            ref = shard.wait.remote(instance_id, timeout)
            _progress_until(ref, lambda: ray.get(shard.progress.remote(instance_id)), instance_id)
            status = self._call(lambda: ref)
        else:
            status = self._link.wait_blocking(self._shard_index(instance_id), "wait", instance_id, timeout)
        if status is None:
            raise TimeoutError(f"orchestration {instance_id!r} did not finish within {timeout} s")
        return status

    def wait_for_orchestration_start(
        self, instance_id: str, timeout: float | None = None
    ) -> DurableOrchestrationStatus:
        """Block until the instance is no longer Pending (it started running, or ended before)
        and return its status (durabletask's ``wait_for_orchestration_start``).

        An instance started with ``start_at`` is Pending until then; any other at most for a
        moment (a start its busy shard host committed before the turn that runs it).
        The shard host answers when the start commits (no polling). Raises ``TimeoutError``
        past ``timeout`` seconds, or :class:`InstanceNotFoundError` if no instance of that id
        was created by then (an id no instance has yet is waited for, as in
        :meth:`wait_for_completion`).
        """
        validate_instance_id(instance_id)
        check_timeout(timeout)
        status = self._link.wait_blocking(self._shard_index(instance_id), "wait_start", instance_id, timeout)
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
        name: str | None = None,
    ) -> InstancePage:
        """One page of instances ordered by creation time; pass the token back for the next.

        ``instance_id_prefix`` keeps only the ids that start with it (each shard reads just
        that range of its primary key), ``name`` only the instances of that orchestrator;
        paging works the same with them.
        """

        def query_shards(lo: float | None, hi: float | None, statuses: list[str] | None,
                         after: tuple[float, str] | None, limit: int | None, prefix: str | None, name: str | None,
                         ) -> list[list[ShardRow]]:
            return self._call(
                lambda: [s.query.remote(lo, hi, statuses, after, limit, show_input, prefix, name) for s in self._shards]
            )

        return query_page(
            query_shards, created_time_from, created_time_to, runtime_status, page_size, continuation_token,
            instance_id_prefix, name,
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
