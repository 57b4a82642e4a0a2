"""``call_http`` end to end: a real local HTTP server, a real Ray, real SQLite shards.

The server answers the 202 pattern (``202`` + ``Location`` + ``Retry-After: 1`` twice, then
``200`` with a JSON body) and counts what it receives, so the tests can tell that the
orchestration polled through durable timers and that replay made no request again.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from orchestrations import DurableHttpRequest, DurableHttpResponse, TaskFailedError, TimerCreated, orchestrator
from runtime import OrchestrationRuntimeStatus as S
from runtime._http import http_request

pytestmark = pytest.mark.integration


class JobServer(ThreadingHTTPServer):
    """``/job/<name>`` starts a job answered with 202 until it has been polled twice;
    ``/headers`` repeats a header; anything else is 404. Records every request line."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def seen(self, prefix: str) -> list[tuple[str, str]]:
        with self.lock:
            return [r for r in self.requests if r[1].startswith(prefix)]


class _Handler(BaseHTTPRequestHandler):
    server: JobServer

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        with self.server.lock:
            self.server.requests.append((self.command, self.path))
            polls = sum(1 for _, p in self.server.requests if p == self.path)
        if self.path.startswith("/job/") and not self.path.endswith("/status"):
            self._send(202, {"Location": f"{self.path}/status", "Retry-After": "1"})
        elif self.path.endswith("/status") and polls < 2:
            self._send(202, {"Location": self.path, "Retry-After": "1"})
        elif self.path.endswith("/status"):
            self._send(200, {"Content-Type": "application/json"}, json.dumps({"job": self.path, "state": "done"}))
        elif self.path == "/headers":
            self.send_response(200)
            self.send_header("X-Tag", "a")
            self.send_header("X-Tag", "b")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._send(404, {"Content-Type": "text/plain"}, "no such thing")

    def _send(self, status: int, headers: dict[str, str], body: str = "") -> None:
        data = body.encode()
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the tests read ``server.requests`` instead."""


@pytest.fixture(scope="module")
def server() -> Iterator[JobServer]:
    srv = JobServer()
    thread = threading.Thread(target=srv.serve_forever, name="job-server", daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=10)


# -- orchestrators ------------------------------------------------------------------------------


@orchestrator(name="http_call")
def http_call(ctx):
    method, uri = ctx.get_input()
    response = yield ctx.call_http(method, uri)
    return response


@orchestrator(name="http_call_caught")
def http_call_caught(ctx):
    try:
        yield ctx.call_http("GET", ctx.get_input())
    except TaskFailedError as exc:
        return {"error_type": exc.error_type}
    return "not reached"


# -- tests ----------------------------------------------------------------------------------------


def test_202_pattern_is_polled_through_durable_timers_until_200(hub, server):
    iid = hub.start_new(http_call, client_input=("POST", f"{server.base}/job/a"))
    status = hub.wait_for_completion(iid, timeout=60)
    assert status.runtime_status is S.Completed, status.failure_details
    response = status.output
    assert isinstance(response, DurableHttpResponse)
    assert response.status_code == 200
    assert response.json() == {"job": "/job/a/status", "state": "done"}
    assert response.header("content-type") == "application/json"
    # the server saw the request and two polls (GETs of the Location), nothing more
    assert server.seen("/job/a") == [("POST", "/job/a"), ("GET", "/job/a/status"), ("GET", "/job/a/status")]
    history = hub.get_history(iid)
    assert sum(isinstance(e, TimerCreated) for e in history) == 2
    scheduled = [e.input for e in history if e.event_type == "TaskScheduled"]
    assert [(r.method, r.uri) for r in scheduled] == [
        ("POST", f"{server.base}/job/a"),
        ("GET", f"{server.base}/job/a/status"),
        ("GET", f"{server.base}/job/a/status"),
    ]


def test_404_is_returned_not_raised(hub, server):
    iid = hub.start_new(http_call, client_input=("GET", f"{server.base}/missing"))
    status = hub.wait_for_completion(iid, timeout=60)
    assert status.runtime_status is S.Completed, status.failure_details
    assert status.output.status_code == 404
    assert status.output.content == "no such thing"
    assert server.seen("/missing") == [("GET", "/missing")]


def test_connection_refused_fails_the_task(hub, server):
    # a port that was free a moment ago: nothing listens there
    probe = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = probe.server_address[1]
    probe.server_close()
    iid = hub.start_new(http_call_caught, client_input=f"http://127.0.0.1:{port}/")
    status = hub.wait_for_completion(iid, timeout=60)
    assert status.runtime_status is S.Completed, status.failure_details
    assert status.output == {"error_type": "httpx.ConnectError"}


def test_activity_keeps_header_spelling_and_joins_repeated_headers(server):
    response = asyncio.run(http_request(DurableHttpRequest("GET", f"{server.base}/headers")))
    assert response.status_code == 200
    assert response.headers["X-Tag"] == "a, b"
    assert response.header("x-tag") == "a, b"
