"""The code of the hub checked in under ``tests/data/hub_v2`` (written by format version 2, the
release at c114a73, with ``tests/data/make_hub_v2.py``): the test that migrates that hub
registers these again under the same names."""

from __future__ import annotations

from datetime import timedelta

from entities import EntityContext, EntityId, entity
from orchestrations import OrchestrationContext, activity, orchestrator


@activity(name="v2_greet")
def greet(name: str) -> str:
    return f"Hello {name}!"


@activity(name="v2_fail")
def fail(reason: str) -> str:
    raise ValueError(reason)


@orchestrator(name="v2_hello")
def hello(ctx: OrchestrationContext):
    first = yield ctx.call_activity(greet, "Tokyo")
    second = yield ctx.call_activity(greet, "Seattle")
    ctx.set_custom_status({"step": 2})
    return [first, second, ("a", "tuple")]


@orchestrator(name="v2_failing")
def failing(ctx: OrchestrationContext):
    yield ctx.call_activity(fail, "out of stock")


@orchestrator(name="v2_approval")
def approval(ctx: OrchestrationContext):
    """Waits for the event "approve", with a timer armed a century away (a timer and an
    event pending; a one-day timer fired a day after the fixture was made, and the instance
    was no longer waiting)."""
    ctx.set_custom_status("waiting")
    timer = ctx.create_timer(ctx.current_utc_datetime + timedelta(days=36500))
    event = ctx.wait_for_external_event("approve")
    winner = yield ctx.task_any([timer, event])
    if winner is event:
        timer.cancel()
        counted = yield ctx.call_entity(EntityId("v2_counter", "orders"), "add", 1)
        return {"approved": event.result, "orders": counted}
    return {"approved": None}


@entity(name="v2_counter")
def counter(ctx: EntityContext) -> None:
    value = ctx.get_state(lambda: 0)
    if ctx.operation_name == "add":
        value += ctx.get_input()
        ctx.set_result(value)
    elif ctx.operation_name == "get":
        ctx.set_result(value)
    ctx.set_state(value)
