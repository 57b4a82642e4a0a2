"""A driver's connections to the shard hosts: how ``TaskHub`` calls reach them cheaply.

A Ray actor call costs one to a few milliseconds on a small machine, several times a frame on
an open connection. So a ``TaskHub`` asks each shard host once, through Ray, where it listens
for clients (see :mod:`runtime._shard_clients`), and sends its submits, waits and status reads
there; a loop of ``start_new`` calls then costs about one group commit each, and many calls in
flight at once (the asyncio client) share the host's commits.

The ``*_async`` methods' connections live on one event loop in a daemon thread of the driver,
started on first use, and are awaited from the caller's loop. The blocking methods (a loop of
``start_new``) use a connection of the calling thread's own, with plain blocking sockets: a
hop to that loop's thread and back cost a driver about as much again as the call itself. So a
``TaskHub`` may be used from several threads and from asyncio code at once.

Ray stays the fallback, so nothing depends on the connection: a host whose address cannot be
asked or reached is called through Ray (a connection is tried again a second later), and a
request whose connection drops before its answer is sent again through Ray, flagged
``retried``, to the same or a restarted host. Sending again is safe: every client message
carries its id (and a start its execution id), by which a host applies it once.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar

import ray
from ray.exceptions import RayTaskError

from orchestrations import DurableError, DurableValueError

from ._messages import Message
from ._shard_clients import decode_reply
from ._shard_queries import row_status
from ._wire import BlockingFrameClient, ConnectionLostError, FrameClient

T = TypeVar("T")
#: one call to a shard host: (which of its servers, the request, or ``None`` if it must go
#: through Ray, the Ray call to make instead: ``fallback(retried)``, and what turns the
#: connection's answer into the Ray call's: some requests are answered in a cheaper form for
#: the host to encode, an instance's row rather than its status)
Call = tuple[str, Any, Callable[[bool], Coroutine[Any, Any, T]], Callable[[Any], T]]

#: which server of a host: the main loop's (submits, waits) or the reads loop's (status)
MAIN, READS = "main", "reads"
#: seconds before a connection that could not be opened is tried again (Ray meanwhile)
RETRY_SECONDS = 1.0
#: seconds to open a connection and present the token
CONNECT_SECONDS = 5.0
#: a submit whose messages encode to more than this goes through Ray (a frame is bounded)
MAX_FRAME_PAYLOAD = 64 * 2**20


def _same(value: Any) -> Any:
    return value


def unwrap(exc: RayTaskError) -> BaseException:
    """The library's own error a Ray call failed with, else the Ray error itself."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, DurableError) else exc


async def by_ray(ref: Any) -> Any:
    """Await a Ray call, re-raising the library's own errors unwrapped."""
    try:
        return await ref
    except RayTaskError as exc:
        error = unwrap(exc)
        if error is exc:
            raise
        raise error from None


class ClientLink:
    """The connections of one ``TaskHub`` to its shard hosts (``shards``: their actor handles,
    by index), on the link's own event loop."""

    def __init__(self, shards: Sequence[Any], hub: str) -> None:
        self._shards = shards
        self._hub = hub
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._conns: dict[tuple[str, int], FrameClient] = {}
        self._opening: dict[tuple[str, int], asyncio.Task[FrameClient | None]] = {}
        self._retry_at: dict[tuple[str, int], float] = {}
        self._closed = False
        #: each thread's blocking connections, by (server, shard); every one still held, to
        #: close them (a thread's go when it ends: the host keeps no connection for it)
        self._local = threading.local()
        self._blocking_conns: weakref.WeakSet[BlockingFrameClient] = weakref.WeakSet()
        #: each host's client servers' (host, port, token), as asked once through Ray
        self._addresses: dict[tuple[str, int], tuple[str, int, bytes]] = {}

    # -- from the caller's thread ------------------------------------------------------------------

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the link's loop and block until it is done."""
        return asyncio.run_coroutine_threadsafe(coro, self._running_loop(coro)).result()

    async def run_async(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the link's loop; await it from the caller's loop."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._running_loop(coro)))

    def submit_blocking(self, index: int, msgs: list[Message]) -> None:
        """:meth:`submit`, from the caller's thread, over its own connection."""
        self._blocking(index, *self._submit_call(index, msgs))

    def wait_blocking(self, index: int, method: str, instance_id: str, timeout: float | None) -> Any:
        """:meth:`wait`, from the caller's thread, over its own connection."""
        return self._blocking(index, *self._wait_call(index, method, instance_id, timeout))

    def status_blocking(self, index: int, instance_id: str, *flags: bool) -> Any:
        """:meth:`status`, from the caller's thread, over its own connection."""
        return self._blocking(index, *self._status_call(index, instance_id, *flags))

    def _blocking(
        self, index: int, kind: str, payload: Any, fallback: Callable[[bool], Coroutine[Any, Any, T]],
        answer: Callable[[Any], T],
    ) -> T:
        """:meth:`_request` from the caller's thread: ``payload`` over its own connection to
        shard ``index``'s ``kind`` server, else ``fallback(retried)`` through Ray on the link's
        loop (``retried`` if the connection dropped with the request in flight)."""
        conn = self._blocking_connection(index, kind) if payload is not None else None
        if conn is None:
            return self.run(fallback(False))
        try:
            reply = conn.request(payload)
        except ConnectionLostError:
            self._addresses.pop((kind, index), None)  # a host Ray restarted listens elsewhere
            return self.run(fallback(True))
        return answer(decode_reply(reply))

    def _blocking_connection(self, index: int, kind: str) -> BlockingFrameClient | None:
        """This thread's open connection to shard ``index``'s ``kind`` server, opened if need
        be; ``None`` while it cannot be (a second after a failed attempt)."""
        if self._closed:
            raise DurableValueError(f"task hub {self._hub!r} is closed")
        key = (kind, index)
        conns: dict[tuple[str, int], BlockingFrameClient] | None = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = {}
        conn = conns.get(key)
        if conn is not None and not conn.closed:
            return conn
        if time.monotonic() < self._retry_at.get(key, 0.0):
            return None
        try:
            address = self._addresses.get(key)
            if address is None:
                shard = self._shards[index]
                ask = shard.client_address if kind == MAIN else shard.client_read_address
                address = self._addresses[key] = tuple(ray.get(ask.remote()))  # type: ignore[assignment]
            host, port, token = address
            conn = BlockingFrameClient.connect(host, port, token, CONNECT_SECONDS)
        except Exception:  # the call that follows reports whatever is wrong with the host
            self._addresses.pop(key, None)
            self._retry_at[key] = time.monotonic() + RETRY_SECONDS
            return None
        conns[key] = conn
        with self._lock:
            self._blocking_conns.add(conn)
        return conn

    def close(self) -> None:
        """Close the connections and stop the loop (later calls raise); again: nothing."""
        with self._lock:
            self._closed, blocking = True, list(self._blocking_conns)
            self._blocking_conns = weakref.WeakSet()
        for conn in blocking:
            conn.close()
        with self._lock:
            loop, self._loop, thread = self._loop, None, self._thread
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._close_all(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        if not thread.is_alive():
            loop.close()

    def _running_loop(self, coro: Coroutine[Any, Any, Any]) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._closed:
                coro.close()
                raise DurableValueError(f"task hub {self._hub!r} is closed")
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name=f"durable-client-{self._hub}", daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    # -- on the link's loop ------------------------------------------------------------------------

    async def submit(self, index: int, msgs: list[Message]) -> None:
        """Send client messages to shard ``index``; returns once they are committed."""
        await self._request(index, *self._submit_call(index, msgs))

    async def wait(self, index: int, method: str, instance_id: str, timeout: float | None) -> Any:
        """Shard ``index``'s ``wait`` or ``wait_start`` (``method``) for an instance."""
        return await self._request(index, *self._wait_call(index, method, instance_id, timeout))

    async def status(self, index: int, instance_id: str, *flags: bool) -> Any:
        """Shard ``index``'s committed status of an instance (``get_status``'s flags)."""
        return await self._request(index, *self._status_call(index, instance_id, *flags))

    def _submit_call(self, index: int, msgs: list[Message]) -> Call[None]:
        blobs = [m.to_bytes() for m in msgs]
        shard = self._shards[index]
        payload = ("submit", (blobs, False)) if sum(len(b) for b in blobs) <= MAX_FRAME_PAYLOAD else None
        return MAIN, payload, lambda retried: by_ray(shard.submit.remote(msgs, retried)), _same

    def _wait_call(self, index: int, method: str, instance_id: str, timeout: float | None) -> Call[Any]:
        """The host answers a wait on the connection with the instance's row (see
        ``ShardClients._on_client_request``); the status is built here."""
        shard = self._shards[index]
        call = getattr(shard, method)
        return MAIN, (method, (instance_id, timeout)), lambda _: by_ray(call.remote(instance_id, timeout)), row_status

    def _status_call(
        self, index: int, instance_id: str, show_history: bool, show_history_output: bool, show_input: bool
    ) -> Call[Any]:
        """A status without history is built here from the instance's row (as a wait's)."""
        shard = self._shards[index]
        flags = (show_history, show_history_output, show_input)

        def fallback(_: bool) -> Coroutine[Any, Any, Any]:
            return by_ray(shard.get_status.remote(instance_id, *flags))

        if show_history:
            return READS, ("status", (instance_id, *flags)), fallback, _same
        return READS, ("row", (instance_id,)), fallback, lambda row: row_status(row, show_input)

    async def _request(
        self, index: int, kind: str, payload: Any, fallback: Callable[[bool], Awaitable[T]],
        answer: Callable[[Any], T],
    ) -> T:
        """``payload`` over the connection, else ``fallback(retried)`` through Ray (at once for
        a ``None`` payload: too large for a frame)."""
        conn = await self._connection(index, kind) if payload is not None else None
        if conn is None:
            return await fallback(False)
        try:
            reply = await conn.request(payload)
        except ConnectionLostError:
            return await fallback(True)
        return answer(decode_reply(reply))

    async def _connection(self, index: int, kind: str) -> FrameClient | None:
        """The open connection to shard ``index``'s ``kind`` server, opened if need be;
        ``None`` while it cannot be (try Ray)."""
        key = (kind, index)
        conn = self._conns.get(key)
        if conn is not None and not conn.closed:
            return conn
        if time.monotonic() < self._retry_at.get(key, 0.0):
            return None
        opening = self._opening.get(key)
        if opening is None:
            opening = asyncio.get_running_loop().create_task(self._open(key))
            self._opening[key] = opening
        return await asyncio.shield(opening)

    async def _open(self, key: tuple[str, int]) -> FrameClient | None:
        kind, index = key
        shard = self._shards[index]
        try:
            ask = shard.client_address if kind == MAIN else shard.client_read_address
            host, port, token = await ask.remote()
            conn: FrameClient | None = await asyncio.wait_for(FrameClient.connect(host, port, token), CONNECT_SECONDS)
        except Exception:  # the Ray call that follows reports whatever is wrong with the host
            self._retry_at[key] = time.monotonic() + RETRY_SECONDS
            conn = None
        finally:
            del self._opening[key]
        if conn is not None:
            old = self._conns.get(key)
            if old is not None:
                old.close()
            self._conns[key] = conn
        return conn

    async def _close_all(self) -> None:
        conns, self._conns = list(self._conns.values()), {}
        await asyncio.gather(*(conn.aclose() for conn in conns))
