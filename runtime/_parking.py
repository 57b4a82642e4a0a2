"""Messages a shard host holds until their due time: scheduled signals, scheduled starts, and
what arrives for an instance that has not started yet.

The durable copy of a parked message is its row in the shard's ``scheduled`` table, written in
the turn that parked it and deleted in the turn that applies it; this is the in-memory side:
the parked messages by due time, one event-loop timer for the earliest, and the due time of
each Pending instance's parked start. On a restart the host loads the rows back
(``ShardStore.load_scheduled``), so nothing parked is lost and nothing is applied early.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Callable, Iterable

from orchestrations import ExecutionStarted

from ._messages import Message


class Parking:
    """The parked messages of one shard host, released to ``release`` when due.

    Messages due at one time are released together, in the order they were parked, so a
    Pending instance's start comes before the events held behind it.
    """

    def __init__(self, release: Callable[[list[Message]], None]) -> None:
        self._release = release
        #: msg_id -> (its heap sequence number, the message)
        self._parked: dict[str, tuple[int, Message]] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._seq = 0
        self._of_instance: dict[str, set[str]] = {}
        self._starts: dict[str, float] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")

    def __len__(self) -> int:
        return len(self._parked)

    def add(self, messages: Iterable[Message]) -> None:
        """Hold committed parked ``messages`` (each with ``msg_id`` and ``due``) until due."""
        for msg in messages:
            assert msg.msg_id is not None and msg.due is not None
            self._seq += 1
            self._parked[msg.msg_id] = (self._seq, msg)
            heapq.heappush(self._heap, (msg.due, self._seq, msg.msg_id))
            self._of_instance.setdefault(msg.instance_id, set()).add(msg.msg_id)
            if isinstance(msg.event, ExecutionStarted):
                self._starts[msg.instance_id] = msg.due
        self._arm()

    def discard(self, msg_ids: Iterable[str]) -> None:
        """Forget parked messages whose rows were deleted (they are never released)."""
        for msg_id in msg_ids:
            entry = self._parked.pop(msg_id, None)
            if entry is not None:
                self._unindex(entry[1])

    def of_instance(self, instance_id: str) -> list[str]:
        """The ids of the messages parked for ``instance_id``."""
        return sorted(self._of_instance.get(instance_id, ()))

    def note_start(self, instance_id: str, due: float) -> None:
        """Record that ``instance_id`` is Pending until ``due`` (its start is being parked)."""
        self._starts[instance_id] = due

    def start_due(self, instance_id: str) -> float | None:
        """When the Pending instance ``instance_id`` starts, if its start is parked here."""
        return self._starts.get(instance_id)

    def forget_start(self, instance_id: str) -> None:
        """``instance_id`` is no longer Pending (it started, or was terminated)."""
        self._starts.pop(instance_id, None)

    def close(self) -> None:
        """Stop the timer (the rows stay; a restarted host loads them again)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._timer_at = None, float("inf")

    def _unindex(self, msg: Message) -> None:
        ids = self._of_instance.get(msg.instance_id)
        if ids is not None:
            ids.discard(msg.msg_id or "")
            if not ids:
                del self._of_instance[msg.instance_id]

    def _live(self, item: tuple[float, int, str]) -> bool:
        """Whether a heap item is the current entry of a message still parked."""
        entry = self._parked.get(item[2])
        return entry is not None and entry[0] == item[1]

    def _arm(self) -> None:
        """Have the timer fire at the earliest due time (sooner than it would now, if needed)."""
        while self._heap and not self._live(self._heap[0]):
            heapq.heappop(self._heap)  # discarded: dropped lazily
        if not self._heap or self._heap[0][0] >= self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = self._heap[0][0]
        delay = max(0.0, self._timer_at - time.time())
        self._timer = asyncio.get_running_loop().call_later(delay, self._fire)

    def _fire(self) -> None:
        """Release every message now due (never one before its time: the loop's clock and the
        wall clock may differ by a little, so what is not due yet waits for the next timer)."""
        self._timer, self._timer_at = None, float("inf")
        now = time.time()
        due: list[Message] = []
        while self._heap and self._heap[0][0] <= now:
            top = heapq.heappop(self._heap)
            if self._live(top):
                _, msg = self._parked.pop(top[2])
                self._unindex(msg)
                msg.parked = True
                due.append(msg)
        self._arm()
        if due:
            self._release(due)
