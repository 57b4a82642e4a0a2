"""The pure delay math of :class:`RetryOptions` and its validation.

The engine side (timers, new task ids, giving up) is in ``test_executor.py``.
"""

from datetime import timedelta

import pytest

from orchestrations import DurableTypeError, DurableValueError, RetryOptions, TaskFailedError
from orchestrations.testing import T0, at

ERROR = TaskFailedError("boom", "ValueError")
S = timedelta(seconds=1)


def delays(opts, attempts, now=T0, first=T0, error=ERROR):
    return [opts.next_delay(n, first, now, error) for n in range(1, attempts + 1)]


def test_constant_interval_until_max_attempts():
    opts = RetryOptions(first_retry_interval=5 * S, max_number_of_attempts=3)
    # after the 1st and 2nd failure wait 5 s; after the 3rd (of 3 attempts) give up
    assert delays(opts, 4) == [5 * S, 5 * S, None, None]


def test_single_attempt_never_retries():
    assert delays(RetryOptions(first_retry_interval=S, max_number_of_attempts=1), 1) == [None]


def test_backoff_coefficient_multiplies_each_retry():
    opts = RetryOptions(first_retry_interval=5 * S, max_number_of_attempts=5, backoff_coefficient=2.0)
    assert delays(opts, 5) == [5 * S, 10 * S, 20 * S, 40 * S, None]


def test_fractional_coefficient():
    opts = RetryOptions(first_retry_interval=4 * S, max_number_of_attempts=4, backoff_coefficient=1.5)
    assert delays(opts, 3) == [4 * S, 6 * S, 9 * S]


def test_max_retry_interval_caps_the_delay():
    opts = RetryOptions(
        first_retry_interval=5 * S,
        max_number_of_attempts=10,
        backoff_coefficient=3.0,
        max_retry_interval=30 * S,
    )
    assert delays(opts, 5) == [5 * S, 15 * S, 30 * S, 30 * S, 30 * S]


def test_retry_timeout_stops_retries_that_would_end_past_it():
    opts = RetryOptions(first_retry_interval=10 * S, max_number_of_attempts=10, retry_timeout=60 * S)
    assert opts.next_delay(1, T0, at(40), ERROR) == 10 * S
    assert opts.next_delay(2, T0, at(50), ERROR) == 10 * S  # ends exactly at the timeout: allowed
    assert opts.next_delay(3, T0, at(51), ERROR) is None
    assert opts.next_delay(3, at(100), at(140), ERROR) == 10 * S  # counted from the first attempt


def test_handle_decides_which_errors_are_retried():
    seen = []

    def only_timeouts(error):
        seen.append(error)
        return error.error_type == "TimeoutError"

    opts = RetryOptions(first_retry_interval=S, max_number_of_attempts=3, handle=only_timeouts)
    timeout = TaskFailedError("slow", "TimeoutError")
    assert opts.next_delay(1, T0, T0, timeout) == S
    assert opts.next_delay(1, T0, T0, ERROR) is None
    assert seen == [timeout, ERROR]


def test_handle_is_not_consulted_once_attempts_are_used_up():
    calls = []
    opts = RetryOptions(first_retry_interval=S, max_number_of_attempts=2, handle=lambda e: calls.append(e) or True)
    assert opts.next_delay(2, T0, T0, ERROR) is None
    assert calls == []


def test_retry_options_are_frozen():
    opts = RetryOptions(first_retry_interval=S, max_number_of_attempts=2)
    with pytest.raises(AttributeError):
        opts.max_number_of_attempts = 5


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"first_retry_interval": 5, "max_number_of_attempts": 3}, DurableTypeError),
        ({"first_retry_interval": timedelta(0), "max_number_of_attempts": 3}, DurableValueError),
        ({"first_retry_interval": -S, "max_number_of_attempts": 3}, DurableValueError),
        ({"first_retry_interval": S, "max_number_of_attempts": 0}, DurableValueError),
        ({"first_retry_interval": S, "max_number_of_attempts": 2.5}, DurableValueError),
        ({"first_retry_interval": S, "max_number_of_attempts": 3, "backoff_coefficient": 0.5}, DurableValueError),
        (
            {"first_retry_interval": S, "max_number_of_attempts": 3, "max_retry_interval": timedelta(0)},
            DurableValueError,
        ),
        ({"first_retry_interval": S, "max_number_of_attempts": 3, "retry_timeout": -S}, DurableValueError),
    ],
)
def test_bad_retry_options_are_rejected(kwargs, error):
    with pytest.raises(error) as info:
        RetryOptions(**kwargs)
    assert isinstance(info.value, (ValueError, TypeError))
