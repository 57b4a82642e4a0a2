"""Reading and writing spans of time for people: filters' times (relative or ISO 8601) and
durations at a glance. Shared by the CLI and the web UI."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from orchestrations import DurableValueError

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def duration(delta: timedelta) -> str:
    """A short reading of ``delta``: ``850 ms``, ``12.3 s``, ``4 min 10 s``, ``2 h 5 min``."""
    seconds = delta.total_seconds()
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60)} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"


def parse_time(text: str | None, now: datetime | None = None) -> datetime | None:
    """A filter's time: empty -> ``None``; ``30s``, ``15m``, ``1h``, ``2d``, ``1w`` -> that
    long before ``now``; otherwise ISO 8601 (UTC when it names no zone). Anything else raises
    :class:`DurableValueError` naming the text."""
    if text is None or not text.strip():
        return None
    match = _RELATIVE.match(text)
    if match:
        return (now or datetime.now(UTC)) - timedelta(seconds=float(match[1]) * _UNITS[match[2]])
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise DurableValueError(
            f"time {text!r} is neither relative (30s, 15m, 1h, 2d, 1w) nor ISO 8601 (2026-12-01T10:00)"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
