"""Retry policy for activities and sub-orchestrations, and its (pure) delay math."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from ._errors import DurableTypeError, DurableValueError, TaskFailedError


@dataclass(frozen=True, slots=True)
class RetryOptions:
    """How to retry a failed activity or sub-orchestration.

    The n-th retry (n = 1, 2, ...) waits ``first_retry_interval * backoff_coefficient**(n-1)``,
    capped at ``max_retry_interval``. No retry is made once ``max_number_of_attempts`` attempts
    (the first call included) have failed, once ``retry_timeout`` has passed since the first
    attempt was scheduled, or when ``handle(error)`` returns ``False``. Waits are durable
    timers, so replay reproduces every attempt from history.
    """

    first_retry_interval: timedelta
    max_number_of_attempts: int
    backoff_coefficient: float = 1.0
    max_retry_interval: timedelta | None = None
    retry_timeout: timedelta | None = None
    handle: Callable[[TaskFailedError], bool] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.first_retry_interval, timedelta):
            raise DurableTypeError(
                f"first_retry_interval must be a timedelta, not {self.first_retry_interval!r}"
            )
        if self.first_retry_interval <= timedelta(0):
            raise DurableValueError(
                f"first_retry_interval must be positive, got {self.first_retry_interval!r}"
            )
        if not isinstance(self.max_number_of_attempts, int) or self.max_number_of_attempts < 1:
            raise DurableValueError(
                f"max_number_of_attempts must be an int >= 1, got {self.max_number_of_attempts!r}"
            )
        if self.backoff_coefficient < 1.0:
            raise DurableValueError(
                f"backoff_coefficient must be >= 1.0, got {self.backoff_coefficient!r}"
            )
        if self.max_retry_interval is not None and self.max_retry_interval <= timedelta(0):
            raise DurableValueError(
                f"max_retry_interval must be positive, got {self.max_retry_interval!r}"
            )
        if self.retry_timeout is not None and self.retry_timeout <= timedelta(0):
            raise DurableValueError(f"retry_timeout must be positive, got {self.retry_timeout!r}")

    def next_delay(
        self,
        attempts_failed: int,
        first_attempt_at: datetime,
        now: datetime,
        error: TaskFailedError,
    ) -> timedelta | None:
        """The wait before the next attempt, or ``None`` to give up.

        ``attempts_failed`` counts the failed attempts so far (>= 1).
        """
        if attempts_failed >= self.max_number_of_attempts:
            return None
        if self.handle is not None and not self.handle(error):
            return None
        delay = self.first_retry_interval * (self.backoff_coefficient ** (attempts_failed - 1))
        if self.max_retry_interval is not None and delay > self.max_retry_interval:
            delay = self.max_retry_interval
        if self.retry_timeout is not None and now + delay > first_attempt_at + self.retry_timeout:
            return None
        return delay
