"""The framed connections of runtime._wire, on one event loop (no Ray cluster needed)."""

from __future__ import annotations

import asyncio
import pickle
import socket
import threading
from dataclasses import replace

import pytest

from orchestrations import Registry
from runtime._codec import decode, dump_value, encode
from runtime._warm import WarmWorker
from runtime._wire import (
    HEADER,
    BlockingFrameClient,
    ConnectionLostError,
    FrameClient,
    Limits,
    frame,
    new_token,
    serve,
)

from .helpers import until, wait_until


def run(coro):
    return asyncio.run(coro)


async def _echo_server(token: bytes, handle=None, started: asyncio.Event | None = None):
    async def default(payload):
        if payload == "boom":
            raise ValueError("bad payload")
        if payload == "never":  # a request that is being handled and never answered
            if started is not None:
                started.set()
            await asyncio.Event().wait()
        return ("echo", payload)

    return await serve(token, handle or default, host="127.0.0.1")


def test_requests_get_their_own_replies():
    async def main():
        token = new_token()
        server, (host, port) = await _echo_server(token)
        client = await FrameClient.connect(host, port, token)
        replies = await asyncio.gather(*(client.request(i) for i in range(50)))
        client.close()
        server.close()
        return replies

    assert run(main()) == [(True, ("echo", i)) for i in range(50)]


def test_a_failing_handler_is_a_reply_not_a_dropped_connection():
    async def main():
        token = new_token()
        server, (host, port) = await _echo_server(token)
        client = await FrameClient.connect(host, port, token)
        bad = await client.request("boom")
        good = await client.request(1)
        server.close()
        client.close()
        return bad, good

    bad, good = run(main())
    assert bad[0] is False and "bad payload" in bad[1]
    assert good == (True, ("echo", 1))


def test_a_wrong_token_is_refused_before_anything_is_read():
    seen = []

    async def handle(payload):
        seen.append(payload)
        return None

    async def main():
        server, (host, port) = await _echo_server(new_token(), handle)
        client = await FrameClient.connect(host, port, new_token())
        with pytest.raises(ConnectionLostError):
            await asyncio.wait_for(client.request("sneaky"), 10)
        server.close()

    run(main())
    assert seen == []


def test_a_lost_connection_fails_what_is_in_flight():
    async def main():
        token, started = new_token(), asyncio.Event()
        server, (host, port) = await _echo_server(token, started=started)
        client = await FrameClient.connect(host, port, token)
        pending = client.request("never")
        await asyncio.wait_for(started.wait(), 10)  # the server is handling it
        client._writer.transport.abort()  # the peer's process died, as far as this side can tell
        with pytest.raises(ConnectionLostError):
            await asyncio.wait_for(pending, 10)
        assert client.closed
        with pytest.raises(ConnectionLostError):
            await client.request(1)
        server.close()

    run(main())


def test_a_blocking_client_gets_each_reply_in_its_own_thread():
    async def main():
        token = new_token()
        server, (host, port) = await _echo_server(token)

        def calls() -> list:
            client = BlockingFrameClient.connect(host, port, token, 5.0)
            try:
                return [client.request(i) for i in range(3)] + [client.request("boom")]
            finally:
                client.close()

        replies = await asyncio.to_thread(calls)
        assert replies[:3] == [(True, ("echo", i)) for i in range(3)]
        assert replies[3][0] is False and "bad payload" in replies[3][1]
        server.close()

    run(main())


def test_a_blocking_request_in_flight_fails_when_its_connection_drops_or_is_closed():
    async def main():
        token, started = new_token(), asyncio.Event()
        server, (host, port) = await _echo_server(token, started=started)
        client = await asyncio.to_thread(BlockingFrameClient.connect, host, port, token, 5.0)
        waiting = asyncio.ensure_future(asyncio.to_thread(client.request, "never"))
        await asyncio.wait_for(started.wait(), 10)  # the server is handling it
        client.close()  # from another thread: wakes the one waiting for the reply
        with pytest.raises(ConnectionLostError):
            await asyncio.wait_for(waiting, 10)
        with pytest.raises(ConnectionLostError):
            client.request(1)
        server.close()

    run(main())


def test_a_blocking_request_fails_when_the_server_closes_the_connection():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        host, port = listener.getsockname()[:2]
        client = BlockingFrameClient.connect(host, port, new_token(), 5.0)
        accepted, _ = listener.accept()
        accepted.close()  # a host that died
        with pytest.raises(ConnectionLostError):
            client.request("anything")
        assert client.closed


def test_replies_to_a_client_that_left_are_not_written(caplog):
    """A driver that exits with waits in flight: the host drops their replies quietly (asyncio
    logs "socket.send() raised exception." for each write after the fifth into a lost
    connection, which once buried a README example's traceback in CI)."""

    async def main():
        token, release, answered = new_token(), asyncio.Event(), []

        async def slow(payload):
            if payload == "back":  # the probe of _connect_when_admitted
                return payload
            await release.wait()
            answered.append(payload)
            return payload

        server, (host, port) = await serve(token, slow, host="127.0.0.1", limits=Limits(max_connections=1))
        client = await FrameClient.connect(host, port, token)
        pending = [client.request(i) for i in range(20)]
        await client.aclose()
        await asyncio.gather(*pending, return_exceptions=True)
        # the one connection allowed is free again once the server has ended the first one
        (await _connect_when_admitted(host, port, token)).close()
        release.set()
        await until(lambda: len(answered) == 20)  # each reply is written (or not) as its handler returns
        server.close()

    with caplog.at_level("WARNING", logger="asyncio"):
        run(main())
    assert not [r for r in caplog.records if "socket.send()" in r.getMessage()]


# -- what a server accepts is bounded (issue 11, "No one in") ---------------------------------------

FAST = Limits(handshake_seconds=0.3, frame_seconds=0.3, max_frame_bytes=1024, max_connections=3)


async def _closed_by_peer(reader: asyncio.StreamReader, within: float = 10.0) -> bool:
    """Whether the other side closes the connection within ``within`` s (reads nothing else;
    a reset too: it closed with bytes left unread)."""
    try:
        return await asyncio.wait_for(reader.read(), within) == b""
    except ConnectionResetError:
        return True


async def _counting_server(limits: Limits):
    token, seen = new_token(), []

    async def handle(payload):
        seen.append(payload)
        return payload

    server, address = await serve(token, handle, host="127.0.0.1", limits=limits)
    return server, address, token, seen


def test_a_connection_that_never_sends_its_token_is_closed_after_the_handshake_deadline():
    async def main():
        server, (host, port), _, _ = await _counting_server(FAST)
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"abc")  # part of a token, and then nothing
        assert await _closed_by_peer(reader)
        writer.close()
        server.close()

    run(main())


def test_a_frame_announced_larger_than_the_limit_closes_the_connection_unread():
    async def main():
        server, (host, port), token, seen = await _counting_server(FAST)
        client = await FrameClient.connect(host, port, token)
        assert await client.request("small") == (True, "small")
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(token + HEADER.pack(2**62) + b"x" * 4096)
        assert await _closed_by_peer(reader)
        with pytest.raises(ConnectionLostError):  # a frame over the limit from a client, too
            await asyncio.wait_for(client.request("y" * 2048), 10)
        writer.close()
        server.close()
        return seen

    assert run(main()) == ["small"]


def test_a_frame_cut_short_is_closed_after_the_frame_deadline_but_an_idle_connection_is_not():
    async def main():
        server, (host, port), token, seen = await _counting_server(FAST)
        idle = await FrameClient.connect(host, port, token)
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(token + HEADER.pack(100) + b"only ten b")
        assert await _closed_by_peer(reader)
        await asyncio.sleep(FAST.frame_seconds * 2)  # stands for: idle past both deadlines
        assert not idle.closed and await idle.request("still here") == (True, "still here")
        writer.close()
        idle.close()
        server.close()
        return seen

    assert run(main()) == ["still here"]


def test_a_frame_cut_short_frees_its_connection_slot_even_with_a_reply_the_peer_never_read():
    # a review found it: the deadline closed the transport, and a close waits for the replies
    # still to be written, which a peer that reads nothing never lets leave: the connection
    # kept its slot (and its handler) for good
    async def main():
        token = new_token()

        async def handle(payload):
            return b"y" * (64 * 2**20) if payload == "big" else payload

        server, (host, port) = await serve(token, handle, host="127.0.0.1", limits=replace(FAST, max_connections=1))
        stalled = socket.create_connection((host, port))
        stalled.sendall(token + frame((1, "big")))  # a 64 MiB reply it never reads
        stalled.settimeout(10)
        assert await asyncio.to_thread(stalled.recv, 1, socket.MSG_PEEK)  # the reply is being written
        stalled.sendall(b"\x00")  # the first byte of a frame that never ends
        again = await _connect_when_admitted(host, port, token)
        assert await again.request("back in") == (True, "back in")
        again.close()
        stalled.close()
        server.close()

    run(main())


def test_connections_past_the_cap_are_closed_at_once():
    async def main():
        server, (host, port), token, _ = await _counting_server(FAST)
        clients = [await FrameClient.connect(host, port, token) for _ in range(FAST.max_connections)]
        assert [await c.request(i) for i, c in enumerate(clients)] == [(True, i) for i in range(3)]
        reader, writer = await asyncio.open_connection(host, port)
        assert await _closed_by_peer(reader, within=FAST.handshake_seconds / 2)  # before any deadline
        clients.pop().close()
        again = await _connect_when_admitted(host, port, token)  # once the server has seen that close
        for c in [*clients, again]:
            c.close()
        writer.close()
        server.close()

    run(main())


async def _connect_when_admitted(host: str, port: int, token: bytes, within: float = 10.0) -> FrameClient:
    """A connection the server answers on, polling until it admits one (or failing)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        client = await FrameClient.connect(host, port, token)
        try:
            assert await asyncio.wait_for(client.request("back"), within) == (True, "back")
            return client
        except ConnectionLostError:
            client.close()
            assert asyncio.get_running_loop().time() < deadline, "the server never admitted a connection again"
            await asyncio.sleep(0.02)  # a poll interval


# -- the warm worker's server (threads) holds to the same limits ------------------------------------


def _raw(address: tuple[str, int, bytes]) -> socket.socket:
    conn = socket.create_connection(address[:2], timeout=10)
    return conn


def _closed(conn: socket.socket) -> bool:
    """Whether the worker closes ``conn`` (a reset too: it closed with bytes left unread)."""
    with conn:
        try:
            return conn.recv(1) == b""  # the socket's own 10 s timeout fails the test otherwise
        except ConnectionResetError:
            return True


def test_the_warm_worker_closes_silent_oversized_and_cut_short_connections_and_caps_them():
    worker = WarmWorker("127.0.0.1", FAST)
    address = worker.address()
    token = address[2]
    silent = _raw(address)
    assert _closed(silent)
    oversized = _raw(address)
    oversized.sendall(token + HEADER.pack(2**62) + b"x" * 4096)
    assert _closed(oversized)
    cut = _raw(address)
    cut.sendall(token + HEADER.pack(100) + b"ten bytes!")
    assert _closed(cut)
    held = [_raw(address) for _ in range(FAST.max_connections)]
    for conn in held:
        conn.sendall(token)  # authenticated and idle: kept
    wait_until(lambda: worker._slots._value == 0)  # type: ignore[attr-defined]
    assert _closed(_raw(address))  # past the cap
    for conn in held:
        conn.close()


_pause = threading.Event()  # never set: wait() is a pause


def double(x):
    return 2 * x


def test_the_warm_worker_serves_a_batch_that_arrives_in_pieces_and_one_that_arrives_whole():
    spec = Registry().add_activity(double, "double")
    registry = encode({"double": spec})
    worker = WarmWorker("127.0.0.1", Limits(handshake_seconds=5, frame_seconds=5, max_connections=2))
    address = worker.address()
    with _raw(address) as conn:
        request = frame((1, ("key", registry, [("double", dump_value(21))])))
        conn.sendall(address[2] + request[:5])  # the token, and the start of a frame
        _pause.wait(0.05)  # stands for: the rest arrives later (within the frame deadline)
        conn.sendall(request[5:])
        conn.sendall(frame((2, ("key", registry, [("double", dump_value(1))]))))
        replies = [_read_reply(conn), _read_reply(conn)]
    # the one reply shape of every server: (True, value); the value is the encoded outcomes and
    # the seconds the worker took to run them
    assert [(rid, ok, decode(blob)) for rid, (ok, (blob, _)) in replies] == [
        (1, True, [(True, 42)]), (2, True, [(True, 2)])
    ]
    assert all(seconds >= 0 for _, (_, (_, seconds)) in replies)


def _read_reply(conn: socket.socket) -> tuple[int, tuple[bool, bytes]]:
    head = _exactly(conn, HEADER.size)
    return pickle.loads(_exactly(conn, HEADER.unpack(head)[0]))


def _exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        assert chunk, "the worker closed the connection"
        data += chunk
    return data


def test_a_client_server_answers_in_the_same_shape_with_its_errors_encoded():
    from runtime._shard_clients import _encode_error, decode_reply

    async def handle(payload):
        if payload == "boom":
            raise KeyError("no such thing")
        return encode(payload)

    async def main():
        token = new_token()
        server, (host, port) = await serve(token, handle, host="127.0.0.1", describe_error=_encode_error)
        client = await FrameClient.connect(host, port, token)
        good, bad = await client.request("x"), await client.request("boom")
        server.close()
        client.close()
        return good, bad

    good, bad = run(main())
    assert good[0] is True and decode_reply(good) == "x"
    assert bad[0] is False
    with pytest.raises(KeyError, match="no such thing"):
        decode_reply(bad)
