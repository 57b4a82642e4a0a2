"""What ``ray-durable`` prints: JSON, or rich tables (the seed's history table among them)."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from orchestrations import FailureDetails, HistoryEvent

from ._readonly import RawEvent
from ._render import HISTORY_COLUMNS, cell, history_rows, timestamp
from ._status import DurableOrchestrationStatus, EntityMetadata
from ._ui_views import Waiting


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, default=repr, ensure_ascii=False, indent=2))


def print_table(table: Table) -> None:
    """A table on stdout; wide enough not to cut ids when stdout is not a terminal."""
    console = Console(width=None if sys.stdout.isatty() else 200, highlight=False, soft_wrap=False)
    console.print(table)


def status_json(s: DurableOrchestrationStatus) -> dict[str, Any]:
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


def history_json(events: Sequence[HistoryEvent] | Sequence[RawEvent]) -> list[dict[str, Any]]:
    """One object per event; a timer's also says when it fires (``fire_at``)."""
    return [
        {"event_type": e.event_type, "timestamp": timestamp(e.timestamp), "name": e.name, "input": e.input,
         "result": e.result, **({"fire_at": timestamp(fire)} if (fire := getattr(e, "fire_at", None)) else {})}
        for e in events
    ]


def waiting_json(waiting: Sequence[Waiting]) -> list[dict[str, Any]]:
    """What an instance waits for, as JSON objects."""
    return [{"kind": w.kind, "what": w.what, "since": timestamp(w.since) if w.since else None,
             "fires_at": timestamp(w.fires_at) if w.fires_at else None} for w in waiting]


def waiting_table(waiting: Sequence[Waiting]) -> Table:
    """What an instance waits for: kind, what, since, and a timer's fire time."""
    table = Table("Waiting for", "What", "Since", "Fires at", title="Waiting for")
    for w in waiting:
        since, fires = (timestamp(t) if t else "" for t in (w.since, w.fires_at))
        table.add_row(w.kind, w.what, since, fires)
    return table


def history_table(events: Sequence[HistoryEvent] | Sequence[RawEvent]) -> Table:
    table = Table(*HISTORY_COLUMNS, title="History")
    for row in history_rows(events):
        table.add_row(*row)
    return table


def key_value_table(rows: Sequence[tuple[str, str]]) -> Table:
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in rows:
        table.add_row(key, value)
    return table


def status_table(s: DurableOrchestrationStatus, waiting: Sequence[Waiting] = ()) -> Table:
    """The status as rows of a key-value table; ``waiting`` adds a "Waiting for" row."""
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
    if waiting:
        rows.append(("Waiting for", "; ".join(_waiting_text(w) for w in waiting)))
    return key_value_table(rows)


def _waiting_text(w: Waiting) -> str:
    return f"{w.kind} {w.what}" + (f" (fires {timestamp(w.fires_at)})" if w.fires_at else "")


def entities_table(found: Sequence[EntityMetadata]) -> Table:
    table = Table("Entity ID", "Exists", "State", "Locked by", "Queued", "Last modified")
    for m in found:
        table.add_row(str(m.entity_id), "yes" if m.entity_exists else "no", cell(m.entity_state),
                      m.locked_by or "", str(m.queue_length), timestamp(m.last_modified))
    return table


def instances_table(found: Sequence[DurableOrchestrationStatus]) -> Table:
    table = Table("Instance ID", "Name", "Status", "Created", "Last updated", "Output")
    for s in found:
        table.add_row(s.instance_id, s.name, s.runtime_status.value, timestamp(s.created_time),
                      timestamp(s.last_updated_time), cell(s.output, 40))
    return table


def hubs_table(found: Sequence[dict[str, Any]]) -> Table:
    """The hubs under a data directory."""
    table = Table("Hub", "Shards", "Format", "Size")
    for h in found:
        table.add_row(h["hub"], str(h["num_shards"]), str(h["format_version"]), f"{h['bytes'] / 2**20:.1f} MiB")
    return table
