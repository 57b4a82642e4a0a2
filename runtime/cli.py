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

``export`` and ``replay`` always read the files, read-only, and decode values as the hub does
(they import the application's code): ``export ID`` writes a history as JSON, ``replay``
replays stored histories against the code importable here (``--import MODULE``) and exits
with status 1 if any instance would fail (:mod:`runtime._cli_replay`).

A missing hub, instance or entity, and any refusal by the hub, is one line on stderr and exit
status 1; bad usage is exit status 2. The current directory is put on ``sys.path`` (as
``python -m`` does) because a control command runs the hub's code, which lives there.

Reading a hub's files runs no code from them: values are rebuilt only if they are plain data
or this product's records (a user's object shows as its type name), and ``--no-decode`` shows
the stored bytes without rebuilding anything (always from the files, never a running hub).
A control command on a closed hub does load the hub's code from its files, to run it.
"""

from __future__ import annotations

import os
import pickle
import sqlite3
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from ray.exceptions import RayError

from entities import EntityId
from orchestrations import DurableError, InstanceNotFoundError
from orchestrations._registry import default_registry

from . import _cli_control, _cli_replay, _cli_ui
from ._cli_options import json_flag, runtime_status, time_filters
from ._cli_output import (
    entities_table,
    history_json,
    history_table,
    hubs_table,
    instances_table,
    key_value_table,
    print_json,
    print_table,
    status_json,
    status_table,
    waiting_json,
    waiting_table,
)
from ._cli_session import Session
from ._files import read_hub_file
from ._render import cell, timestamp
from ._status import DurableOrchestrationStatus
from ._ui_views import waiting_for

#: Errors that are the user's situation, not a bug: shown as one line, exit status 1.
_EXPECTED = (DurableError, ValueError, OSError, sqlite3.Error, RayError)
_PAGE = 500


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


@click.group(cls=_Group)
@click.version_option(package_name="ray-durable", prog_name="ray-durable")
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
@json_flag
@time_filters
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
            page = reader.list_instances(created_from, created_to, runtime_status(statuses), _PAGE, token)
            found += [s for s in page.instances if s.name.startswith(name_prefix)]
            token = page.continuation_token
            if token is None:
                break
    more = bool(limit) and len(found) > limit
    found = found[:limit] if limit else found
    if session.as_json:
        print_json([status_json(s) for s in found])
    else:
        print_table(instances_table(found))
    if more:
        click.echo(f"(the first {limit}; --limit 0 lists all)", err=True)


@main.command()
@json_flag
@click.argument("instance_id")
@click.option("--history", "with_history", is_flag=True, help="Also print the history.")
@click.pass_obj
def status(session: Session, instance_id: str, with_history: bool) -> None:
    """Show the status of an orchestration instance."""
    with session.reader() as reader:
        found = reader.get_status(instance_id)
        if found is None:
            raise InstanceNotFoundError(instance_id)
        recorded = reader.get_history(instance_id)
    events = recorded if with_history else None
    waiting = waiting_for(recorded, default_registry, instance_id)
    if session.as_json:
        print_json({**status_json(found), "waiting_for": waiting_json(waiting),
                    **({"history": history_json(events)} if events is not None else {})})
        return
    print_table(status_table(found, waiting))
    if events is not None:
        print_table(history_table(events))


@main.command()
@json_flag
@click.argument("instance_id")
@click.pass_obj
def history(session: Session, instance_id: str) -> None:
    """Show the history of an orchestration instance (the seed's history table)."""
    with session.reader() as reader:
        events = reader.get_history(instance_id)
    waiting = waiting_for(events, default_registry, instance_id)
    if session.as_json:
        print_json(history_json(events))
        return
    print_table(history_table(events))
    if waiting:
        print_table(waiting_table(waiting))


@main.command()
@json_flag
@click.option("--name", default=None, help="Only entities of this name (in any case).")
@click.option("--include-deleted", is_flag=True, help="Also entities without state (deleted, locked or queued).")
@click.pass_obj
def entities(session: Session, name: str | None, include_deleted: bool) -> None:
    """List entities that have state, ordered by id."""
    with session.reader() as reader:
        found = reader.list_entities(name, include_deleted)
    if session.as_json:
        print_json([
            {"entity_id": str(m.entity_id), "exists": m.entity_exists, "state": m.entity_state,
             "locked_by": m.locked_by, "queue_length": m.queue_length, "last_modified": timestamp(m.last_modified)}
            for m in found
        ])
    else:
        print_table(entities_table(found))


@main.command()
@json_flag
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
        print_json({"entity_id": str(eid), "exists": True, "state": response.entity_state})
    else:
        print_table(key_value_table([("Entity ID", str(eid)), ("State", cell(response.entity_state, None))]))


@main.command()
@json_flag
@click.pass_obj
def hubs(session: Session) -> None:
    """List the task hubs under --data-dir: name, shards, format version, size on disk."""
    found = []
    root = Path(session.data_dir)
    for directory in sorted(root.iterdir()) if root.is_dir() else []:
        try:
            info = read_hub_file(str(directory)) if directory.is_dir() else None
        except DurableError as exc:  # a broken hub record is listed as such, not a traceback
            info = {"num_shards": "?", "format_version": f"unreadable: {exc}"}
        if info is not None:
            size = sum(f.stat().st_size for f in directory.iterdir() if f.is_file())
            found.append({"hub": directory.name, "num_shards": info.get("num_shards"),
                          "format_version": info.get("format_version"), "bytes": size})
    if session.as_json:
        print_json(found)
    elif not found:
        click.echo(f"no task hub under {root.resolve()}", err=True)
    else:
        print_table(hubs_table(found))


for _command in [*_cli_control.COMMANDS, *_cli_replay.COMMANDS, *_cli_ui.COMMANDS]:
    main.add_command(_command)


if __name__ == "__main__":  # python -m runtime.cli
    main()
