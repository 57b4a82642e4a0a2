"""The control commands of ``ray-durable`` (raise, terminate, suspend, resume, rewind, purge).

Each acts on the running hub, or opens the hub with its saved code for the moment it takes
(:meth:`Session.writer`), returns once its change is committed and prints one line.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

import click

from orchestrations import InstanceNotFoundError

from ._cli_options import runtime_status, time_filters
from ._cli_session import Session
from ._client import TaskHub
from ._render import cell
from ._status import DurableOrchestrationStatus

_wait_option = click.option(
    "--wait", "wait_seconds", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
    help="Then wait (at most SECONDS) until the instance finishes.",
)
_reason_option = click.option("--reason", default=None, help="Recorded in the instance's history.")


def _report(hub: TaskHub, done: str, instance_id: str, wait_seconds: float | None = None) -> None:
    """One line: what was done and the instance's status now (after waiting if asked)."""
    if wait_seconds is not None:
        now: DurableOrchestrationStatus | None = hub.wait_for_completion(instance_id, timeout=wait_seconds)
    else:
        now = hub.get_status(instance_id)
    if now is None:
        raise InstanceNotFoundError(instance_id)
    line = f"{done} {instance_id}: {now.runtime_status.value}"
    if now.runtime_status.is_terminal:
        line += f", output {cell(now.output, None)}"
    click.echo(line)


def _event_data(text: str | None) -> Any:
    """DATA as JSON, or as the plain string when it is not JSON."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


@click.command("raise")
@click.argument("instance_id")
@click.argument("event_name")
@click.argument("data", required=False)
@_wait_option
@click.pass_obj
def raise_(session: Session, instance_id: str, event_name: str, data: str | None, wait_seconds: float | None) -> None:
    """Send external event EVENT_NAME to an instance; DATA is JSON (else a plain string)."""
    with session.writer() as hub:
        hub.raise_event(instance_id, event_name, _event_data(data))
        _report(hub, f"raised {event_name!r} on", instance_id, wait_seconds)


def _lifecycle_command(
    name: str, action: Callable[[TaskHub, str, str | None], None], done: str, summary: str, waits: bool
) -> click.Command:
    """Register command ``name``: ``action(hub, INSTANCE_ID, --reason)``, then :func:`_report`."""

    def command(session: Session, instance_id: str, reason: str | None, wait_seconds: float | None = None) -> None:
        with session.writer() as hub:
            action(hub, instance_id, reason)
            _report(hub, done, instance_id, wait_seconds)

    command.__doc__ = summary
    decorated = click.pass_obj(command)
    if waits:
        decorated = _wait_option(decorated)
    return click.command(name)(click.argument("instance_id")(_reason_option(decorated)))


#: every control command, for the group to add
COMMANDS: list[click.Command] = [
    _lifecycle_command("terminate", TaskHub.terminate, "terminated",
                       "Terminate a running or suspended instance (releases every lock it holds).", waits=False),
    _lifecycle_command("suspend", TaskHub.suspend, "suspended",
                       "Suspend an instance: what arrives for it is held until it resumes.", waits=False),
    _lifecycle_command("resume", TaskHub.resume, "resumed", "Resume a suspended instance.", waits=True),
    _lifecycle_command("rewind", TaskHub.rewind, "rewound", "Re-run a Failed instance from its last good state.",
                       waits=True),
]


@click.command()
@click.argument("instance_id", required=False)
@time_filters
@click.pass_obj
def purge(
    session: Session, instance_id: str | None, statuses: tuple[str, ...], created_from: datetime | None,
    created_to: datetime | None,
) -> None:
    """Delete a finished instance and its history, or every finished instance matching the filters."""
    filtered = bool(statuses) or created_from is not None or created_to is not None
    if filtered == (instance_id is not None):  # both, or neither
        raise click.UsageError("give either an INSTANCE_ID or filters (--status, --created-from, --created-to)")
    with session.writer() as hub:
        if instance_id is None:
            count = hub.purge_instance_history_by(created_from, created_to, runtime_status(statuses))
            click.echo(f"purged {count.instances_deleted} instance(s)")
            return
        if hub.purge_instance_history(instance_id).instances_deleted:
            click.echo(f"purged {instance_id}")
            return
        now = hub.get_status(instance_id)
    if now is None:
        raise InstanceNotFoundError(instance_id)
    raise click.ClickException(
        f"{instance_id} is {now.runtime_status.value}: only Completed, Failed or Terminated instances are purged"
    )


COMMANDS += [raise_, purge]
