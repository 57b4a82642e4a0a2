"""Paging over shards: the rules of ``list_instances`` and its filters, shared by the task hub
client and the read-only reader of a closed hub's files."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from orchestrations import DurableTypeError, DurableValueError

from ._client_args import check_prefix
from ._status import DurableOrchestrationStatus, InstancePage, OrchestrationRuntimeStatus

StatusFilter = OrchestrationRuntimeStatus | str | Iterable[OrchestrationRuntimeStatus | str] | None


#: One instance as a shard's query returns it: (created timestamp, instance id, status).
ShardRow = tuple[float, str, DurableOrchestrationStatus]


def query_page(
    query_shards: Callable[
        [float | None, float | None, list[str] | None, tuple[float, str] | None, int | None, str | None, str | None],
        list[list[ShardRow]],
    ],
    created_time_from: datetime | None,
    created_time_to: datetime | None,
    runtime_status: StatusFilter,
    page_size: int | None,
    continuation_token: str | None,
    instance_id_prefix: str | None = None,
    name: str | None = None,
) -> InstancePage:
    """The paging rules of :meth:`TaskHub.list_instances` over any set of shards.

    ``query_shards(created_from, created_to, statuses, after, limit, prefix, name)`` returns each
    shard's rows in (created time, id) order; they are merged in that order and cut at
    ``page_size``. Each shard is asked for one row more than a page, so the token (naming the
    last row returned) is given only when there is more to read: the last page has none, as
    in DurableTask's queries. Raises ``ValueError``/``TypeError`` on bad filters.
    """
    if page_size is not None and (isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1):
        raise DurableValueError(f"page_size must be a positive int, got {page_size!r}")
    after = _parse_token(continuation_token)
    statuses = status_values(runtime_status)
    prefix = check_prefix(instance_id_prefix)
    if name is not None and not isinstance(name, str):
        raise DurableTypeError(f"name must be an orchestrator name (str), got {name!r}")
    limit = page_size + 1 if page_size is not None else None
    parts = query_shards(
        timestamp_of(created_time_from), timestamp_of(created_time_to), statuses, after, limit, prefix, name
    )
    merged = sorted((item for part in parts for item in part), key=lambda t: (t[0], t[1]))
    token: str | None = None
    if page_size is not None and len(merged) > page_size:
        merged = merged[:page_size]
        token = json.dumps([merged[-1][0], merged[-1][1]])
    return InstancePage([t[2] for t in merged], token)


def timestamp_of(value: datetime | None) -> float | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise DurableTypeError(f"expected a datetime, got {value!r}")
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def status_values(value: StatusFilter) -> list[str] | None:
    """The status names a ``runtime_status`` filter asks for: one status or several, each an
    :class:`OrchestrationRuntimeStatus` or its name (any case); ``None`` (from ``None`` or an
    empty list, as the peers' backends read it): every status."""
    if value is None:
        return None
    if isinstance(value, str):  # one status (the enum is a str too): not its letters
        items: list[Any] = [value]
    else:
        try:
            items = list(value)
        except TypeError:
            raise DurableTypeError(
                f"runtime_status must be an OrchestrationRuntimeStatus or a list of them, got {value!r}"
            ) from None
    return [_status_name(item) for item in items] or None


def _status_name(item: object) -> str:
    if isinstance(item, OrchestrationRuntimeStatus):
        return item.value
    if not isinstance(item, str):
        raise DurableTypeError(f"runtime_status must hold OrchestrationRuntimeStatus values, got {item!r}")
    for status in OrchestrationRuntimeStatus:
        if status.value.casefold() == item.casefold():
            return status.value
    names = ", ".join(s.value for s in OrchestrationRuntimeStatus)
    raise DurableValueError(f"runtime_status {item!r} is not a status; the statuses are {names}")


def _parse_token(token: str | None) -> tuple[float, str] | None:
    if token is None:
        return None
    try:
        ts, iid = json.loads(token)
        return float(ts), str(iid)
    except (ValueError, TypeError):
        raise DurableValueError(f"not a continuation token: {token!r}") from None
