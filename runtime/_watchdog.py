"""A watchdog for orchestrator code that blocks its shard.

Orchestrator code runs on the shard host's event loop: while an episode runs, every other
instance of the shard waits. Code that blocks (``time.sleep``, a network call, a long loop) is
a bug, as in Temporal, whose deadlock detector reports a workflow thread that does not yield
for a second. :class:`EpisodeWatch` does the same: a daemon thread looks at the episode in
progress a few times a second and, once one has run longer than ``bound`` seconds, logs a
warning naming the orchestrator, the instance and the line it is stuck on (read from the
running thread's stack). The episode itself is not interrupted.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from types import CodeType, FrameType

log = logging.getLogger("ray_durable.watchdog")


class EpisodeWatch:
    """Reports episodes that run longer than ``bound`` seconds. ``begin``/``end`` around each
    stretch of orchestrator code cost two attribute writes; the checking happens on a thread."""

    def __init__(self, bound: float) -> None:
        if not bound > 0:
            raise ValueError(f"the episode warning bound must be a positive number of seconds, got {bound!r}")
        self.bound = bound
        #: (start, thread id, instance id, orchestrator name, its code object) or None
        self._current: tuple[float, int, str, str, CodeType | None] | None = None
        self._reported: object = None
        #: how many episodes were reported, and the last report
        self.slow_episodes = 0
        self.last_warning = ""
        self._thread: threading.Thread | None = None

    def begin(self, instance_id: str, name: str, code: CodeType | None) -> None:
        """Orchestrator code of ``instance_id`` starts running on this thread."""
        self._current = (time.monotonic(), threading.get_ident(), instance_id, name, code)
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="episode-watchdog", daemon=True)
            self._thread.start()

    def end(self) -> None:
        """It stopped (yielded, returned or raised)."""
        self._current = None

    def _watch(self) -> None:
        while True:
            time.sleep(min(0.25, self.bound / 4))
            self.check()

    def check(self) -> str | None:
        """Report the episode in progress if it is over the bound (once per episode); returns
        the warning, if one was logged."""
        current = self._current
        if current is None or current is self._reported or time.monotonic() - current[0] < self.bound:
            return None
        self._reported = current
        started, thread_id, instance_id, name, code = current
        where = locate(sys._current_frames().get(thread_id), code)
        message = (
            f"orchestrator {name!r} (instance {instance_id!r}) has run for {time.monotonic() - started:.1f} s "
            f"without yielding{where}: orchestrator code runs on the shard's event loop and blocks every "
            "other instance of the shard; do slow or blocking work in an activity (context.call_activity) "
            "and wait with context.create_timer, never time.sleep"
        )
        self.slow_episodes += 1
        self.last_warning = message
        log.warning(message)
        return message


def locate(frame: FrameType | None, code: CodeType | None) -> str:
    """`` at file:line`` of the orchestrator's own frame on ``frame``'s stack (the line it is
    stuck on), with the innermost frame too when that is elsewhere; ``""`` if unknown."""
    innermost = frame
    while frame is not None and code is not None and frame.f_code is not code:
        frame = frame.f_back
    if frame is None:
        return ""
    where = f" at {os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"
    if innermost is not None and innermost is not frame:
        inner = innermost.f_code
        where += f" (inside {inner.co_name}, {os.path.basename(inner.co_filename)}:{innermost.f_lineno})"
    return where
