"""Pins the public surface and the layering, so neither changes by accident."""

from __future__ import annotations

import ast
from pathlib import Path

import entities
import orchestrations
import runtime

ROOT = Path(__file__).resolve().parent.parent

ORCHESTRATIONS = {
    "DeterminismWarning", "EventTask", "EventTimeoutError",
    "CallEntity", "LockEntities", "SignalEntity", "UnlockEntity", "LockHandle", "EntityLockGranted",
    "EntityLockMessage", "EntityLockRequested", "EntityOperationCalled", "EntityOperationCompleted",
    "EntityOperationFailed", "EntityOperationSignaled", "EntityRequest", "EntityUnlockMessage", "EntityUnlockSent",
    "Action", "ContinueAsNew", "CreateSubOrchestration", "CreateTimer", "DurableError", "DurableTypeError",
    "DurableValueError", "EventRaised", "EventSent", "ExecutionCompleted", "ExecutionResult", "ExecutionResumed",
    "ExecutionRewound",
    "ExecutionStarted", "ExecutionState", "ExecutionSuspended", "ExecutionTerminated", "FailureDetails",
    "HistoryEvent", "InstanceAlreadyExistsError", "InstanceNotFoundError", "LockingRulesViolationError",
    "NonDeterminismError", "OrchestrationContext", "OrchestrationExecutor", "OrchestrationFailedError",
    "OrchestratorCompleted", "OrchestratorStarted", "ParentInfo", "PatchApplied", "PayloadError", "Registry",
    "RetryOptions",
    "RetryableError", "ScheduleTask", "SendEvent", "ShardFileError", "ShardMismatchError", "ShardWriteError",
    "SubOrchestrationInstanceCompleted",
    "SubOrchestrationInstanceCreated", "SubOrchestrationInstanceFailed", "Task", "TaskCompleted", "TaskFailed",
    "TaskCancelledError", "TaskFailedError", "TaskScheduled",
    "TerminalError", "TimerCreated", "TimerFired", "TimerTask", "activity",
    "default_registry", "execute", "orchestrator", "validate_instance_id",
    "DurableHttpRequest", "DurableHttpResponse", "HttpTimeoutError",
    "LeaseHeldError", "LeaseLostError", "ReplicaError",
}
RUNTIME = {
    "CleanEntityStorageResult", "EntityMetadata", "EntityStateResponse",
    "DurableOrchestrationStatus", "HistoryEvent", "InstancePage", "OrchestrationRuntimeStatus",
    "PurgeHistoryResult", "TaskHub", "TraceIdsFilter",
}
CONTEXT_MEMBERS = {
    "instance_id", "parent_instance_id", "is_replaying", "current_utc_datetime", "get_input", "call_activity",
    "call_activity_with_retry", "call_sub_orchestrator", "call_sub_orchestrator_with_retry", "create_timer",
    "wait_for_external_event", "task_all", "task_any", "continue_as_new", "set_custom_status", "new_uuid",
    "create_replay_safe_logger", "call_entity", "signal_entity", "lock_entities", "call_http", "is_patched",
}
HUB_METHODS = {
    "connect", "start_new", "get_status", "get_status_by", "list_instances", "wait_for_completion",
    "raise_event", "terminate", "suspend", "resume", "purge_instance_history", "purge_instance_history_by",
    "get_history", "close", "rewind", "restart", "signal_entity", "read_entity_state", "list_entities",
    "clean_entity_storage", "wait_for_orchestration_start", "export_history",
}
STATUSES = {"Pending", "Running", "Completed", "ContinuedAsNew", "Failed", "Terminated", "Suspended"}


def test_orchestrations_public_names_are_pinned():
    assert set(orchestrations.__all__) == ORCHESTRATIONS
    assert all(hasattr(orchestrations, name) for name in orchestrations.__all__)


def test_runtime_public_names_are_pinned():
    assert set(runtime.__all__) == RUNTIME
    assert all(hasattr(runtime, name) for name in runtime.__all__)


ENTITIES = {
    "EntityContext", "EntityExecutor", "EntityId", "EntityReadContext", "EntitySpec", "EntityState", "Outgoing",
    "current_context", "entity", "run_entity",
}
ENTITY_CONTEXT_MEMBERS = {
    "entity_id", "entity_name", "entity_key", "operation_name", "get_input", "get_state", "set_state",
    "set_result", "delete_state", "signal_entity", "start_new_orchestration",
}


def test_entities_public_names_are_pinned():
    assert set(entities.__all__) == ENTITIES
    assert all(hasattr(entities, name) for name in entities.__all__)
    assert set(dir(entities.EntityContext)) >= ENTITY_CONTEXT_MEMBERS


def test_api_md_members_exist():
    assert set(dir(orchestrations.OrchestrationContext)) >= CONTEXT_MEMBERS
    assert set(dir(runtime.TaskHub)) >= HUB_METHODS
    assert {s.name for s in runtime.OrchestrationRuntimeStatus} == STATUSES


def _imports(package: str) -> set[str]:
    found: set[str] = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return found


def test_model_packages_import_neither_ray_nor_sqlite():
    for package in ("orchestrations", "entities"):
        imported = _imports(package)
        assert not imported & {"ray", "aiosqlite", "sqlite3", "runtime"}, (package, imported)
