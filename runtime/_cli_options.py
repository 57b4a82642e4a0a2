"""Options and parameter types that several ``ray-durable`` commands share."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import click

from orchestrations import DurableValueError

from ._cli_session import Session
from ._status import OrchestrationRuntimeStatus
from ._times import parse_time


class When(click.ParamType):
    """A time: relative to now (``30s``, ``15m``, ``1h``, ``2d``, ``1w`` ago) or ISO 8601 (UTC
    when it names no zone)."""

    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            moment = parse_time(value)
        except DurableValueError as exc:
            self.fail(str(exc), param, ctx)
        if moment is None:
            self.fail("a time is needed (1h, 2d, or 2024-05-01T12:00:00Z)", param, ctx)
        return moment


def json_flag(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--json`` after the command too (``ray-durable status ID --json``), as before it."""

    def turn_on(ctx: click.Context, _: click.Parameter, value: bool) -> None:
        session = ctx.find_object(Session)
        if value and session is not None:
            session.as_json = True

    return click.option("--json", "as_json_after", is_flag=True, expose_value=False, callback=turn_on,
                        help="Print JSON instead of tables.")(command)


STATUS = click.Choice([s.value for s in OrchestrationRuntimeStatus], case_sensitive=False)


def time_filters(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--status`` (repeatable), ``--created-from`` and ``--created-to``."""
    command = click.option("--created-to", type=When(), help="Created at or before this time (1h, ISO 8601).")(command)
    command = click.option("--created-from", type=When(), help="Created at or after this time (1h, ISO 8601).")(
        command
    )
    return click.option("--status", "statuses", multiple=True, type=STATUS, help="Runtime status (repeatable).")(
        command
    )


def runtime_status(statuses: Sequence[str]) -> list[OrchestrationRuntimeStatus] | None:
    """The ``--status`` values (click has already spelled them as the enum does), ``None`` if none."""
    return [OrchestrationRuntimeStatus(s) for s in statuses] or None
