"""Durable HTTP: the request and response types of ``call_http`` and its 202-polling task. Pure.

The request itself is made by a built-in activity of the runtime (``HTTP_ACTIVITY``); what
happens between requests is decided here, from history only: a ``202 Accepted`` response with
a ``Location`` header makes :class:`HttpTask` wait on a durable timer for ``Retry-After``
seconds and then ``GET`` the location, until a response that is not such a 202 completes the
task. Replay sees the same recorded responses at the same recorded times, so it takes the same
decisions and schedules nothing new.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

from ._actions import ScheduleTask
from ._errors import DurableTypeError, DurableValueError, HttpTimeoutError, describe
from ._task import CompletableTask

#: The name of the built-in activity that makes one HTTP request (registered by the runtime on
#: every task hub, whatever registry the user passes).
HTTP_ACTIVITY = "ray_durable.http"

#: How long to wait before polling again when a 202 response has no usable ``Retry-After``.
DEFAULT_POLL_INTERVAL = timedelta(seconds=30)
#: the longest wait a ``Retry-After`` may ask for (a larger one waits this long)
MAX_RETRY_AFTER = timedelta(days=365)

#: RFC 9110 ``token``: what a method or a header name may be made of.
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


@dataclass(frozen=True, slots=True)
class DurableHttpRequest:
    """One HTTP request, as recorded in history (the input of the built-in HTTP activity).

    ``content`` is the body (``str`` is sent UTF-8 encoded); ``headers`` the request headers;
    ``timeout`` the seconds the runtime allows this one request (``None``: its default).
    Build it through :meth:`OrchestrationContext.call_http`, which validates every field.
    """

    method: str
    uri: str
    content: str | bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float | None = None


@dataclass(frozen=True, slots=True)
class DurableHttpResponse:
    """The response of ``call_http``: status code, headers and the body decoded as text.

    A status code of 400 or more is returned here, not raised: the orchestrator decides what
    an error status means. ``headers`` keep the server's spelling; :meth:`header` looks one up
    ignoring case.
    """

    status_code: int
    headers: dict[str, str] = field(default_factory=dict)
    content: str = ""

    def header(self, name: str, default: str | None = None) -> str | None:
        """The value of header ``name`` (case-insensitive), else ``default``."""
        wanted = name.lower()
        for key, value in self.headers.items():
            if key.lower() == wanted:
                return value
        return default

    def json(self) -> Any:
        """The body parsed as JSON (raises ``ValueError`` if it is not JSON)."""
        return json.loads(self.content)


class HttpTask(CompletableTask):
    """The task of ``call_http``: one request, then one poll per ``202 Accepted`` + Location.

    Modelled on :class:`RetryableTask`: after each 202 the executor starts a durable timer
    for :meth:`next_poll`'s delay, and when it fires schedules :meth:`action_factory` (the
    poll request) under a new task id. Any other response completes the task with it.
    """

    __slots__ = ("deadline", "request", "timeout")

    def __init__(self, task_id: int, request: DurableHttpRequest, timeout: timedelta | None, now: datetime) -> None:
        super().__init__(task_id)
        self.request = request
        self.timeout = timeout
        self.deadline = None if timeout is None else now + timeout

    def action_factory(self, task_id: int) -> ScheduleTask:
        """The action that makes the current request (the first one, or the next poll)."""
        return ScheduleTask(task_id, HTTP_ACTIVITY, self.request)

    def next_poll(self, response: Any, now: datetime) -> timedelta | None:
        """The wait before polling again after ``response`` arrived at ``now``, or ``None``
        when ``response`` completes the task (anything but a 202 with a ``Location``).

        Switches :attr:`request` to the poll (``GET`` of the location, resolved against the
        current URI, with the original headers and no body). Raises
        :class:`HttpTimeoutError` when the poll would start at or past the deadline.
        """
        if not isinstance(response, DurableHttpResponse) or response.status_code != 202:
            return None
        location = response.header("Location")
        if not location:
            return None
        delay = retry_after(response, now)
        poll_at = now + delay
        if self.deadline is not None and poll_at >= self.deadline:
            raise HttpTimeoutError(
                f"call_http {self.request.method} {self.request.uri} timed out: the {self.timeout} budget "
                f"ends at {self.deadline.isoformat()}, before the next poll at {poll_at.isoformat()}",
                "TimeoutError",
            )
        remaining = None if self.deadline is None else (self.deadline - poll_at).total_seconds()
        self.request = DurableHttpRequest(
            "GET", urljoin(self.request.uri, location), None, dict(self.request.headers), remaining
        )
        return delay


def retry_after(response: DurableHttpResponse, now: datetime) -> timedelta:
    """The ``Retry-After`` of ``response`` as a wait from ``now``: integer seconds or an HTTP
    date; :data:`DEFAULT_POLL_INTERVAL` when absent or unreadable. Never negative, and at most
    :data:`MAX_RETRY_AFTER` (a server's value must not break the orchestration)."""
    value = (response.header("Retry-After") or "").strip()
    if value.isascii() and value.isdigit():  # not '²', which isdigit() accepts
        seconds = int(value) if len(value) <= 12 else MAX_RETRY_AFTER.total_seconds()  # no huge int()
        return timedelta(seconds=min(seconds, MAX_RETRY_AFTER.total_seconds()))
    if value:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, OverflowError):
            return DEFAULT_POLL_INTERVAL
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return min(max(when - now, timedelta(0)), MAX_RETRY_AFTER)
    return DEFAULT_POLL_INTERVAL


def build_request(
    method: object, uri: object, content: object, headers: object, timeout: object
) -> tuple[DurableHttpRequest, timedelta | None]:
    """Validate the arguments of ``call_http``; return the first request and the time budget.

    Raises :class:`DurableTypeError` or :class:`DurableValueError` naming the bad value.
    Content that is neither ``str`` nor ``bytes`` is sent as JSON (with
    ``Content-Type: application/json`` unless the headers give one).
    """
    if not isinstance(method, str):
        raise DurableTypeError(f"call_http method must be a str, got {describe(method)}")
    if not _TOKEN.match(method):
        raise DurableValueError(f"call_http method must be an HTTP method such as 'GET', got {method!r}")
    if not isinstance(uri, str):
        raise DurableTypeError(f"call_http uri must be a str, got {describe(uri)}")
    parts = urlsplit(uri)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc or _has_control(uri):
        raise DurableValueError(f"call_http uri must be an absolute http:// or https:// URL, got {uri!r}")
    checked = _check_headers(headers)
    body = _body(content, checked)
    budget = _budget(timeout)
    seconds = None if budget is None else budget.total_seconds()
    return DurableHttpRequest(method.upper(), uri, body, checked, seconds), budget


def _check_headers(headers: object) -> dict[str, str]:
    if headers is None:
        return {}
    if not isinstance(headers, Mapping):
        raise DurableTypeError(f"call_http headers must be a mapping of str to str, got {describe(headers)}")
    checked: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise DurableTypeError(f"call_http header {name!r}: names and values must be str, got {value!r}")
        if not _TOKEN.match(name):
            raise DurableValueError(f"call_http header name {name!r} is not a valid HTTP header name")
        if _has_control(value.replace("\t", " ")):
            raise DurableValueError(f"call_http header {name!r} has a control character in its value {value!r}")
        checked[name] = value
    return checked


def _body(content: object, headers: dict[str, str]) -> str | bytes | None:
    if content is None or isinstance(content, (str, bytes)):
        return content
    try:
        text = json.dumps(content, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise DurableTypeError(
            f"call_http content must be str, bytes or JSON-serializable, got {describe(content)} ({exc})"
        ) from None
    if not any(name.lower() == "content-type" for name in headers):
        headers["Content-Type"] = "application/json"
    return text


def _budget(timeout: object) -> timedelta | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (timedelta, int, float)):
        raise DurableTypeError(f"call_http timeout must be a timedelta or seconds, got {describe(timeout)}")
    try:
        budget = timeout if isinstance(timeout, timedelta) else timedelta(seconds=timeout)
    except (OverflowError, ValueError):
        raise DurableValueError(f"call_http timeout must be a finite number of seconds, got {timeout!r}") from None
    if budget <= timedelta(0):
        raise DurableValueError(f"call_http timeout must be positive, got {timeout!r}")
    return budget


def _has_control(text: str) -> bool:
    return any(ord(c) < 32 or ord(c) == 127 for c in text)

