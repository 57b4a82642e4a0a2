"""Orchestrations for ``test_drivers``: a module every driver process can import by name."""

from __future__ import annotations

from orchestrations import OrchestrationContext, activity, orchestrator


@activity(name="dj_greet")
def greet(args: tuple[str, str]) -> str:
    greeting, name = args
    return f"{greeting} {name}!"


@orchestrator(name="dj_greetings")
def greetings(ctx: OrchestrationContext):
    """Waits for the event ``go`` (a greeting), then greets every name of the input at once."""
    greeting = yield ctx.wait_for_external_event("go")
    return (yield ctx.task_all([ctx.call_activity(greet, (greeting, name)) for name in ctx.get_input()]))
