"""The warm worker: one long-lived activity worker per shard host, for light load.

A Ray call costs about 1.2 ms round trip on a small machine and a Ray task about 2.2 ms; a
short sequence of activities is mostly that. So each shard host keeps one worker actor
(``num_cpus=0``, on its node) and, once it is up, talks to it over a plain TCP connection:
a batch goes out as one length-prefixed frame and its outcomes come back as another, about
0.1 ms round trip. Ray still creates, places and restarts the worker and carries its address
and a random token (the worker unpickles nothing from a connection that has not sent the
token first).

The host sends it one small batch at a time, and only activities without Ray options, so
Ray's CPU accounting is bypassed by at most one small batch per shard host. If the
connection drops (the worker died), the batches in flight go to Ray tasks instead (activities
run at least once) and the host reconnects once Ray has restarted the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pickle
import secrets
import socket
import struct
import threading
from collections.abc import Callable, Sequence
from typing import Any

import ray

log = logging.getLogger("ray_durable.warm")

_HEADER = struct.Struct("!Q")
_TOKEN_BYTES = 16


class WarmWorkerLostError(ConnectionError):
    """The warm worker's connection dropped with a batch in flight (run it elsewhere)."""


def _frame(value: Any) -> bytes:
    payload = pickle.dumps(value, protocol=5)
    return _HEADER.pack(len(payload)) + payload


class WarmWorker:
    """The worker side (a Ray actor): serves batches from its host's connection.

    Each connection is served by its own thread, one batch after the other, with
    ``runtime._activities.run_batch`` (the same code a Ray task runs).
    """

    def __init__(self) -> None:
        self._token = secrets.token_bytes(_TOKEN_BYTES)
        self._server = socket.create_server((ray.util.get_node_ip_address(), 0))
        threading.Thread(target=self._accept, name="warm-worker-accept", daemon=True).start()

    def address(self) -> tuple[str, int, bytes]:
        """(host, port, token) to connect to."""
        host, port = self._server.getsockname()[:2]
        return host, port, self._token

    def _accept(self) -> None:
        while True:
            conn, _ = self._server.accept()
            threading.Thread(target=self._serve, args=(conn,), name="warm-worker", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        from ._activities import run_batch

        with conn, conn.makefile("rb") as stream:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if not secrets.compare_digest(stream.read(_TOKEN_BYTES), self._token):
                return
            while True:
                head = stream.read(_HEADER.size)
                if len(head) < _HEADER.size:
                    return
                request_id, registry_key, registry_blob, calls = pickle.loads(stream.read(_HEADER.unpack(head)[0]))
                conn.sendall(_frame((request_id, run_batch(registry_key, registry_blob, calls))))


_WarmWorkerActor = ray.remote(WarmWorker)


class WarmLane:
    """The host side: the worker actor, the connection to it, and the batches in flight."""

    def __init__(self, spawn: Callable[[Any], None]) -> None:
        self._spawn = spawn
        self._actor: Any = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[int, asyncio.Future[bytes]] = {}
        self._next_id = 0
        self._busy = False

    def start(self) -> None:
        """Create the worker on this node; the lane opens once it answers."""
        node = ray.get_runtime_context().get_node_id()
        self._actor = _WarmWorkerActor.options(
            num_cpus=0,
            memory=1,  # a request that asks for nothing ignores a soft node affinity
            max_restarts=-1,
            max_task_retries=-1,
            scheduling_strategy=ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(node, soft=True),
        ).remote()
        self._spawn(self._connect())

    def available(self) -> bool:
        """Whether a batch can go out now (connected and idle)."""
        return self._writer is not None and not self._busy

    def submit(
        self, registry_key: str, registry_blob: bytes, calls: Sequence[tuple[str, bytes]]
    ) -> asyncio.Future[bytes]:
        """Send one batch; the future gets the encoded outcomes, or :class:`WarmWorkerLostError`
        (internal: it never leaves the shard host)."""
        assert self._writer is not None
        self._next_id += 1
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[self._next_id] = future
        self._busy = True
        future.add_done_callback(self._idle)
        self._writer.write(_frame((self._next_id, registry_key, registry_blob, list(calls))))
        return future

    def _idle(self, _: asyncio.Future[bytes]) -> None:
        self._busy = False

    async def _connect(self) -> None:
        try:
            host, port, token = await self._actor.address.remote()
            reader, writer = await asyncio.open_connection(host, port)
        except Exception:  # no warm worker: Ray tasks do everything
            log.warning("activity warm worker unreachable; using Ray tasks only", exc_info=True)
            return
        with contextlib.suppress(OSError):
            writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        writer.write(token)
        self._writer = writer
        self._spawn(self._read(reader, writer))

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readexactly(_HEADER.size)
                request_id, outcomes = pickle.loads(await reader.readexactly(_HEADER.unpack(head)[0]))
                future = self._pending.pop(request_id, None)
                if future is not None and not future.done():
                    future.set_result(outcomes)
        except (asyncio.IncompleteReadError, OSError):
            pass
        # the worker died: what it was running goes elsewhere; reconnect once Ray restarted it
        self._writer = None
        writer.close()
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(WarmWorkerLostError("the warm worker died"))
        self._spawn(self._connect())
