"""The one error tree of Ray Durable.

Every error the product raises derives from :class:`DurableError`. Terminal failures (the
instance or task cannot succeed by trying again) derive from :class:`TerminalError`; failures
that a retry may cure derive from :class:`RetryableError`. Bad input derives from
:class:`DurableValueError`, which is also a :class:`ValueError` so callers can catch the
familiar built-in type.

Every class here survives a pickle round trip (Ray pickles exceptions between processes): each
one passes all of its constructor arguments to ``Exception.__init__`` or defines
``__reduce__``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


class DurableError(Exception):
    """Root of every error raised by Ray Durable."""


class TerminalError(DurableError):
    """A failure that retrying the same thing will not cure."""


class RetryableError(DurableError):
    """A transient failure: the same request may succeed later."""


class DurableValueError(DurableError, ValueError):
    """Bad input at an API call: the message names the bad value. Nothing was written."""


class DurableTypeError(DurableError, TypeError):
    """An argument of the wrong type at an API call. Nothing was written."""


class InstanceNotFoundError(DurableError, LookupError):
    """No orchestration instance has the given id."""

    def __init__(self, instance_id: str) -> None:
        super().__init__(instance_id)
        self.instance_id = instance_id

    def __str__(self) -> str:
        return f"no orchestration instance with id {self.instance_id!r}"


class InstanceAlreadyExistsError(TerminalError):
    """``start_new`` named an id whose instance is Pending, Running or Suspended."""

    def __init__(self, instance_id: str, status: str) -> None:
        super().__init__(instance_id, status)
        self.instance_id = instance_id
        self.status = status

    def __str__(self) -> str:
        return (
            f"an orchestration instance with id {self.instance_id!r} already exists and is "
            f"{self.status}; only Completed, Failed or Terminated instances can be replaced"
        )


class TaskFailedError(TerminalError):
    """An activity, sub-orchestration or entity operation failed.

    Raised at the ``yield`` of the failed task inside the orchestrator. ``error_type`` is the
    qualified name of the original exception type, ``message`` its message, ``details`` its
    formatted traceback, ``cause`` the original exception where it could be rebuilt (else
    ``None``), and ``task`` names the task (``"Activity task #3"``). An orchestration that lets
    it escape fails with ``error_type`` ``"TaskFailedError"`` and the message
    ``"<task> failed: <message>"`` (the cause's type and traceback stay in the details), as in
    durabletask.
    """

    def __init__(
        self,
        message: str,
        error_type: str = "",
        details: str | None = None,
        cause: BaseException | None = None,
        task: str | None = None,
    ) -> None:
        super().__init__(message, error_type, details, cause, task)
        self.message = message
        self.error_type = error_type
        self.details = details
        self.cause = cause
        self.task = task
        if cause is not None:
            self.__cause__ = cause

    def __str__(self) -> str:
        return f"{self.error_type}: {self.message}" if self.error_type else self.message


class HttpTimeoutError(TaskFailedError):
    """``call_http`` ran out of its ``timeout`` while polling a ``202 Accepted`` response.

    Raised at the ``yield`` of the HTTP task (catch it as :class:`TaskFailedError` or by its
    own type); ``error_type`` is ``"TimeoutError"``. The budget is measured with the
    orchestration's deterministic clock, so replay times out at the same poll.
    """


class EventTimeoutError(TaskFailedError):
    """``wait_for_external_event(name, timeout=...)`` saw its timeout pass before the event.

    Raised at the ``yield`` of the event task (catch it as :class:`TaskFailedError` or by its
    own type); ``error_type`` is ``"TimeoutError"``. The timeout is a durable timer, so replay
    times out at the same point.
    """

    @classmethod
    def waiting_for(cls, name: str, timeout: object) -> EventTimeoutError:
        """The error for event ``name`` not arriving within ``timeout``."""
        return cls(f"external event {name!r} did not arrive within {timeout}", "TimeoutError")


class TaskCancelledError(TaskFailedError):
    """A durable timer or an event wait was yielded (itself, or inside ``task_all``) after
    the orchestration cancelled it: a cancelled task never completes.

    Raised at the ``yield`` (catch it as :class:`TaskFailedError` or by its own type);
    ``error_type`` is ``"TaskCancelledError"``. ``task_any`` skips cancelled tasks (as it did
    before cancelled tasks raised: instances in flight replay as they ran), unless all its
    tasks are cancelled; then it raises this too.
    """

    @classmethod
    def of(cls, what: str) -> TaskCancelledError:
        """The error for ``what`` (``"timer task #3"``), cancelled."""
        return cls(f"{what} was cancelled", "TaskCancelledError")


class OrchestrationFailedError(TerminalError):
    """An orchestration ended in the Failed state (raised by client helpers that want a result)."""

    def __init__(self, instance_id: str, message: str) -> None:
        super().__init__(instance_id, message)
        self.instance_id = instance_id
        self.message = message

    def __str__(self) -> str:
        return f"orchestration {self.instance_id!r} failed: {self.message}"


class NonDeterminismError(TerminalError):
    """Replay did not match history: the orchestrator took a different path than it did before.

    The message names both the action recorded in history (``expected``) and the action the
    code produced this time (``actual``), and, when known, ``location``: the orchestrator's
    ``file:line`` where the code stood (the ``yield`` or ``await`` after the diverging call).
    """

    def __init__(self, expected: str, actual: str, location: str | None = None) -> None:
        super().__init__(expected, actual, location)
        self.expected = expected
        self.actual = actual
        self.location = location

    def __str__(self) -> str:
        where = f" at {self.location}" if self.location else ""
        return (
            f"non-deterministic orchestrator{where}: history expected "
            f"{self.expected}, but the code produced {self.actual}"
        )


class LockingRulesViolationError(TerminalError):
    """A critical-section rule was broken (nesting, calling an unlocked entity, ...)."""


class ShardMismatchError(TerminalError):
    """A hub was reopened with a shard count other than the one it was created with."""

    def __init__(self, hub: str, recorded: int, requested: int) -> None:
        super().__init__(hub, recorded, requested)
        self.hub = hub
        self.recorded = recorded
        self.requested = requested

    def __str__(self) -> str:
        return (
            f"task hub {self.hub!r} was created with num_shards={self.recorded}; "
            f"it cannot be reopened with num_shards={self.requested}"
        )


class ShardWriteError(RetryableError):
    """A shard file could not be written (the disk is full, an I/O error): the call was not
    applied and may be made again once the file can be written. Work already accepted (activity
    results, fired timers, messages between shards) is kept and applied when writes succeed."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(path, reason)
        self.path = path
        self.reason = reason

    def __str__(self) -> str:
        return f"shard file {self.path} could not be written ({self.reason}); the call was not applied"


class ShardFileError(TerminalError):
    """A shard file cannot be used: another process owns it, it is corrupt or truncated, or it
    is from a newer format version. Nothing is reset or overwritten."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(path, reason)
        self.path = path
        self.reason = reason

    def __str__(self) -> str:
        return f"shard file {self.path}: {self.reason}"


class PayloadError(DurableValueError):
    """A value could not be serialized (or deserialized) for durable storage."""

    def __init__(self, what: str, value_repr: str, reason: str) -> None:
        super().__init__(what, value_repr, reason)
        self.what = what
        self.value_repr = value_repr
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.what} {self.value_repr} cannot be serialized: {self.reason}"


class LeaseHeldError(RetryableError):
    """Another shard host holds the lease of a replicated shard (or won the race to take it).

    Names the holder: its Ray node id (``owner``), host name, pid, lease ``generation`` and
    ``expires_at`` (epoch seconds); the shard can be taken over once that lease is released,
    expires, or its process is found dead on the same node."""

    def __init__(
        self, hub: str, index: int, owner: str, host: str, pid: int, generation: int, expires_at: float
    ) -> None:
        super().__init__(hub, index, owner, host, pid, generation, expires_at)
        self.hub = hub
        self.index = index
        self.owner = owner
        self.host = host
        self.pid = pid
        self.generation = generation
        self.expires_at = expires_at

    def __str__(self) -> str:
        expiry = datetime.fromtimestamp(self.expires_at, tz=UTC).isoformat(timespec="seconds")
        return (
            f"shard {self.index} of task hub {self.hub!r} is leased to node {self.owner} "
            f"(host {self.host}, pid {self.pid}, generation {self.generation}, expires {expiry})"
        )


class LeaseLostError(RetryableError):
    """A shard host's lease was taken over (or changed under it): it must stop releasing effects
    and writing; ``reason`` says what was found instead of the expected lease."""

    def __init__(self, hub: str, index: int, generation: int, reason: str) -> None:
        super().__init__(hub, index, generation, reason)
        self.hub = hub
        self.index = index
        self.generation = generation
        self.reason = reason

    def __str__(self) -> str:
        return (
            f"lease generation {self.generation} of shard {self.index} of task hub {self.hub!r} "
            f"was lost: {self.reason}"
        )


class ReplicaError(RetryableError):
    """Replication to the shard's replica failed: Litestream is missing or died, a sync or a
    restore failed, or the replica holds nothing. ``reason`` names the cause (and, for a missing
    Litestream, the ``replica`` extra that installs it)."""

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(what, reason)
        self.what = what
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.what}: {self.reason}"


class DeterminismWarning(UserWarning):
    """Orchestrator code calls something whose result differs on every replay (the clock,
    ``time.sleep``, random numbers): found at registration, before any instance runs."""


class _ControlFlowSignal(BaseException):
    """Base of internal control-flow signals that user code must not swallow.

    Derives from ``BaseException`` so that ``except Exception:`` in an orchestrator does not
    catch it.
    """


class OrchestratorExit(_ControlFlowSignal):
    """A control-flow signal user code must not swallow. Reserved: the runtime does not raise
    it yet (an evicted or terminated orchestrator's generator is closed with GeneratorExit)."""


def describe(value: Any, limit: int = 80) -> str:
    """A short ``repr`` of ``value`` for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
