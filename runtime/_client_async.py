"""The asyncio forms of the task hub client's calls (mixed into ``TaskHub``).

Each ``*_async`` method checks its arguments at once, in the caller (bad input raises before
anything is sent, as the blocking form does), then awaits the shard host's answer without
blocking the event loop: the request travels on the hub's client connections (see
:mod:`runtime._client_link`), whose loop runs in its own thread, so thousands of calls may be in
flight at once from one asyncio program, without threads of its own. Requests that reach a
shard while it commits share its next commit. Each returns when the blocking form would: once
its effect is committed (a start, event, signal, terminate, suspend, resume), or once the
instance ended (a wait).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from entities import EntityId
from orchestrations import (
    ExecutionResumed,
    ExecutionSuspended,
    HistoryEvent,
    validate_instance_id,
)

from ._client_args import check_timeout, utc_now
from ._client_control import traced_starts
from ._client_link import ClientLink
from ._messages import Message
from ._status import DurableOrchestrationStatus


class AsyncClient:
    """Mixed into :class:`TaskHub`: ``await``-able forms of its everyday calls."""

    _link: ClientLink

    def _start_message(
        self, fn: str | Callable[..., Any], instance_id: str | None, client_input: Any,
        start_at: datetime | None = None,
    ) -> Message:
        raise NotImplementedError

    def _event_message(self, instance_id: str, event_name: str, event_data: Any) -> Message:
        raise NotImplementedError

    def _terminate_message(self, instance_id: str, reason: str | None, recursive: bool) -> Message:
        raise NotImplementedError

    @staticmethod
    def _control_message(instance_id: str, event: HistoryEvent, reason: Any) -> Message:
        raise NotImplementedError

    def _signal_message(
        self, entity_id: EntityId, operation_name: str, operation_input: Any, scheduled_time: datetime | None
    ) -> Message:
        raise NotImplementedError

    async def _submit_async(self, msgs: list[Message]) -> None:
        raise NotImplementedError

    def _shard_index(self, instance_id: str) -> int:
        raise NotImplementedError

    async def start_new_async(
        self,
        orchestration_function_name: str | Callable[..., Any],
        instance_id: str | None = None,
        client_input: Any = None,
        *,
        start_at: datetime | None = None,
    ) -> str:
        """:meth:`start_new` for asyncio code: returns the instance id once the start is
        committed; the same arguments, checks and errors (``ValueError`` before anything is
        sent, :class:`InstanceAlreadyExistsError` from the shard)."""
        msg = self._start_message(orchestration_function_name, instance_id, client_input, start_at)
        with traced_starts([msg]):
            await self._submit_async([msg])
        return msg.instance_id

    async def wait_for_completion_async(
        self, instance_id: str, timeout: float | None = None
    ) -> DurableOrchestrationStatus:
        """:meth:`wait_for_completion` for asyncio code: the status once the instance is
        Completed, Failed or Terminated (the shard host answers when it ends, no polling).
        Raises ``TimeoutError`` past ``timeout`` seconds, or :class:`InstanceNotFoundError`
        if no instance of that id was created by then."""
        validate_instance_id(instance_id)
        check_timeout(timeout)
        index = self._shard_index(instance_id)
        status: DurableOrchestrationStatus | None = await self._link.run_async(
            self._link.wait(index, "wait", instance_id, timeout)
        )
        if status is None:
            raise TimeoutError(f"orchestration {instance_id!r} did not finish within {timeout} s")
        return status

    async def get_status_async(
        self, instance_id: str, show_history: bool = False, show_history_output: bool = False,
        show_input: bool = True,
    ) -> DurableOrchestrationStatus | None:
        """:meth:`get_status` of one instance for asyncio code: its committed status, or
        ``None`` if there is none."""
        iid = validate_instance_id(instance_id)
        index = self._shard_index(iid)
        status: DurableOrchestrationStatus | None = await self._link.run_async(
            self._link.status(index, iid, show_history, show_history_output, show_input)
        )
        return status

    async def raise_event_async(self, instance_id: str, event_name: str, event_data: Any = None) -> None:
        """:meth:`raise_event` for asyncio code: returns once the event is committed."""
        await self._submit_async([self._event_message(instance_id, event_name, event_data)])

    async def signal_entity_async(
        self, entity_id: EntityId, operation_name: str, operation_input: Any = None, *,
        scheduled_time: datetime | None = None,
    ) -> None:
        """:meth:`signal_entity` for asyncio code: returns once the signal is committed.
        Signals one client sends to an entity run in the order their calls were made."""
        await self._submit_async([self._signal_message(entity_id, operation_name, operation_input, scheduled_time)])

    async def terminate_async(self, instance_id: str, reason: str | None = None, recursive: bool = True) -> None:
        """:meth:`terminate` for asyncio code: returns once the termination is committed."""
        await self._submit_async([self._terminate_message(instance_id, reason, recursive)])

    async def suspend_async(self, instance_id: str, reason: str | None = None) -> None:
        """:meth:`suspend` for asyncio code: returns once the suspension is committed."""
        await self._submit_async([self._control_message(instance_id, ExecutionSuspended(utc_now(), reason), reason)])

    async def resume_async(self, instance_id: str, reason: str | None = None) -> None:
        """:meth:`resume` for asyncio code: returns once the resumption is committed."""
        await self._submit_async([self._control_message(instance_id, ExecutionResumed(utc_now(), reason), reason)])
