"""How batches between shard hosts are fenced by their sender's generation (``runtime._delivery``).

A host lost with its node, or paused past its lease, may still have a batch on the wire or in
its queue when the shard's new owner (a newer generation, restored from the replica) has sent
the same messages again, had them acknowledged and told the receiver to forget their ids. Were
the old batch taken then, its messages would be applied twice. So a receiver refuses a batch
older than the newest it had from that shard, and a sender sends only while its lease is sound.
Without Ray: the courier's connection is a recorder.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from orchestrations import EventRaised, LeaseLostError
from runtime._delivery import Courier, Outbound, SenderGenerations
from runtime._messages import Message
from runtime._shard import ShardHost
from runtime._shard_base import ShardConfig

from .helpers import until

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _out(dest: int, msg_id: str) -> Outbound:
    msg = Message("i1", EventRaised(NOW, "go", None), msg_id=msg_id)
    return Outbound(msg_id, dest, msg, msg.to_bytes())


def test_a_batch_older_than_the_newest_of_its_shard_is_refused_naming_both_generations():
    senders = SenderGenerations("hub", 0)
    senders.check(None)  # a caller that says nothing (an older client of ``deliver``)
    senders.check((1, 2))
    senders.check((1, 2))  # the same owner again
    senders.check((2, 1))  # another shard is counted apart
    with pytest.raises(LeaseLostError, match=r"generation 1 of shard 1 .* shard 0 has had batches of generation 2"):
        senders.check((1, 1))
    senders.check((1, 3))  # a newer owner still
    with pytest.raises(LeaseLostError):
        senders.check((1, 2))


def test_a_host_refuses_a_stale_batch_before_it_takes_any_of_it(tmp_path):
    host = ShardHost(ShardConfig(hub="unit", index=0, num_shards=2, path=str(tmp_path / "shard-00.sqlite")))
    host._courier.senders.check((1, 2))
    with pytest.raises(LeaseLostError):
        asyncio.run(host._on_peer_batch(([_out(0, "m-1").blob], ["m-0"], (1, 1))))
    assert host._forget_delivered == [] and host._mailbox == []  # nothing forgotten, nothing queued
    with pytest.raises(LeaseLostError):
        asyncio.run(host.deliver([_out(0, "m-1").blob], ["m-0"], (1, 1)))  # the Ray path too
    assert host._forget_delivered == [] and host._mailbox == []


class _Link:
    """Stands in for the connection to shard 1's host (``runtime._wire.FrameClient``): records
    each request's payload and answers that it was committed."""

    closed = False

    def __init__(self) -> None:
        self.payloads: list[object] = []

    async def request(self, payload: object) -> tuple[bool, None]:
        self.payloads.append(payload)
        return True, None

    def close(self) -> None:
        self.closed = True


def test_a_courier_sends_only_while_it_may_and_stamps_its_shard_and_generation():
    async def scenario() -> None:
        courier = Courier("hub", 0, 2, lambda msg: None)
        link = courier._links[1] = _Link()  # type: ignore[assignment]
        courier.generation, sound = 3, False
        courier.may_send = lambda: sound
        courier.acked_deleted([(1, "m-0")])
        out = _out(1, "m-1")
        courier.deliver([out])
        await asyncio.sleep(0.2)
        assert link.payloads == []  # held while the lease is not sound
        sound = True
        await until(lambda: link.payloads)
        assert link.payloads == [([out.blob], ["m-0"], (0, 3))]
        assert courier.take_acked() == [(1, "m-1")]

    asyncio.run(scenario())
