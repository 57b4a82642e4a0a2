"""``ray-durable export`` and ``ray-durable replay``: a history as JSON, and stored histories
replayed against the code importable here, for CI before a deploy.

Both read a hub's files read-only (never a running hub's actors: they need no Ray) and decode
values as a shard host does, importing the modules of a user's classes
(:mod:`runtime.replay`): run them where the application's code is importable, on files you
trust as much as that code.
"""

from __future__ import annotations

import importlib
import os
from contextlib import closing
from typing import Any

import click

from orchestrations import DurableValueError
from orchestrations.testing import Replayer, ReplayResult

from ._cli_output import print_json
from ._cli_session import Session
from ._files import open_private
from ._history_json import history_to_json
from ._readonly import HubFiles
from .replay import load_json_file, replay_files


@click.command()
@click.argument("instance_id")
@click.option("--hub", default=None, help="Task hub name (default: the one given before the command).")
@click.option("--data-dir", default=None, help="Where the hub's files are (default: as before the command).")
@click.option("-o", "--output", default=None, type=click.Path(dir_okay=False), help="Write to this file (0600).")
@click.pass_obj
def export(session: Session, instance_id: str, hub: str | None, data_dir: str | None, output: str | None) -> None:
    """Write an instance's history as JSON, read from the hub's files (read-only)."""
    with closing(HubFiles(hub or session.hub, data_dir or session.data_dir, trusted=True)) as files:
        events = files.get_history(instance_id)
    text = history_to_json(instance_id, events)  # type: ignore[arg-type]  # decoded: HistoryEvents
    if output is None:
        click.echo(text)
        return
    with os.fdopen(open_private(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "w", encoding="utf-8") as f:
        f.write(text + "\n")
    click.echo(f"wrote the history of {instance_id} ({len(events)} events) to {output}", err=True)


@click.command()
@click.option("--hub", default=None, help="Replay every instance stored in this hub's files.")
@click.option("--data-dir", default=None, help="Where the hub's files are (default: as before the command).")
@click.option("--file", "paths", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Replay the histories in this exported JSON file (repeatable).")
@click.option("--import", "modules", multiple=True, metavar="MODULE",
              help="Import this module first, so its orchestrators register (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print every result as JSON.")
@click.pass_obj
def replay(
    session: Session, hub: str | None, data_dir: str | None, paths: tuple[str, ...], modules: tuple[str, ...],
    as_json: bool,
) -> None:
    """Replay stored histories against the orchestrators importable here (the ones --import
    registers) and report every instance that would fail: exit status 1 if any would, 0 if
    none would, 2 on bad arguments. Reads the hub's files (--hub, or the hub given before the
    command when no --file is given) and exported JSON files (--file)."""
    for module in modules:
        import_module(module)
    replayer = Replayer()
    results: list[ReplayResult] = []
    for path in paths:
        try:
            results += replayer.replay(load_json_file(path))
        except DurableValueError as exc:
            raise click.BadParameter(f"{path}: {exc}", param_hint="--file") from None
    if hub is not None or not paths:
        results += _replay_hub(replayer, hub or session.hub, data_dir or session.data_dir)
    _print_results(results, as_json or session.as_json)
    if any(not r.ok for r in results):
        click.get_current_context().exit(1)


def import_module(module: str) -> None:
    """Import ``module`` (the current directory is on ``sys.path``); a module that cannot be
    imported is a bad argument."""
    try:
        importlib.import_module(module)
    except Exception as exc:  # the user's module: any error it raises while importing
        reason = f"cannot import {module!r}: {type(exc).__name__}: {exc}"
        raise click.BadParameter(reason, param_hint="--import") from None


def _replay_hub(replayer: Replayer, hub: str, data_dir: str) -> list[ReplayResult]:
    try:
        files = HubFiles(hub, data_dir)  # a hub that is not there is a bad argument, not a failure
    except DurableValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--hub") from None
    files.close()
    return replay_files(replayer, hub, data_dir)


def _print_results(results: list[ReplayResult], as_json: bool) -> None:
    failing = [r for r in results if not r.ok]
    if as_json:
        print_json({"replayed": len(results), "failing": len(failing), "results": [_result_json(r) for r in results]})
        return
    for result in failing:
        click.echo(result.describe())
    if failing:
        click.echo(f"{len(failing)} of {len(results)} instance(s) would fail with this code")
    else:
        click.echo(f"all {len(results)} instance(s) replay cleanly with this code")


def _result_json(result: ReplayResult) -> dict[str, Any]:
    return {"instance_id": result.instance_id, "name": result.name, "ok": result.ok,
            "error_type": result.error_type, "message": result.message}


#: the commands this module adds to ``ray-durable``
COMMANDS: list[click.Command] = [export, replay]
