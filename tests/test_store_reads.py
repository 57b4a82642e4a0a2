"""Reads of a shard file see every commit made before them, however many reads are in flight
on the reader connection at once (no Ray: a shard host on a real SQLite file, as in
``test_shard_turns``).

A read that runs its statement in one call on aiosqlite's thread and fetches in another
leaves a statement open in between; with many reads interleaved, one is nearly always open,
the connection's WAL snapshot never ends, and it stops seeing later commits. Under 1,000
concurrent ``start_new_async`` + ``wait_for_completion_async`` a wait so answered "no
orchestration instance" for a start committed and acknowledged before it (found by the
benchmark, and the likely cause of a README example failing once in CI).
"""

from __future__ import annotations

import asyncio

from .test_shard_turns import _open, _start, _turn


def test_a_committed_start_is_visible_to_a_read_while_many_other_reads_are_in_flight(tmp_path):
    async def scenario() -> list[str]:
        host = await _open(tmp_path / "shard-00.sqlite")
        stop = asyncio.Event()

        async def reading() -> None:  # status reads and waits of other callers, all the time
            while not stop.is_set():
                await host._store.get_instance("someone-else")
                await host._store.query_instances(None, None, None, None, 5)

        readers = [asyncio.create_task(reading()) for _ in range(20)]
        missing = []
        try:
            for i in range(200):
                iid = f"s{i}"
                assert await _turn(host, _start(iid, "unit_approval")) == [None]  # committed, acknowledged
                if await host._store.get_instance(iid) is None:
                    missing.append(iid)
        finally:
            stop.set()
            await asyncio.gather(*readers)
            await host.close()
        return missing

    assert asyncio.run(scenario()) == []
