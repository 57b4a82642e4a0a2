"""Readable renderings of durable data for people (demo, CLI)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from orchestrations import HistoryEvent

#: The columns of the seed's history table.
HISTORY_COLUMNS = ("Event type", "Timestamp", "Name", "Input", "Result")


def cell(value: Any, limit: int | None = 48) -> str:
    """``value`` as one line of JSON (``repr`` for what JSON cannot hold), cut at ``limit``
    characters (``None``: never cut); ``None`` is the empty string."""
    if value is None:
        return ""
    try:
        text = json.dumps(value, default=repr, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if limit is None or len(text) <= limit else text[: limit - 3] + "..."


def timestamp(moment: datetime) -> str:
    """A UTC time in ISO 8601 with milliseconds and a ``Z``."""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def history_rows(events: Sequence[HistoryEvent] | Sequence[Any]) -> list[tuple[str, str, str, str, str]]:
    """One row per event (a ``HistoryEvent``, or a record with its five shown fields, such as
    an event not decoded): type, ISO timestamp (ms), name, input and result as JSON."""
    return [(e.event_type, timestamp(e.timestamp), e.name or "", _input(e), cell(e.result)) for e in events]


def _input(event: Any) -> str:
    """The Input cell; a timer, which has none, shows when it fires."""
    fire_at = getattr(event, "fire_at", None)
    if event.input is None and isinstance(fire_at, datetime):
        return f"fires {timestamp(fire_at)}"
    return cell(event.input)


def format_history(events: Sequence[HistoryEvent]) -> str:
    """The history as a Markdown table, like the seed's history table."""
    rows = [HISTORY_COLUMNS, *history_rows(events)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HISTORY_COLUMNS))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)
