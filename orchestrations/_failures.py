"""How failures are reported: the FailureDetails of an exception, and the TaskFailedError a
failed task raises at its ``yield``. Pure."""

from __future__ import annotations

import os
import traceback
from types import TracebackType

from ._errors import TaskFailedError
from ._history import FailureDetails, HistoryEvent, SubOrchestrationInstanceFailed
from ._http import HttpTask
from ._task import CompletableTask, RetryableTask


def error_type_name(cls: type[BaseException]) -> str:
    """``module.QualName`` of an exception type: bare for built-ins, and the public package
    (not the private module) for Ray Durable's own errors."""
    module = cls.__module__
    if module == "builtins":
        return cls.__qualname__
    if module.split(".")[0] in ("orchestrations", "entities", "runtime"):
        module = module.split("._")[0]
    return f"{module}.{cls.__qualname__}"


def failure_of(exc: BaseException) -> FailureDetails:
    """The :class:`FailureDetails` of an exception raised by user code.

    A :class:`TaskFailedError` that names its task (a failed activity, sub-orchestration or
    entity operation nobody caught) is reported as durabletask reports it: ``error_type``
    ``"TaskFailedError"`` and the message ``"<task> failed: <cause message>"``; the cause's type,
    message and traceback open the details.
    """
    details = "".join(traceback.format_exception(type(exc), exc, _user_frames(exc.__traceback__)))
    if isinstance(exc, TaskFailedError) and exc.task:
        cause = f"{exc.error_type}: {exc.message}" if exc.error_type else exc.message
        details = f"Caused by {cause}\n{exc.details or ''}\n{details}"
        return FailureDetails("TaskFailedError", f"{exc.task} failed: {exc.message}", details, None)
    if isinstance(exc, TaskFailedError) and exc.error_type:
        return FailureDetails(exc.error_type, exc.message, details, None)  # passed on: keeps its type
    message = exc.message if isinstance(exc, TaskFailedError) else exception_message(exc)
    return FailureDetails(error_type_name(type(exc)), message, details, None)


def exception_message(exc: BaseException) -> str:
    """``str(exc)``, or what :mod:`traceback` prints when that fails (a user's ``__str__``
    that raises or returns a non-string must fail its task, not the engine)."""
    try:
        return str(exc)
    except Exception:
        return "<exception str() failed>"


def _user_frames(tb: TracebackType | None) -> TracebackType | None:
    """``tb`` without its leading frames in this package (the engine that drove the user's
    code), so a failure's details start at the user's own line."""
    while tb is not None and tb.tb_next is not None and tb.tb_frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        tb = tb.tb_next
    return tb


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def task_failed_error(failure: FailureDetails, task: str | None = None) -> TaskFailedError:
    """The exception a failed task raises at its ``yield`` (``task`` names the task)."""
    return TaskFailedError(failure.message, failure.error_type, failure.details, failure.cause, task)


def task_label(task: CompletableTask, event: HistoryEvent | None) -> str:
    """How failure messages name a task: ``"Activity task #1"`` (its first attempt's number)."""
    number = task.first_id if isinstance(task, RetryableTask) else task.task_id
    if isinstance(task, HttpTask):
        return f"HTTP request task #{number}"
    if isinstance(event, SubOrchestrationInstanceFailed):
        return f"Sub-orchestration task #{number}"
    return f"Activity task #{number}"
