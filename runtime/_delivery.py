"""How a shard host's messages reach other shards: the outbox, after the commit.

A message gets a unique id and is encoded once, for its outbox row and for its receiver. One
sender task per destination shard makes one Ray call at a time and puts what queued meanwhile
in the next one (fewer calls under load, FIFO per destination). A message is acknowledged (its
outbox row deleted in a later turn) once the receiver has committed it; until then it is sent
again after a restart, and the receiver drops duplicates by id.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import ray

from orchestrations._ids import shard_of

from ._messages import Message

log = logging.getLogger("ray_durable.delivery")

NAMESPACE = "ray_durable"


def actor_name(hub: str, index: int) -> str:
    """The Ray actor name of a hub's shard host."""
    return f"{hub}:shard-{index:02d}"


@dataclass(frozen=True, slots=True)
class Outbound:
    """A message leaving through the outbox: encoded once, for its row and for its receiver."""

    msg_id: str
    dest: int
    msg: Message
    blob: bytes


class Courier:
    """Delivers one shard host's outbox; messages to itself go straight to its own mailbox."""

    def __init__(self, hub: str, index: int, num_shards: int, to_self: Callable[[Message], None]) -> None:
        self._hub, self._index, self._num_shards = hub, index, num_shards
        self._to_self = to_self
        self._peers: dict[int, Any] = {}
        self._queues: dict[int, list[Outbound]] = {}
        self._senders: dict[int, asyncio.Task[None]] = {}
        self._acked: list[str] = []
        #: message ids: unique per host process (a random prefix) and cheap (a counter)
        self._prefix = uuid.uuid4().hex[:16] + "-"
        self._counter = 0

    def prepare(self, msg: Message) -> Outbound:
        """Give ``msg`` a unique id and its destination shard, and encode it (once)."""
        self._counter += 1
        msg.msg_id = f"{self._prefix}{self._counter:x}"
        return Outbound(msg.msg_id, shard_of(msg.instance_id, self._num_shards), msg, msg.to_bytes())

    def take_acked(self) -> list[str]:
        """The ids of messages their receivers have committed (their outbox rows can go)."""
        acked, self._acked = self._acked, []
        return acked

    def deliver(self, outbox: Sequence[Outbound]) -> None:
        """Send committed outbox messages (call after the commit that wrote them)."""
        for out in outbox:
            if out.dest == self._index:
                out.msg.from_self = True
                self._to_self(out.msg)
                continue
            self._queues.setdefault(out.dest, []).append(out)
            if out.dest not in self._senders:
                self._senders[out.dest] = asyncio.get_running_loop().create_task(self._sender(out.dest))

    async def _sender(self, dest: int) -> None:
        try:
            while self._queues.get(dest):
                items = self._queues.pop(dest)
                delay = 0.05
                while True:
                    try:
                        await self._peer(dest).deliver.remote([o.blob for o in items])
                        break
                    except Exception:
                        self._peers.pop(dest, None)  # restarting: look it up again
                        log.warning("shard %s: delivery to shard %s failed; retrying", self._index, dest)
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, 2.0)
                self._acked.extend(o.msg_id for o in items)
        finally:
            del self._senders[dest]

    def _peer(self, index: int) -> Any:
        """The shard host of shard ``index`` (looked up by name, so a restarted one is found)."""
        peer = self._peers.get(index)
        if peer is None:
            peer = self._peers[index] = ray.get_actor(actor_name(self._hub, index), namespace=NAMESPACE)
        return peer
