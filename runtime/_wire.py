"""Framed request/reply connections between the processes of one hub.

A Ray call costs about 1.2 ms round trip on a small machine (most of it in Ray's own
machinery), a message on an open TCP connection about 0.1 ms. So where two long-lived
processes of a hub talk a lot (a shard host and its warm worker, two shard hosts, a driver's
``TaskHub`` and a shard host), Ray
creates, places and restarts them and carries each one's address and a random token, and the
traffic itself goes over a plain connection: length-prefixed pickle frames, each request
``(request id, payload)`` answered by ``(request id, reply)``. A server unpickles nothing
from a connection that has not first sent its token. Both ends are the hub's own code.

Every server (the peer server and the client servers of :func:`serve`, the warm worker of
``runtime._warm``) answers with one shape, a :data:`Reply`: ``(True, value)``, or
``(False, error)`` when its handler raised (``error`` is what the server makes of the exception:
its ``repr`` unless it says otherwise, e.g. the client servers encode it to be raised again).

When a connection drops, every request in flight fails with :class:`ConnectionLostError`;
the caller decides what happens to it (the protocols above it are at-least-once with
de-duplication, so sending again is always safe).

A server listens on a port anyone on the network can reach, so what it accepts is bounded
(:class:`Limits`): a connection that has not sent its token within a few seconds is closed,
as is one that announces a frame larger than the limit (before reading it) or starts a frame
and does not finish it in time, and connections past a cap are closed at once. Between
frames a connection may stay idle for as long as it likes (a link between two shards does).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pickle
import secrets
import socket
import struct
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import ray

log = logging.getLogger("ray_durable.wire")
HEADER = struct.Struct("!Q")
TOKEN_BYTES = 16


class ConnectionLostError(ConnectionError):
    """The connection dropped with this request in flight (internal: never leaves a host)."""


class FrameTooLargeError(ConnectionError):
    """A peer announced a frame larger than the limit: the connection is closed unread."""


@dataclass(frozen=True, slots=True)
class Limits:
    """What a server accepts from a connection (see the module docstring)."""

    #: seconds from accepting a connection to having its token
    handshake_seconds: float = 5.0
    #: seconds from a frame's first byte to its last
    frame_seconds: float = 60.0
    #: the largest frame read; the real traffic is batches of messages and activity calls,
    #: whose payloads a hub keeps far below this (a batch that is not goes through Ray)
    max_frame_bytes: int = 256 * 2**20
    #: connections open at once: the real traffic is one per peer shard host (at most 255)
    #: and one per driver on each client server, and each costs a file descriptor (a process
    #: often may have 1024); a driver refused one uses Ray calls instead
    max_connections: int = 512


DEFAULT_LIMITS = Limits()

#: what every server answers a request with: ``(True, value)`` or ``(False, error)``
Reply = tuple[bool, Any]


def ok_reply(value: Any) -> Reply:
    """The reply of a request that was handled: its value."""
    return (True, value)


def error_reply(error: Any) -> Reply:
    """The reply of a request whose handler raised: what the server says of the error."""
    return (False, error)


def frame(value: Any) -> bytes:
    """``value`` as one length-prefixed frame."""
    payload = pickle.dumps(value, protocol=5)
    return HEADER.pack(len(payload)) + payload


async def read_frame(reader: asyncio.StreamReader) -> Any:
    """The next frame's value (``IncompleteReadError`` at the end of the stream), from a
    trusted peer (a server this process connected to)."""
    head = await reader.readexactly(HEADER.size)
    return pickle.loads(await reader.readexactly(HEADER.unpack(head)[0]))


async def read_bounded_frame(
    reader: asyncio.StreamReader, limits: Limits, transport: asyncio.WriteTransport
) -> Any:
    """The next frame's value, within ``limits``: the wait for its first byte is unbounded
    (an idle connection), the rest must arrive within ``limits.frame_seconds`` (else the
    ``transport`` is aborted, replies not yet written with it, and the read ends with
    ``IncompleteReadError``; a close would wait for those replies to leave, which a peer that
    reads nothing never lets happen, and the connection would keep its slot) and announce at
    most ``limits.max_frame_bytes`` (else :class:`FrameTooLargeError`, before any of it is
    read). The deadline is one timer handle, not ``asyncio.timeout``: this runs for every
    request a shard host serves, and a timeout context cost several times as much."""
    first = await reader.readexactly(1)
    deadline = asyncio.get_running_loop().call_later(limits.frame_seconds, transport.abort)
    try:
        size = HEADER.unpack(first + await reader.readexactly(HEADER.size - 1))[0]
        if size > limits.max_frame_bytes:
            raise FrameTooLargeError(f"a frame of {size} bytes announced; at most {limits.max_frame_bytes}")
        body = await reader.readexactly(size)
    finally:
        deadline.cancel()
    return pickle.loads(body)


def new_token() -> bytes:
    """A random token a client must present first."""
    return secrets.token_bytes(TOKEN_BYTES)


def node_ip() -> str:
    """The address of this Ray node (where servers listen)."""
    return str(ray.util.get_node_ip_address())


def _no_delay(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, AttributeError):
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def serve(
    token: bytes, handle: Callable[[Any], Awaitable[Any]], host: str | None = None,
    limits: Limits = DEFAULT_LIMITS, describe_error: Callable[[Exception], Any] = repr,
) -> tuple[asyncio.Server, tuple[str, int]]:
    """An asyncio server on ``host`` (default: this Ray node's address): each request's
    payload goes to ``handle`` and its :data:`Reply` is ``(True, result)`` or
    ``(False, describe_error(error))`` (requests of one connection are handled concurrently,
    replies go back as each finishes). What it accepts is bounded by ``limits``. Returns the
    server and its (host, port)."""
    open_connections = 0

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal open_connections
        if open_connections >= limits.max_connections:
            writer.close()
            return
        open_connections += 1
        _no_delay(writer)
        tasks: set[asyncio.Task[None]] = set()

        async def answer(request_id: int, payload: Any) -> None:
            try:
                reply = ok_reply(await handle(payload))
            except Exception as exc:
                reply = error_reply(describe_error(exc))
            if not writer.is_closing():  # a peer that left reads nothing (asyncio would log each write)
                with contextlib.suppress(OSError):
                    writer.write(frame((request_id, reply)))

        try:
            async with asyncio.timeout(limits.handshake_seconds):
                presented = await reader.readexactly(TOKEN_BYTES)
            if not secrets.compare_digest(presented, token):
                return
            while True:
                request_id, payload = await read_bounded_frame(reader, limits, writer.transport)
                task = asyncio.get_running_loop().create_task(answer(request_id, payload))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        except (asyncio.IncompleteReadError, OSError):  # TimeoutError and FrameTooLargeError too
            pass
        except Exception:  # a frame that is not ours (it had the token, though): drop the connection
            log.warning("closing a connection that sent a malformed frame", exc_info=True)
        finally:
            open_connections -= 1
            writer.close()

    server = await asyncio.start_server(on_connection, host or node_ip(), 0)
    host, port = server.sockets[0].getsockname()[:2]
    return server, (host, port)


class FrameClient:
    """One connection to a server of :func:`serve` (or the warm worker's): requests in,
    replies out, matched by id; a dropped connection fails what is in flight."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._next_id = 0
        self.closed = False
        self._reader_task = asyncio.get_running_loop().create_task(self._read(reader))

    @classmethod
    async def connect(cls, host: str, port: int, token: bytes) -> FrameClient:
        """Open a connection and present ``token``."""
        reader, writer = await asyncio.open_connection(host, port)
        _no_delay(writer)
        writer.write(token)
        return cls(reader, writer)

    def request(self, payload: Any) -> asyncio.Future[Any]:
        """Send ``payload``; the future gets the reply (or :class:`ConnectionLostError`)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.closed:
            future.set_exception(ConnectionLostError("connection closed"))
            return future
        self._next_id += 1
        self._pending[self._next_id] = future
        self._writer.write(frame((self._next_id, payload)))
        return future

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                request_id, reply = await read_frame(reader)
                future = self._pending.pop(request_id, None)
                if future is not None and not future.done():
                    future.set_result(reply)
        except (asyncio.IncompleteReadError, OSError):
            pass
        self.close()

    async def aclose(self) -> None:
        """:meth:`close`, then wait until the reading task has ended (nothing left pending)."""
        self.close()
        with contextlib.suppress(Exception):
            await self._reader_task

    def close(self) -> None:
        """Close the connection; requests in flight fail with :class:`ConnectionLostError`."""
        if self.closed:
            return
        self.closed = True
        self._writer.close()
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(ConnectionLostError("connection lost"))


class BlockingFrameClient:
    """One connection to a server of :func:`serve`, used by one thread at a time with plain
    blocking sockets: a request is written, and the caller's own thread reads its reply (one
    request in flight). It costs no hop to an event loop's thread and back, which is most of
    what a blocking call on a :class:`FrameClient` costs a driver. Any error (the connection
    dropped, or the caller was interrupted while waiting) closes it and raises
    :class:`ConnectionLostError`, or the interrupt itself."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._next_id = 0
        self.closed = False
        #: closes the socket when this client is let go unclosed (the thread that used it ended)
        self._release = weakref.finalize(self, sock.close)

    @classmethod
    def connect(cls, host: str, port: int, token: bytes, timeout: float) -> BlockingFrameClient:
        """Open a connection (within ``timeout`` seconds) and present ``token``."""
        sock = socket.create_connection((host, port), timeout=timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(token)
            sock.settimeout(None)
        except BaseException:
            sock.close()
            raise
        return cls(sock)

    def request(self, payload: Any) -> Any:
        """Send ``payload`` and return the reply."""
        if self.closed:
            raise ConnectionLostError("connection closed")
        self._next_id += 1
        try:
            self._sock.sendall(frame((self._next_id, payload)))
            request_id, reply = pickle.loads(self._read(HEADER.unpack(self._read(HEADER.size))[0]))
        except OSError as exc:
            self.close()
            raise ConnectionLostError(f"connection lost: {exc}") from None
        except BaseException:  # an interrupt: the reply may still come, unread by anyone
            self.close()
            raise
        if request_id != self._next_id:
            self.close()
            raise ConnectionLostError(f"reply to request {request_id} where {self._next_id} was awaited")
        return reply

    def _read(self, size: int) -> bytearray:
        buffer = bytearray(size)
        view, got = memoryview(buffer), 0
        while got < size:
            n = self._sock.recv_into(view[got:])
            if n == 0:
                raise ConnectionResetError("the server closed the connection")
            got += n
        return buffer

    def close(self) -> None:
        """Close the connection (again: nothing)."""
        if not self.closed:
            self.closed = True
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)  # wakes a thread waiting in recv
            with contextlib.suppress(OSError):
                self._release()
