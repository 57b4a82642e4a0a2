"""The framed connections of runtime._wire, on one event loop (no Ray cluster needed)."""

from __future__ import annotations

import asyncio

import pytest

from runtime._wire import ConnectionLostError, FrameClient, new_token, serve


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
