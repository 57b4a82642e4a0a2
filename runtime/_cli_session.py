"""How ``ray-durable`` reaches a hub: running (detached) in a reachable Ray cluster, or else
through its files (read commands) or opened for the moment (control commands).

See :mod:`runtime.cli` for the rules; this module finds the cluster without starting a Ray
(a TCP probe of the recorded or given address) and holds the session's options.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import click
import ray

from entities import EntityId
from orchestrations import DurableValueError, HistoryEvent
from orchestrations._registry import Registry

from ._client import TaskHub
from ._paging import StatusFilter
from ._readonly import HubFiles, RawEvent
from ._status import DurableOrchestrationStatus, EntityMetadata, EntityStateResponse, InstancePage

_PROBE_SECONDS = 0.5


class Reader(Protocol):
    """What read commands need: a connected ``TaskHub`` or a hub's files (``HubFiles``)."""

    def get_status(self, instance_id: str) -> DurableOrchestrationStatus | None: ...

    def get_history(self, instance_id: str) -> Sequence[HistoryEvent] | Sequence[RawEvent]: ...

    def list_instances(
        self, created_time_from: datetime | None = None, created_time_to: datetime | None = None,
        runtime_status: StatusFilter = None, page_size: int | None = 100, continuation_token: str | None = None,
    ) -> InstancePage: ...

    def list_entities(self, name: str | None = None, include_deleted: bool = False) -> list[EntityMetadata]: ...

    def read_entity_state(self, entity_id: EntityId) -> EntityStateResponse: ...


# -- finding the hub ---------------------------------------------------------------------------------


def _recorded_address() -> str | None:
    """The cluster address ``ray start`` last recorded on this machine, if any."""
    try:
        from ray._private.utils import read_ray_address
    except ImportError:  # a Ray that keeps it elsewhere: nothing recorded as far as we know
        return None
    address: str | None = read_ray_address()
    return address


def _answers(address: str) -> bool:
    """Whether something accepts a TCP connection at ``host:port`` (``ray://`` allowed)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=_PROBE_SECONDS):
            return True
    except (OSError, ValueError):
        return False


def _cluster_address(explicit: str | None) -> str | None:
    """The address of a Ray cluster that is up, or ``None``.

    ``explicit`` (``--address`` or ``RAY_ADDRESS``) must answer, else ``ValueError``; ``local``
    means no cluster; without it (or with ``auto``) the recorded address is used if it answers.
    """
    if explicit == "local":
        return None
    given = explicit not in (None, "", "auto")
    address = explicit if given else _recorded_address()
    if not address or _answers(address):
        return address or None
    if given:
        raise DurableValueError(f"no Ray cluster answers at {address}")
    return None


@dataclass
class Session:
    """The global options, and the Ray connection this process made (if any)."""

    hub: str
    data_dir: str
    address: str | None
    as_json: bool
    no_decode: bool = False
    started_ray: bool = False

    def running_hub(self) -> TaskHub | None:
        """The hub if it runs in a reachable Ray cluster, else ``None``; starts no Ray. A process
        already connected to Ray (a driver calling the CLI in-process) looks there, not at ``address``.

        Connects with an empty registry, which ``TaskHub`` never installs: the hub keeps its code.
        """
        if not ray.is_initialized():
            address = _cluster_address(self.address)
            if address is None:
                return None
            ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
            self.started_ray = True
        try:
            return TaskHub.connect(self.hub, registry=Registry())
        except DurableValueError:  # no hub of that name in this cluster
            self.leave_ray()
            return None

    def leave_ray(self) -> None:
        """Disconnect from the Ray cluster this process connected to (not one it was given)."""
        if self.started_ray:
            ray.shutdown()
            self.started_ray = False

    @contextmanager
    def reader(self) -> Iterator[Reader]:
        """The running hub, or else its files opened read-only (always the files, not decoded,
        with ``--no-decode``)."""
        hub = None if self.no_decode else self.running_hub()
        if hub is None:
            with closing(HubFiles(self.hub, self.data_dir, raw=self.no_decode)) as files:
                yield files
            return
        try:
            yield hub
        finally:
            hub.close()
            self.leave_ray()

    @contextmanager
    def writer(self) -> Iterator[TaskHub]:
        """The running hub, or else the hub opened (with its saved code) until the block ends."""
        if self.no_decode:
            raise click.UsageError("--no-decode is for read commands (list, status, history, entities, entity)")
        hub = self.running_hub()
        if hub is None:
            with closing(HubFiles(self.hub, self.data_dir)) as files:  # refuses a hub that does not exist
                num_shards, registry, replica = files.num_shards, files.saved_registry(), files.replica
            hub = TaskHub(
                self.hub, data_dir=self.data_dir, num_shards=num_shards, registry=registry, lock_timeout=3.0,
                replica=replica,
                ray_init_kwargs={"address": "local", "log_to_driver": False},
            )
        try:
            yield hub
        finally:
            hub.close()
            self.leave_ray()
