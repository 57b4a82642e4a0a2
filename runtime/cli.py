"""``ray-durable``: inspect and control a task hub from the shell.

Every command first looks for a hub of that name running (detached) in a Ray cluster it can
reach: the one this process is already connected to, or the one ``--address`` / ``RAY_ADDRESS``
names, or else the one ``ray start`` last recorded on this machine, provided its address
answers a TCP connect within half a second. No Ray is started to look. If a hub is found, the
command talks to it (``TaskHub.connect``). If not:

- read commands (``list``, ``status``, ``history``, ``entities``, ``entity``) read the hub's
  SQLite files under ``--data-dir`` read-only (:class:`runtime._readonly.HubFiles`);
- control commands (``raise``, ``terminate``, ``suspend``, ``resume``, ``purge``, ``rewind``)
  open the hub for the moment it takes, in a local Ray of their own, with the code the hub
  last ran (the registry saved in its files); each returns once its change is committed
  (``--wait`` keeps the hub open until the instance finishes), then closes the hub.

A missing hub, instance or entity, and any refusal by the hub, is one line on stderr and exit
status 1; bad usage is exit status 2. The current directory is put on ``sys.path`` (as
``python -m`` does) because a control command runs the hub's code, which lives there.

Reading a hub's files runs no code from them: values are rebuilt only if they are plain data
or this product's records (a user's object shows as its type name), and ``--no-decode`` shows
the stored bytes without rebuilding anything (always from the files, never a running hub).
A control command on a closed hub does load the hub's code from its files, to run it.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import socket
import sqlite3
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import click
import ray
from ray.exceptions import RayError
from rich.console import Console
from rich.table import Table

from entities import EntityId
from orchestrations import DurableError, DurableValueError, FailureDetails, HistoryEvent, InstanceNotFoundError
from orchestrations._registry import Registry

from ._client import TaskHub
from ._paging import StatusFilter
from ._readonly import HubFiles, RawEvent
from ._render import HISTORY_COLUMNS, cell, history_rows, timestamp
from ._status import (
    DurableOrchestrationStatus,
    EntityMetadata,
    EntityStateResponse,
    InstancePage,
    OrchestrationRuntimeStatus,
)

#: Errors that are the user's situation, not a bug: shown as one line, exit status 1.
_EXPECTED = (DurableError, ValueError, OSError, sqlite3.Error, RayError)
_PAGE = 500
_PROBE_SECONDS = 0.5


class Reader(Protocol):
    """What read commands need: a connected ``TaskHub`` or a hub's files (``HubFiles``)."""

    def get_status(self, instance_id: str) -> DurableOrchestrationStatus | None: ...

    def get_history(self, instance_id: str) -> Sequence[HistoryEvent] | Sequence[RawEvent]: ...

    def list_instances(
        self, created_time_from: datetime | None = None, created_time_to: datetime | None = None,
        runtime_status: StatusFilter = None, page_size: int | None = 100, continuation_token: str | None = None,
    ) -> InstancePage: ...

    def list_entities(self, name: str | None = None, include_deleted: bool = False) -> list[EntityMetadata]: ...

    def read_entity_state(self, entity_id: EntityId) -> EntityStateResponse: ...


# -- finding the hub ---------------------------------------------------------------------------------


def _recorded_address() -> str | None:
    """The cluster address ``ray start`` last recorded on this machine, if any."""
    try:
        from ray._private.utils import read_ray_address
    except ImportError:  # a Ray that keeps it elsewhere: nothing recorded as far as we know
        return None
    address: str | None = read_ray_address()
    return address


def _answers(address: str) -> bool:
    """Whether something accepts a TCP connection at ``host:port`` (``ray://`` allowed)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=_PROBE_SECONDS):
            return True
    except (OSError, ValueError):
        return False


def _cluster_address(explicit: str | None) -> str | None:
    """The address of a Ray cluster that is up, or ``None``.

    ``explicit`` (``--address`` or ``RAY_ADDRESS``) must answer, else ``ValueError``; ``local``
    means no cluster; without it (or with ``auto``) the recorded address is used if it answers.
    """
    if explicit == "local":
        return None
    given = explicit not in (None, "", "auto")
    address = explicit if given else _recorded_address()
    if not address or _answers(address):
        return address or None
    if given:
        raise DurableValueError(f"no Ray cluster answers at {address}")
    return None


@dataclass
class Session:
    """The global options, and the Ray connection this process made (if any)."""

    hub: str
    data_dir: str
    address: str | None
    as_json: bool
    no_decode: bool = False
    started_ray: bool = False

    def running_hub(self) -> TaskHub | None:
        """The hub if it runs in a reachable Ray cluster, else ``None``; starts no Ray. A process
        already connected to Ray (a driver calling the CLI in-process) looks there, not at ``address``.

        Connects with an empty registry, which ``TaskHub`` never installs: the hub keeps its code.
        """
        if not ray.is_initialized():
            address = _cluster_address(self.address)
            if address is None:
                return None
            ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
            self.started_ray = True
        try:
            return TaskHub.connect(self.hub, registry=Registry())
        except DurableValueError:  # no hub of that name in this cluster
            self.leave_ray()
            return None

    def leave_ray(self) -> None:
        """Disconnect from the Ray cluster this process connected to (not one it was given)."""
        if self.started_ray:
            ray.shutdown()
            self.started_ray = False

    @contextmanager
    def reader(self) -> Iterator[Reader]:
        """The running hub, or else its files opened read-only (always the files, not decoded,
        with ``--no-decode``)."""
        hub = None if self.no_decode else self.running_hub()
        if hub is None:
            with closing(HubFiles(self.hub, self.data_dir, raw=self.no_decode)) as files:
                yield files
            return
        try:
            yield hub
        finally:
            hub.close()
            self.leave_ray()

    @contextmanager
    def writer(self) -> Iterator[TaskHub]:
        """The running hub, or else the hub opened (with its saved code) until the block ends."""
        if self.no_decode:
            raise click.UsageError("--no-decode is for read commands (list, status, history, entities, entity)")
        hub = self.running_hub()
        if hub is None:
            with closing(HubFiles(self.hub, self.data_dir)) as files:  # refuses a hub that does not exist
                num_shards, registry = files.num_shards, files.saved_registry()
            hub = TaskHub(
                self.hub, data_dir=self.data_dir, num_shards=num_shards, registry=registry, lock_timeout=3.0,
                ray_init_kwargs={"address": "local", "log_to_driver": False},
            )
        try:
            yield hub
        finally:
            hub.close()
            self.leave_ray()


# -- output ------------------------------------------------------------------------------------------


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, default=repr, ensure_ascii=False, indent=2))


def _print_table(table: Table) -> None:
    """A table on stdout; wide enough not to cut ids when stdout is not a terminal."""
    console = Console(width=None if sys.stdout.isatty() else 200, highlight=False, soft_wrap=False)
    console.print(table)


def _status_json(s: DurableOrchestrationStatus) -> dict[str, Any]:
    failure = s.failure_details
    return {
        "instance_id": s.instance_id,
        "name": s.name,
        "runtime_status": s.runtime_status.value,
        "created_time": timestamp(s.created_time),
        "last_updated_time": timestamp(s.last_updated_time),
        "input": s.input_,
        "output": s.output,
        "custom_status": s.custom_status,
        "failure_details": failure if not isinstance(failure, FailureDetails) else {
            "error_type": failure.error_type, "message": failure.message, "details": failure.details,
        },
    }


def _history_json(events: Sequence[HistoryEvent] | Sequence[RawEvent]) -> list[dict[str, Any]]:
    return [
        {"event_type": e.event_type, "timestamp": timestamp(e.timestamp), "name": e.name, "input": e.input,
         "result": e.result}
        for e in events
    ]


def _history_table(events: Sequence[HistoryEvent] | Sequence[RawEvent]) -> Table:
    table = Table(*HISTORY_COLUMNS, title="History")
    for row in history_rows(events):
        table.add_row(*row)
    return table


def _key_value_table(rows: Sequence[tuple[str, str]]) -> Table:
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in rows:
        table.add_row(key, value)
    return table


def _status_table(s: DurableOrchestrationStatus) -> Table:
    rows = [
        ("Instance ID", s.instance_id), ("Name", s.name), ("Status", s.runtime_status.value),
        ("Created", timestamp(s.created_time)), ("Last updated", timestamp(s.last_updated_time)),
        ("Input", cell(s.input_, None)), ("Output", cell(s.output, None)),
        ("Custom status", cell(s.custom_status, None)),
    ]
    failure = s.failure_details
    if failure is not None and not isinstance(failure, FailureDetails):  # not decoded (--no-decode)
        rows.append(("Failure", cell(failure, None)))
    elif failure is not None:
        rows.append(("Failure", failure.describe()))
        first = (failure.details or "").split("\n", 1)[0]
        if first.startswith("Caused by "):  # a task failure nobody caught: show its cause too
            rows.append(("Cause", first.removeprefix("Caused by ")))
    return _key_value_table(rows)


def _entities_table(found: Sequence[EntityMetadata]) -> Table:
    table = Table("Entity ID", "Exists", "State", "Locked by", "Queued", "Last modified")
    for m in found:
        table.add_row(str(m.entity_id), "yes" if m.entity_exists else "no", cell(m.entity_state),
                      m.locked_by or "", str(m.queue_length), timestamp(m.last_modified))
    return table


def _instances_table(found: Sequence[DurableOrchestrationStatus]) -> Table:
    table = Table("Instance ID", "Name", "Status", "Created", "Last updated", "Output")
    for s in found:
        table.add_row(s.instance_id, s.name, s.runtime_status.value, timestamp(s.created_time),
                      timestamp(s.last_updated_time), cell(s.output, 40))
    return table


# -- the command group -------------------------------------------------------------------------------


class _Group(click.Group):
    """A click group that shows expected failures as one line (``Error: ...``), exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (ImportError, pickle.UnpicklingError) as exc:
            raise click.ClickException(
                f"cannot decode a stored value ({exc}); run ray-durable where the code that wrote it "
                "can be imported (e.g. set PYTHONPATH)"
            ) from None
        except _EXPECTED as exc:
            raise click.ClickException(str(exc) or type(exc).__name__) from None


class _IsoTime(click.ParamType):
    """An ISO 8601 time; one without a zone is UTC."""

    name = "ISO-TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            self.fail(f"{value!r} is not an ISO 8601 time (e.g. 2024-05-01T12:00:00Z)", param, ctx)


_STATUS = click.Choice([s.value for s in OrchestrationRuntimeStatus], case_sensitive=False)


def _time_filters(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--status`` (repeatable), ``--created-from`` and ``--created-to``."""
    command = click.option("--created-to", type=_IsoTime(), help="Created at or before this time.")(command)
    command = click.option("--created-from", type=_IsoTime(), help="Created at or after this time.")(command)
    return click.option("--status", "statuses", multiple=True, type=_STATUS, help="Runtime status (repeatable).")(
        command
    )


def _runtime_status(statuses: Sequence[str]) -> list[OrchestrationRuntimeStatus] | None:
    """The ``--status`` values (click has already spelled them as the enum does), ``None`` if none."""
    return [OrchestrationRuntimeStatus(s) for s in statuses] or None


@click.group(cls=_Group)
@click.option("--hub", default="default", show_default=True, help="Task hub name.")
@click.option("--data-dir", default=".durable", show_default=True, help="Where the hub's files are.")
@click.option("--address", envvar="RAY_ADDRESS", help="Ray cluster to look for the hub in ('local': none).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.option("--no-decode", is_flag=True,
              help="Read commands: show stored values as bytes, rebuilding nothing (reads the files).")
@click.pass_context
def main(ctx: click.Context, hub: str, data_dir: str, address: str | None, as_json: bool, no_decode: bool) -> None:
    """Inspect and control the orchestrations and entities of a Ray Durable task hub.

    Talks to the hub if it runs (detached) in a reachable Ray cluster; otherwise reads its
    files read-only, or opens it briefly for a control command.
    """
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    ctx.obj = Session(hub, data_dir, address, as_json, no_decode)


# -- read commands -----------------------------------------------------------------------------------


@main.command("list")
@_time_filters
@click.option("--name-prefix", default="", help="Only orchestrations whose name starts with this.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(min=0), help="At most this many (0: all).")
@click.pass_obj
def list_(
    session: Session, statuses: tuple[str, ...], created_from: datetime | None, created_to: datetime | None,
    name_prefix: str, limit: int,
) -> None:
    """List orchestration instances, oldest first."""
    found: list[DurableOrchestrationStatus] = []
    token: str | None = None
    with session.reader() as reader:
        while not limit or len(found) <= limit:
            page = reader.list_instances(created_from, created_to, _runtime_status(statuses), _PAGE, token)
            found += [s for s in page.instances if s.name.startswith(name_prefix)]
            token = page.continuation_token
            if token is None:
                break
    more = bool(limit) and len(found) > limit
    found = found[:limit] if limit else found
    if session.as_json:
        _print_json([_status_json(s) for s in found])
    else:
        _print_table(_instances_table(found))
    if more:
        click.echo(f"(the first {limit}; --limit 0 lists all)", err=True)


@main.command()
@click.argument("instance_id")
@click.option("--history", "with_history", is_flag=True, help="Also print the history.")
@click.pass_obj
def status(session: Session, instance_id: str, with_history: bool) -> None:
    """Show the status of an orchestration instance."""
    with session.reader() as reader:
        found = reader.get_status(instance_id)
        if found is None:
            raise InstanceNotFoundError(instance_id)
        events = reader.get_history(instance_id) if with_history else None
    if session.as_json:
        _print_json({**_status_json(found), **({"history": _history_json(events)} if events is not None else {})})
        return
    _print_table(_status_table(found))
    if events is not None:
        _print_table(_history_table(events))


@main.command()
@click.argument("instance_id")
@click.pass_obj
def history(session: Session, instance_id: str) -> None:
    """Show the history of an orchestration instance (the seed's history table)."""
    with session.reader() as reader:
        events = reader.get_history(instance_id)
    if session.as_json:
        _print_json(_history_json(events))
    else:
        _print_table(_history_table(events))


@main.command()
@click.option("--name", default=None, help="Only entities of this name (in any case).")
@click.option("--include-deleted", is_flag=True, help="Also entities without state (deleted, locked or queued).")
@click.pass_obj
def entities(session: Session, name: str | None, include_deleted: bool) -> None:
    """List entities that have state, ordered by id."""
    with session.reader() as reader:
        found = reader.list_entities(name, include_deleted)
    if session.as_json:
        _print_json([
            {"entity_id": str(m.entity_id), "exists": m.entity_exists, "state": m.entity_state,
             "locked_by": m.locked_by, "queue_length": m.queue_length, "last_modified": timestamp(m.last_modified)}
            for m in found
        ])
    else:
        _print_table(_entities_table(found))


@main.command()
@click.argument("entity_id")
@click.pass_obj
def entity(session: Session, entity_id: str) -> None:
    """Show an entity's committed state (ENTITY_ID is @name@key)."""
    eid = EntityId.parse(entity_id)
    with session.reader() as reader:
        response = reader.read_entity_state(eid)
    if not response.entity_exists:
        raise click.ClickException(f"no entity {eid} (or it has no state)")
    if session.as_json:
        _print_json({"entity_id": str(eid), "exists": True, "state": response.entity_state})
    else:
        _print_table(_key_value_table([("Entity ID", str(eid)), ("State", cell(response.entity_state, None))]))


# -- control commands --------------------------------------------------------------------------------

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


@main.command("raise")
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
) -> None:
    """Register command ``name``: ``action(hub, INSTANCE_ID, --reason)``, then :func:`_report`."""

    def command(session: Session, instance_id: str, reason: str | None, wait_seconds: float | None = None) -> None:
        with session.writer() as hub:
            action(hub, instance_id, reason)
            _report(hub, done, instance_id, wait_seconds)

    command.__doc__ = summary
    decorated = click.pass_obj(command)
    if waits:
        decorated = _wait_option(decorated)
    main.command(name)(click.argument("instance_id")(_reason_option(decorated)))


_lifecycle_command("terminate", TaskHub.terminate, "terminated",
                   "Terminate a running or suspended instance (releases every lock it holds).", waits=False)
_lifecycle_command("suspend", TaskHub.suspend, "suspended",
                   "Suspend an instance: what arrives for it is held until it resumes.", waits=False)
_lifecycle_command("resume", TaskHub.resume, "resumed", "Resume a suspended instance.", waits=True)
_lifecycle_command("rewind", TaskHub.rewind, "rewound", "Re-run a Failed instance from its last good state.",
                   waits=True)


@main.command()
@click.argument("instance_id", required=False)
@_time_filters
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
            count = hub.purge_instance_history_by(created_from, created_to, _runtime_status(statuses))
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


if __name__ == "__main__":  # python -m runtime.cli
    main()
