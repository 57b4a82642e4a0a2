"""A shard host's side of the client connections: what a ``TaskHub`` sends over a plain
framed connection (:mod:`runtime._wire`) instead of a Ray call.

A Ray call to a shard host costs one to a few milliseconds on a small machine; a frame on an
open connection a tenth of that. So a driver asks each host once (through Ray) where it
listens for clients, then sends its calls there: submits (start, raise, signal, terminate,
suspend, resume, rewind) and waits on the host's main loop, status reads on the loop of the
``reads`` concurrency group (as the Ray methods: a turn that blocks does not hold a read up).

The guarantees are those of the Ray methods, because the requests run the same code: a
submit is answered once its messages are committed (requests that arrive while a turn commits
join the next turn, one commit for all of them), a wait when the instance ended. A request
answers with the one reply shape of :mod:`runtime._wire`: ``(True, value)``, or
``(False, error)`` with the error that refused it (the client re-raises it as it is), each
encoded through :mod:`runtime._codec` so that user types travel.

When a connection drops with a request in flight, the client sends the request again through
the Ray method (see ``ClientLink``), flagged ``retried``: the host may have applied it already,
so from then on it looks every client start up under its ``start:`` key as a host Ray restarted
does (other client messages are always de-duplicated by their ids).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import ray

from ._codec import decode, encode
from ._messages import Message
from ._schema import InstanceRow
from ._shard_base import ShardBase
from ._shard_queries import READS
from ._wire import Reply, new_token, serve

#: one server per loop: (server, its loop, (host, port, token)), started on first ask
_Serving = asyncio.Task[tuple[asyncio.Server, asyncio.AbstractEventLoop, tuple[str, int, bytes]]]


class ShardClients(ShardBase):
    """Mixed into :class:`ShardHost`: the client connections' servers and requests."""

    _client_serving: _Serving | None = None
    _reads_serving: _Serving | None = None

    async def submit(
        self, messages: Sequence[Message], retried: bool = False, blobs: Sequence[bytes] | None = None
    ) -> None:
        raise NotImplementedError

    async def wait_row(self, instance_id: str, timeout: float | None) -> InstanceRow | None:
        raise NotImplementedError

    async def wait_start_row(self, instance_id: str, timeout: float | None) -> InstanceRow | None:
        raise NotImplementedError

    async def read_row(self, instance_id: str) -> InstanceRow | None:
        raise NotImplementedError

    async def _ready_to_read(self) -> None:
        raise NotImplementedError

    async def _read_status(
        self, instance_id: str, show_history: bool = False, show_history_output: bool = False,
        show_input: bool = True,
    ) -> Any:
        raise NotImplementedError

    async def client_address(self) -> tuple[str, int, bytes]:
        """Where a client sends submits and waits: (host, port, token); serving starts on the
        first ask."""
        await self._ensure_started()
        if self._client_serving is None:
            self._client_serving = asyncio.get_running_loop().create_task(_serve_on_loop(self._on_client_request))
        return (await asyncio.shield(self._client_serving))[2]

    @ray.method(concurrency_group=READS)
    async def client_read_address(self) -> tuple[str, int, bytes]:
        """Where a client sends status reads: (host, port, token), served on the ``reads``
        loop; serving starts on the first ask."""
        await self._ready_to_read()
        if self._reads_serving is None:
            self._reads_serving = asyncio.get_running_loop().create_task(_serve_on_loop(self._on_read_request))
        return (await asyncio.shield(self._reads_serving))[2]

    def _close_client_servers(self) -> None:
        """Stop accepting client connections (each server on its own loop)."""
        for serving in (self._client_serving, self._reads_serving):
            if serving is not None and serving.done() and not serving.cancelled() and serving.exception() is None:
                server, loop, _ = serving.result()
                loop.call_soon_threadsafe(server.close)

    async def _on_client_request(self, payload: tuple[str, tuple[Any, ...]]) -> bytes:
        """``("submit", (message blobs, retried))``, ``("wait", (id, timeout))`` or
        ``("wait_start", (id, timeout))``: the encoded value (an error raised goes back
        encoded, see :func:`_encode_error`). A wait answers with the instance's row as a plain
        tuple (``None`` on timeout), which the client turns into a status (:func:`row_status`):
        encoding a tuple of strings costs the host a fraction of a status record."""
        op, args = payload
        if op == "submit":
            blobs, retried = args
            await self.submit([Message.from_bytes(b) for b in blobs], retried, blobs)
            value: Any = None
        elif op == "wait":
            value = _plain(await self.wait_row(*args))
        elif op == "wait_start":
            value = _plain(await self.wait_start_row(*args))
        else:
            raise ValueError(f"unknown client request {op!r}")
        return encode(value, "reply")

    async def _on_read_request(self, payload: tuple[str, tuple[Any, ...]]) -> bytes:
        """``("status", (id, show_history, show_history_output, show_input))``: the encoded
        status; ``("row", (id,))``: the instance's row as a plain tuple, or ``None``."""
        op, args = payload
        if op == "row":
            return encode(_plain(await self.read_row(*args)), "reply")
        if op != "status":
            raise ValueError(f"unknown client read {op!r}")
        return encode(await self._read_status(*args), "reply")


def _plain(row: InstanceRow | None) -> tuple[Any, ...] | None:
    return None if row is None else tuple(row)


async def _serve_on_loop(
    handle: Any,
) -> tuple[asyncio.Server, asyncio.AbstractEventLoop, tuple[str, int, bytes]]:
    """A server of client requests on the running loop, with a fresh token."""
    token = new_token()
    server, (host, port) = await serve(token, handle, describe_error=_encode_error)
    return server, asyncio.get_running_loop(), (host, port, token)


def _encode_error(exc: Exception) -> bytes:
    """The error as the client re-raises it; one that cannot be encoded as a ``RuntimeError``
    naming it."""
    try:
        return encode(exc, "error")
    except Exception:
        return encode(RuntimeError(repr(exc)), "error")


def decode_reply(reply: Reply) -> Any:
    """The client's side of a reply (both halves encoded): its value, or its error raised as
    it is."""
    ok, blob = reply
    value = decode(blob)
    if not ok:
        raise value
    return value
