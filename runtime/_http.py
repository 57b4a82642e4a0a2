"""The built-in activity behind ``call_http``: one HTTP request with httpx.

It makes exactly one request and returns what came back; every decision about the response
(polling a 202, the time budget) is the orchestration's, taken deterministically from history
(see ``orchestrations/_http.py``). :data:`BUILTIN_ACTIVITIES` is merged into the activities
every task hub ships to its shards, so ``call_http`` works whatever registry the user passes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrations import DurableHttpRequest, DurableHttpResponse
from orchestrations._http import HTTP_ACTIVITY
from orchestrations._registry import ActivitySpec

if TYPE_CHECKING:
    import httpx

#: Seconds one request may take when ``call_http`` was given no ``timeout`` (the default of
#: .NET's HttpClient, which Durable Functions uses).
DEFAULT_REQUEST_TIMEOUT = 100.0


async def http_request(request: DurableHttpRequest) -> DurableHttpResponse:
    """Make ``request`` and return its response, whatever the status code.

    Redirects are followed (as Durable Functions does). A status of 400 or more is returned,
    not raised; a request that cannot be made or exceeds ``request.timeout`` raises an
    ``httpx`` error, which fails the activity (and the task, at its ``yield``).
    """
    import httpx  # here, not at the top: every process of a hub imports this module, few call it

    timeout = DEFAULT_REQUEST_TIMEOUT if request.timeout is None else request.timeout
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=True) as client:
        response = await client.request(
            request.method, request.uri, content=request.content, headers=request.headers
        )
    return DurableHttpResponse(response.status_code, _headers(response.headers), response.text)


def _headers(headers: httpx.Headers) -> dict[str, str]:
    """Response headers with the server's spelling; repeated headers joined with ``", "``."""
    merged: dict[str, str] = {}
    spelling: dict[str, str] = {}
    for raw_name, raw_value in headers.raw:
        name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
        key = spelling.setdefault(name.lower(), name)
        merged[key] = f"{merged[key]}, {value}" if key in merged else value
    return merged


#: Activities every task hub provides, by name (they take precedence over user registrations).
BUILTIN_ACTIVITIES: dict[str, ActivitySpec] = {
    HTTP_ACTIVITY: ActivitySpec(HTTP_ACTIVITY, http_request, is_async=True),
}
