"""The warm worker: one long-lived activity worker per shard host, for light load.

A Ray task costs about 2.2 ms round trip on a small machine and a short sequence of
activities is mostly that. So each shard host keeps one worker actor (``num_cpus=0``, on its
node) and, once it is up, sends it batches over a plain connection (see ``runtime._wire``:
~0.1 ms round trip). Ray creates, places and restarts the worker and carries its address and
token.

The host creates its worker with the first batch the worker could take, not before: a host
that runs no activity starts no process, and opening a hub waits for none.

The host sends it one small batch at a time, and only activities without Ray options, so
Ray's CPU accounting is bypassed by at most one small batch per shard host. If the
connection drops (the worker died), the batch in flight goes to a Ray task instead
(activities run at least once) and the host reconnects once Ray has restarted the worker.

Until the worker first answers (its process takes ~0.5-1 s to start, more on a busy machine),
a host that Ray did not restart runs those small batches itself, one at a time, on a thread of
its own (the code a Ray task would run, with the activities it already holds), rather than on
a Ray task that would wait for yet another worker process to start: a hub's first activities
run at once. A restarted host does not (the crash may have come from an activity), nor one
whose worker never comes up (Ray tasks take its batches, as before).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pickle
import secrets
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import ray

from ._batch import BatchCall, run_batch
from ._wire import (
    HEADER,
    TOKEN_BYTES,
    ConnectionLostError,
    FrameClient,
    FrameTooLargeError,
    Limits,
    Reply,
    frame,
    new_token,
    node_ip,
    ok_reply,
)

log = logging.getLogger("ray_durable.warm")


#: one host connects; a few more at once cost a thread each and are allowed for a host that
#: reconnects before its old connection is seen closed
WARM_LIMITS = Limits(max_connections=8)


class WarmWorker:
    """The worker side (a Ray actor): serves batches from its host's connection, one after
    the other, with ``runtime._batch.run_batch`` (the code a Ray task runs). Threads,
    not asyncio: an activity may block.

    Its port is reachable by anyone, so it holds what it accepts to ``limits`` as
    ``runtime._wire.serve`` does (a handshake deadline, a frame size limit, a deadline for a
    frame once started) and serves at most ``limits.max_connections`` connections at once,
    one thread each: its host needs one.
    """

    def __init__(self, host: str | None = None, limits: Limits = WARM_LIMITS) -> None:
        self._token = new_token()
        self._limits = limits
        self._slots = threading.BoundedSemaphore(limits.max_connections)
        self._server = socket.create_server((host or node_ip(), 0))
        threading.Thread(target=self._accept, name="warm-worker-accept", daemon=True).start()

    def address(self) -> tuple[str, int, bytes]:
        """(host, port, token) to connect to."""
        host, port = self._server.getsockname()[:2]
        return host, port, self._token

    def _accept(self) -> None:
        while True:
            conn, _ = self._server.accept()
            if not self._slots.acquire(blocking=False):
                conn.close()  # past the cap: closed at once, no thread
                continue
            threading.Thread(target=self._serve_one, args=(conn,), name="warm-worker", daemon=True).start()

    def _serve_one(self, conn: socket.socket) -> None:
        """Serve one connection; its slot is free again before the peer sees it closed, so a
        peer that reconnects at once is not refused for its own old connection."""
        try:
            self._serve(conn)
        except OSError:  # closed, timed out (socket.timeout) or a frame too large (FrameTooLargeError)
            pass
        except Exception:  # a frame that is not ours (it had the token, though)
            log.warning("warm worker: closing a connection that sent a malformed frame", exc_info=True)
        finally:
            self._slots.release()
            conn.close()

    def _serve(self, conn: socket.socket) -> None:
        limits = self._limits
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.settimeout(limits.handshake_seconds)
        buffer = bytearray()
        _fill(conn, buffer, TOKEN_BYTES)
        if not secrets.compare_digest(bytes(buffer[:TOKEN_BYTES]), self._token):
            return
        del buffer[:TOKEN_BYTES]
        conn.settimeout(None)  # idle between batches for as long as the host likes
        while True:
            body = _next_frame(conn, buffer, limits)
            if body is None:
                return
            request_id, (registry_key, registry_blob, calls, *setup) = pickle.loads(body)  # setup: tracing_setup
            conn.sendall(frame((request_id, ok_reply(_timed_batch(registry_key, registry_blob, calls, *setup)))))


def _timed_batch(
    registry_key: str, registry_blob: bytes, calls: Sequence[BatchCall], tracing_setup: Any = None
) -> tuple[bytes, float]:
    """``run_batch``'s encoded outcomes and the seconds it took (the host tells quick
    activities by them: see ``runtime._activities.QUICK_SECONDS``)."""
    began = time.perf_counter()
    outcomes = run_batch(registry_key, registry_blob, calls, tracing_setup)
    return outcomes, time.perf_counter() - began


def _fill(conn: socket.socket, buffer: bytearray, size: int) -> None:
    """Receive into ``buffer`` until it holds ``size`` bytes, keeping only what arrives (a
    peer that announces a large frame and sends little costs little); ``ConnectionError`` if
    the connection ends first."""
    while len(buffer) < size:
        chunk = conn.recv(min(size - len(buffer), 1 << 20))
        if not chunk:
            raise ConnectionError("connection closed in the middle of a frame")
        buffer += chunk


def _next_frame(conn: socket.socket, buffer: bytearray, limits: Limits) -> bytes | None:
    """The next frame's body (``None`` at the end of the stream). The wait for its first bytes
    is unbounded; the rest, if one receive did not bring it all, must arrive within
    ``limits.frame_seconds``; a frame over ``limits.max_frame_bytes`` is refused unread. A
    whole frame in one receive (the usual batch) costs one system call, as before limits."""
    if not buffer:
        chunk = conn.recv(1 << 16)
        if not chunk:
            return None
        buffer += chunk
    whole = len(buffer) >= HEADER.size and len(buffer) >= HEADER.size + HEADER.unpack_from(buffer)[0]
    if not whole:
        conn.settimeout(limits.frame_seconds)
        _fill(conn, buffer, HEADER.size)
    size = HEADER.unpack_from(buffer)[0]
    if size > limits.max_frame_bytes:
        raise FrameTooLargeError(f"a frame of {size} bytes announced; at most {limits.max_frame_bytes}")
    if not whole:
        _fill(conn, buffer, HEADER.size + size)
        conn.settimeout(None)
    body = bytes(buffer[HEADER.size : HEADER.size + size])
    del buffer[: HEADER.size + size]
    return body


_WarmWorkerActor = ray.remote(WarmWorker)


class WarmLane:
    """The host side: the worker actor, the connection to it, and whether it is busy."""

    def __init__(self, spawn: Callable[[Any], None]) -> None:
        self._spawn = spawn
        self._actor: Any = None
        self._client: FrameClient | None = None
        self._busy = False
        #: the worker was created and has not answered yet: small batches run in this process
        self._run_here = False
        self._here_busy = False

    def start(self, run_here_meanwhile: bool = True) -> None:
        """Create the worker on this node, once per host process; the lane opens once it
        answers (Ray restarts the worker if it dies). Until then, with ``run_here_meanwhile``,
        the lane runs its batches in this process (see the module docstring)."""
        if self._actor is not None:
            return
        self._run_here = run_here_meanwhile
        self._actor = self._create_worker()
        self._spawn(self._connect())

    @staticmethod
    def _create_worker() -> Any:
        """The worker actor, on this node."""
        node = ray.get_runtime_context().get_node_id()
        return _WarmWorkerActor.options(
            num_cpus=0,
            memory=1,  # a request that asks for nothing ignores a soft node affinity
            max_restarts=-1,
            max_task_retries=-1,
            scheduling_strategy=ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(node, soft=True),
        ).remote()

    @property
    def connected(self) -> bool:
        """Whether the worker is up and this host connected to it."""
        return self._client is not None and not self._client.closed

    def available(self) -> bool:
        """Whether a batch can go out now (connected and idle, or still starting and running
        nothing here)."""
        if self._client is not None and not self._client.closed:
            return not self._busy
        return self._run_here and not self._here_busy

    def submit(
        self, registry_key: str, registry_blob: bytes, calls: Sequence[BatchCall], tracing_setup: Any = None
    ) -> asyncio.Future[Any]:
        """Send one batch; the future gets the encoded outcomes (what a Ray task returns) and
        the seconds the worker took to run them, or
        ``ConnectionLostError`` if the worker died (then the lane reconnects) or, for a batch
        run here, if it did not finish normally (a Ray task runs it again)."""
        if self._client is None or self._client.closed:
            return self._submit_here(registry_key, registry_blob, calls, tracing_setup)
        self._busy = True
        reply = self._client.request((registry_key, registry_blob, list(calls), tracing_setup))
        reply.add_done_callback(self._done)
        return _value_of(reply)

    def _done(self, future: asyncio.Future[Any]) -> None:
        self._busy = False
        if future.cancelled() or future.exception() is not None:
            self._client = None
            self._spawn(self._connect())

    def _submit_here(
        self, registry_key: str, registry_blob: bytes, calls: Sequence[BatchCall], tracing_setup: Any = None
    ) -> asyncio.Future[Any]:
        """Run one batch on a thread of this process (the worker is still starting)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._here_busy = True

        def settle(result: Any, error: BaseException | None) -> None:
            self._here_busy = False
            if not future.done():
                if error is None:
                    future.set_result(result)
                else:
                    future.set_exception(error)

        def run() -> None:
            result, error = None, None
            try:
                result = _timed_batch(registry_key, registry_blob, list(calls), tracing_setup)
            except BaseException as exc:  # sys.exit in an activity, or a bug: a Ray task runs it again
                error = ConnectionLostError(f"a batch run in the shard host did not finish: {exc!r}")
            with contextlib.suppress(RuntimeError):  # the host closed its loop meanwhile
                loop.call_soon_threadsafe(settle, result, error)

        threading.Thread(target=run, name="warm-start-up", daemon=True).start()
        return future

    async def _connect(self) -> None:
        try:
            host, port, token = await self._actor.address.remote()
            self._client = await FrameClient.connect(host, port, token)
        except Exception:  # no warm worker: Ray tasks do everything
            log.warning("activity warm worker unreachable; using Ray tasks only", exc_info=True)
        finally:
            self._run_here = False  # from now on the worker, or Ray tasks, run every batch


def _value_of(reply: asyncio.Future[Reply]) -> asyncio.Future[Any]:
    """A future of the value of the worker's reply to a batch (the encoded outcomes and the
    seconds they took); it
    fails as ``reply`` does (``ConnectionLostError``), or with ``ConnectionLostError`` if the
    worker answered that it could not run the batch (a Ray task runs it again)."""
    value: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def settle(done: asyncio.Future[Reply]) -> None:
        if value.done():
            return
        if done.cancelled():
            value.cancel()
        elif (error := done.exception()) is not None:
            value.set_exception(error)
        else:
            ok, result = done.result()
            if ok:
                value.set_result(result)
            else:
                value.set_exception(ConnectionLostError(f"the warm worker could not run a batch: {result}"))

    reply.add_done_callback(settle)
    return value
