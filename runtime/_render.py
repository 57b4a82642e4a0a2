"""Readable renderings of durable data for people (demo, CLI)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from orchestrations import HistoryEvent

_COLUMNS = ("Event type", "Timestamp", "Name", "Input", "Result")


def _cell(value: Any, limit: int = 48) -> str:
    if value is None:
        return ""
    try:
        text = json.dumps(value, default=repr, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def history_rows(events: Sequence[HistoryEvent]) -> list[tuple[str, str, str, str, str]]:
    """One row per event: type, ISO timestamp (ms), name, input and result as JSON."""
    return [
        (
            e.event_type,
            e.timestamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            e.name or "",
            _cell(e.input),
            _cell(e.result),
        )
        for e in events
    ]


def format_history(events: Sequence[HistoryEvent]) -> str:
    """The history as a Markdown table, like the seed's history table."""
    rows = [_COLUMNS, *history_rows(events)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)
