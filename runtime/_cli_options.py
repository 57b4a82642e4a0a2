"""Options and parameter types that several ``ray-durable`` commands share."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import click

from ._status import OrchestrationRuntimeStatus


class IsoTime(click.ParamType):
    """An ISO 8601 time; one without a zone is UTC."""

    name = "ISO-TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            self.fail(f"{value!r} is not an ISO 8601 time (e.g. 2024-05-01T12:00:00Z)", param, ctx)


STATUS = click.Choice([s.value for s in OrchestrationRuntimeStatus], case_sensitive=False)


def time_filters(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--status`` (repeatable), ``--created-from`` and ``--created-to``."""
    command = click.option("--created-to", type=IsoTime(), help="Created at or before this time.")(command)
    command = click.option("--created-from", type=IsoTime(), help="Created at or after this time.")(command)
    return click.option("--status", "statuses", multiple=True, type=STATUS, help="Runtime status (repeatable).")(
        command
    )


def runtime_status(statuses: Sequence[str]) -> list[OrchestrationRuntimeStatus] | None:
    """The ``--status`` values (click has already spelled them as the enum does), ``None`` if none."""
    return [OrchestrationRuntimeStatus(s) for s in statuses] or None
