"""What the orchestration context hands out: the lock handle of a critical section and the
replay-safe logger. Pure."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._context import OrchestrationContext


class ReplaySafeLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger adapter that drops records while the context replays and adds ``instance_id``."""

    def __init__(self, logger: logging.Logger, context: OrchestrationContext) -> None:
        super().__init__(logger, {"instance_id": context.instance_id})
        self._context = context

    def isEnabledFor(self, level: int) -> bool:  # noqa: N802 (logging's name)
        # every LoggerAdapter method asks this first; not overriding log() keeps the record's
        # source line the caller's
        return not self._context.is_replaying and self.logger.isEnabledFor(level)


class LockHandle:
    """What ``yield context.lock_entities(...)`` returns: leaving its ``with`` block ends the
    critical section (its unlock messages are recorded like any other action). In an
    ``async def`` orchestrator, ``async with await context.lock_entities(...)`` does the same."""

    __slots__ = ("_context", "_section_id", "lock_set")

    def __init__(self, context: OrchestrationContext, lock_set: tuple[str, ...], section_id: int) -> None:
        self._context = context
        self.lock_set = lock_set
        self._section_id = section_id

    def __enter__(self) -> LockHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    async def __aenter__(self) -> LockHandle:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()

    def release(self) -> None:
        """End the critical section now (a second call, or a call on the handle of a section
        that already ended, does nothing)."""
        section = self._context._section
        if section.active and section.section_id == self._section_id:
            self._context._release_locks()
