"""Where orchestrator code stands: the file and line a failure message points the user to. Pure.

Only called when something is reported (a nondeterminism), never on the way of a healthy
episode.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from types import FrameType
from typing import Any

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def code_location(running: Any, fn: Callable[..., Any] | None) -> str | None:
    """``"file:line"`` of the ``yield`` (or ``await``) the orchestrator's generator or
    coroutine ``running`` is suspended at, in the user's innermost frame (through ``yield
    from`` and awaited coroutines, skipping this package's own frames); else the first line of
    the orchestrator function ``fn`` (its code already returned); ``None`` if neither is known."""
    frame = _innermost_user_frame(running)
    if frame is not None:
        return f"{frame.f_code.co_filename}:{frame.f_lineno}"
    code = getattr(fn, "__code__", None)
    if code is not None:
        return f"{code.co_filename}:{code.co_firstlineno}"
    return None


def _innermost_user_frame(running: Any) -> FrameType | None:
    found: FrameType | None = None
    seen = 0
    while running is not None and seen < 100:  # a chain of yield from / await, bounded
        seen += 1
        frame = getattr(running, "gi_frame", None) or getattr(running, "cr_frame", None)
        if frame is None:
            break
        if not frame.f_code.co_filename.startswith(_PACKAGE_DIR):
            found = frame
        running = getattr(running, "gi_yieldfrom", None) or getattr(running, "cr_await", None)
    return found
