"""How a shard host's messages reach other shards: the outbox, after the commit.

A message gets a unique id and is encoded once, for its outbox row and for its receiver. One
sender task per destination shard has one batch in flight at a time and puts what queued
meanwhile in the next one (fewer round trips under load, FIFO per destination). Batches travel
on a connection to the receiving host (``runtime._wire``; Ray carries its address), which
costs a tenth of a Ray call. A message is acknowledged (its
outbox row deleted in a later turn) once the receiver has committed it; until then it is sent
again after a restart, and the receiver drops duplicates by id. Once the deletion of its outbox
row is committed (with ``durability="replicated"``: and replicated, so that no node's loss can
bring the row back), the sender can never send the message again: the next batch to that
receiver carries its id in a "forget" list, and the receiver deletes its ``delivered`` record
(which would otherwise grow by one row per message, for ever).

Each batch carries its sender's shard and generation (its lease's, with a replica; 0 without).
A receiver refuses a batch of a generation older than the newest it has had from that shard:
a batch a host lost with its node had put on the wire (or queued, if the node was only paused)
must not arrive after the new owner's, whose forget ids may have ended its duplicate check.
With a replica, a batch leaves only while the sender's lease is sound. A receiver keeps the
generations in memory: one Ray restarted would take a stale batch that reached it afterwards
(its sender must then have outlived both the takeover and that restart).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import ray

from orchestrations import LeaseLostError
from orchestrations._ids import shard_of

from ._messages import Message
from ._wire import DEFAULT_LIMITS, FrameClient

log = logging.getLogger("ray_durable.delivery")

NAMESPACE = "ray_durable"
#: how often a courier held by an unsound lease looks again (renewals come every third of it)
HOLD_POLL_SECONDS = 0.05


def actor_name(hub: str, index: int) -> str:
    """The Ray actor name of a hub's shard host."""
    return f"{hub}:shard-{index:02d}"


@dataclass(slots=True)
class Outbound:
    """A message leaving through the outbox: encoded once, for its row and for its receiver,
    and only if it needs to be. A message between two records of one shard is applied in the
    same turn, from memory (see ``runtime._shard_turn``), and never encoded unless the turn
    runs out of rounds and it goes to the outbox after all."""

    msg_id: str
    dest: int
    msg: Message
    encoded: bytes | None = None

    @property
    def blob(self) -> bytes:
        """The message encoded (:meth:`Message.to_bytes`), on first use."""
        if self.encoded is None:
            self.encoded = self.msg.to_bytes()
        return self.encoded

    def encode(self) -> Outbound:
        """Encode the message now (raising what encoding raises); returns this message."""
        _ = self.blob  # the property encodes it
        return self


class SenderGenerations:
    """What a receiving host knows of its senders: the newest generation of each shard's
    batches. :meth:`check` refuses an older one (see the module's docstring)."""

    def __init__(self, hub: str, index: int) -> None:
        self._hub, self._index = hub, index
        self._newest: dict[int, int] = {}

    def check(self, sender: tuple[int, int] | None) -> None:
        """Note ``sender`` (shard, generation) of a batch; raise :class:`LeaseLostError` if
        that shard has had a newer owner's batches here."""
        if sender is None:
            return
        index, generation = sender
        newest = self._newest.get(index, 0)
        if generation < newest:
            raise LeaseLostError(
                self._hub, index, generation, f"shard {self._index} has had batches of generation {newest}"
            )
        self._newest[index] = generation


class Courier:
    """Delivers one shard host's outbox; messages to itself go straight to its own mailbox."""

    def __init__(self, hub: str, index: int, num_shards: int, to_self: Callable[[Message], None]) -> None:
        self._hub, self._index, self._num_shards = hub, index, num_shards
        self._to_self = to_self
        self._peers: dict[int, Any] = {}
        self._links: dict[int, FrameClient] = {}
        self._queues: dict[int, list[Outbound]] = {}
        self._senders: dict[int, asyncio.Task[None]] = {}
        #: (destination, message id) of messages their receivers committed
        self._acked: list[tuple[int, str]] = []
        #: per destination: ids whose outbox rows are deleted (the receiver may forget them)
        self._forget: dict[int, list[str]] = {}
        #: message ids: unique per host process (a random prefix) and cheap (a counter)
        self._prefix = uuid.uuid4().hex[:16] + "-"
        self._counter = 0
        #: this owner's generation, stamped on every batch (see the module's docstring)
        self.generation = 0
        #: whether a batch may leave now (with a replica: while the lease is sound)
        self.may_send: Callable[[], bool] = _always
        #: of the batches this host receives: the newest generation of each sender
        self.senders = SenderGenerations(hub, index)

    def prepare(self, msg: Message) -> Outbound:
        """Give ``msg`` a unique id and its destination shard (encoded when first needed, see
        :attr:`Outbound.blob`)."""
        self._counter += 1
        msg.msg_id = f"{self._prefix}{self._counter:x}"
        return Outbound(msg.msg_id, shard_of(msg.instance_id, self._num_shards), msg)

    def take_acked(self) -> list[tuple[int, str]]:
        """(destination, id) of the messages their receivers have committed (their outbox rows
        can go); call :meth:`acked_deleted` once that deletion is committed and may be told
        (with a replica: released, see ``ShardTurns._after_commit``)."""
        acked, self._acked = self._acked, []
        return acked

    def give_back_acked(self, acked: list[tuple[int, str]]) -> None:
        """What :meth:`take_acked` gave to a turn whose commit failed: the next turn takes it."""
        self._acked[:0] = acked

    def acked_deleted(self, acked: list[tuple[int, str]]) -> None:
        """The outbox rows of ``acked`` are deleted (committed): tell their receivers, with the
        next batch to each, that they may forget these ids."""
        for dest, msg_id in acked:
            self._forget.setdefault(dest, []).append(msg_id)

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
                forget = self._forget.pop(dest, [])
                delay = 0.05
                while True:
                    if not self.may_send():  # a late renewal: held until the lease is sound
                        await asyncio.sleep(HOLD_POLL_SECONDS)
                        continue
                    try:
                        await self._send(dest, [o.blob for o in items], forget)
                        break
                    except Exception:
                        self._peers.pop(dest, None)  # restarting: look it up again
                        link = self._links.pop(dest, None)
                        if link is not None:
                            link.close()
                        log.warning("shard %s: delivery to shard %s failed; retrying", self._index, dest)
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, 2.0)
                self._acked.extend((dest, o.msg_id) for o in items)
        finally:
            del self._senders[dest]

    async def _send(self, dest: int, blobs: list[bytes], forget: list[str]) -> None:
        """Hand ``blobs`` (and the ids it may ``forget``) to shard ``dest``; returns once it has
        committed them.

        Over the connection to that host (see ``runtime._wire``), opened on first use with the
        address and token its actor gives; over a Ray call if it cannot be opened, or if the
        batch is too large for one frame.
        """
        sender = (self._index, self.generation)
        if sum(map(len, blobs)) > DEFAULT_LIMITS.max_frame_bytes // 2:  # the receiver would close a frame this large
            await self._peer(dest).deliver.remote(blobs, forget, sender)
            return
        link = self._links.get(dest)
        if link is None or link.closed:
            host, port, token = await self._peer(dest).peer_address.remote()
            try:
                link = self._links[dest] = await FrameClient.connect(host, port, token)
            except OSError:
                log.warning("shard %s: no connection to shard %s; delivering through Ray", self._index, dest)
                await self._peer(dest).deliver.remote(blobs, forget, sender)
                return
        ok, error = await link.request((blobs, forget, sender))
        if not ok:
            raise RuntimeError(f"shard {dest} refused a delivery: {error}")

    def close(self) -> None:
        """Close the connections to other shard hosts."""
        for link in self._links.values():
            link.close()
        self._links.clear()

    def _peer(self, index: int) -> Any:
        """The shard host of shard ``index`` (looked up by name, so a restarted one is found)."""
        peer = self._peers.get(index)
        if peer is None:
            peer = self._peers[index] = ray.get_actor(actor_name(self._hub, index), namespace=NAMESPACE)
        return peer


def _always() -> bool:
    return True
