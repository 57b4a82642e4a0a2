"""Traces on a real local Ray with real SQLite: one hub (one shard) whose processes export
their spans through ``tests/integration/_tracing_app.py`` to a sink actor; the driver rebuilds
them into OpenTelemetry's in-memory exporter, beside its own client spans, and reads the
traces from there."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.util._once import Once

from entities import EntityContext, EntityId, entity
from orchestrations import OrchestrationContext, TaskFailedError, activity, orchestrator
from runtime import OrchestrationRuntimeStatus, TaskHub, _tracing

from ..conftest import ALWAYS_REPLAY
from ..helpers import wait_until
from . import _tracing_app

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(ALWAYS_REPLAY, reason="spans per episode: the normal run covers them"),
]

FAN_OUT = 5


@activity
def tr_square(x: int) -> int:
    return x * x


@activity
def tr_refuse(x: int) -> int:
    raise ValueError(f"refused {x}")


@activity(num_cpus=1)  # Ray options: always a Ray task, never the warm worker
def tr_on_task(x: int) -> int:
    return x + 1


@activity
async def tr_async(x: int) -> int:
    return x + 2


@entity(name="TrCounter")
def tr_counter(ctx: EntityContext) -> None:
    value = ctx.get_state(lambda: 0) + ctx.get_input()
    ctx.set_state(value)
    ctx.set_result(value)


@orchestrator
def tr_fan_out(ctx: OrchestrationContext):
    results = yield ctx.task_all([ctx.call_activity(tr_square, i) for i in range(ctx.get_input())])
    return sum(results)


@orchestrator
def tr_with_entity(ctx: OrchestrationContext):
    return (yield ctx.call_entity(EntityId("TrCounter", ctx.instance_id), "add", 7))


@orchestrator
def tr_catches(ctx: OrchestrationContext):
    try:
        yield ctx.call_activity(tr_refuse, 1)
    except TaskFailedError as error:
        return error.error_type
    return "no error"


@orchestrator
def tr_fails(ctx: OrchestrationContext):
    yield ctx.call_activity(tr_refuse, 2)


@orchestrator
def tr_kinds(ctx: OrchestrationContext):
    return (yield ctx.call_activity(tr_on_task, 1)) + (yield ctx.call_activity(tr_async, 1))


@orchestrator
def tr_rounds(ctx: OrchestrationContext):
    left = ctx.get_input()
    yield ctx.call_activity(tr_square, left)
    if left > 0:
        ctx.continue_as_new(left - 1)
        return None
    return "done"


@orchestrator
def tr_parent(ctx: OrchestrationContext):
    return (yield ctx.call_sub_orchestrator(tr_fan_out, 2))


class Spans:
    """The driver's view: its own spans and the hub's, rebuilt, in one in-memory exporter."""

    def __init__(self, exporter: InMemorySpanExporter, sink: Any) -> None:
        self.exporter, self.sink = exporter, sink
        self._forwarded = 0

    def all(self) -> list[ReadableSpan]:
        records = ray.get(self.sink.take.remote())
        self.exporter.export([_tracing_app.rebuild(r) for r in records[self._forwarded :]])
        self._forwarded = len(records)
        return list(self.exporter.get_finished_spans())

    def of_trace(self, trace_id: int) -> list[ReadableSpan]:
        return [s for s in self.all() if s.context.trace_id == trace_id]

    def wait(self, trace_id: int, *names: str, counts: dict[str, int] | None = None) -> list[ReadableSpan]:
        """The spans of ``trace_id`` once every name in ``names`` has arrived (at least
        ``counts[name]`` of it); the hub's spans reach the sink after the instance's answer."""
        counts = counts or {}

        def ready() -> list[ReadableSpan] | None:
            spans = self.of_trace(trace_id)
            found = [s.name for s in spans]
            return spans if all(found.count(n) >= counts.get(n, 1) for n in names) else None

        return wait_until(ready, timeout=60)


@pytest.fixture(scope="module")
def spans(ray_session: None) -> Iterator[Spans]:
    """The driver traces into an in-memory exporter; the hub's spans come through the sink.
    Afterwards the driver's global tracer provider is unset again (as OpenTelemetry's own test
    utilities do), so the modules that run later in this process trace nothing."""
    sink = ray.remote(_tracing_app.SpanSink).options(name=_tracing_app.SINK_NAME,
                                                      namespace=_tracing_app.SINK_NAMESPACE).remote()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    try:
        yield Spans(exporter, sink)
    finally:
        provider.shutdown()
        trace._TRACER_PROVIDER_SET_ONCE = Once()  # type: ignore[attr-defined]
        trace._TRACER_PROVIDER = None  # type: ignore[attr-defined]
        _tracing._on = None
        ray.kill(sink)


@pytest.fixture(scope="module")
def hub(spans: Spans, data_dir: Path) -> Iterator[TaskHub]:
    with TaskHub("tracing", data_dir=data_dir, num_shards=1, always_replay=ALWAYS_REPLAY,
                 tracing_setup="tests.integration._tracing_app:tracing_setup") as h:
        yield h


def _client_span(spans: Spans, instance_id: str) -> ReadableSpan:
    return next(s for s in spans.all()
                if s.name.startswith("create_orchestration:") and s.attributes["durable.instance_id"] == instance_id)


def _run(hub: TaskHub, fn: Any, iid: str, value: Any = None) -> Any:
    status = hub.wait_for_completion(hub.start_new(fn, iid, value), timeout=60)
    assert status.runtime_status in (OrchestrationRuntimeStatus.Completed, OrchestrationRuntimeStatus.Failed)
    return status


def test_a_fan_out_is_one_trace_with_its_activities_as_children(hub: TaskHub, spans: Spans) -> None:
    assert _run(hub, tr_fan_out, "fan-1", FAN_OUT).output == sum(i * i for i in range(FAN_OUT))
    client = _client_span(spans, "fan-1")
    assert client.name == "create_orchestration:tr_fan_out" and client.kind is SpanKind.CLIENT
    assert client.parent is None  # the driver had no span of its own: the client's starts the trace
    tid = client.context.trace_id
    found = spans.wait(tid, "activity:tr_square", counts={"activity:tr_square": FAN_OUT})
    episodes = [s for s in found if s.name == "orchestration:tr_fan_out"]
    activities = [s for s in found if s.name == "activity:tr_square"]
    # every episode (the first schedules all five, later ones take results) hangs off the start
    assert len(episodes) >= 2 and all(s.parent.span_id == client.context.span_id for s in episodes)
    assert all(s.kind is SpanKind.SERVER and s.attributes["durable.instance_id"] == "fan-1" for s in episodes)
    assert [s.attributes["durable.outcome"] for s in episodes].count("completed") == 1
    assert len(activities) == FAN_OUT
    assert {s.parent.span_id for s in activities} <= {s.context.span_id for s in episodes}
    assert all(s.status.status_code is StatusCode.UNSET for s in activities)
    # one trace: every span of it has a parent inside it, but the client's
    ids = {s.context.span_id for s in found}
    assert [s for s in found if s.parent is None or s.parent.span_id not in ids] == [client]


def test_an_activity_on_a_ray_task_and_an_async_activity_have_spans(hub: TaskHub, spans: Spans) -> None:
    assert _run(hub, tr_kinds, "kinds-1").output == 2 + 3
    tid = _client_span(spans, "kinds-1").context.trace_id
    found = spans.wait(tid, "activity:tr_on_task", "activity:tr_async")
    episodes = {s.context.span_id for s in found if s.name == "orchestration:tr_kinds"}
    ran = [s for s in found if s.name in ("activity:tr_on_task", "activity:tr_async")]
    assert len(ran) == 2 and all(s.parent.span_id in episodes for s in ran)


def test_the_recorded_start_carries_the_client_span(hub: TaskHub, spans: Spans) -> None:
    _run(hub, tr_fan_out, "fan-2", 1)
    started = hub.get_history("fan-2")[0]
    client = _client_span(spans, "fan-2")
    assert started.event_type == "ExecutionStarted"
    version, trace_id, span_id, _flags = started.trace.split("-")
    assert (version, trace_id, span_id) == ("00", f"{client.context.trace_id:032x}", f"{client.context.span_id:016x}")


def test_an_entity_call_is_a_span_child_of_the_episode_that_made_it(hub: TaskHub, spans: Spans) -> None:
    assert _run(hub, tr_with_entity, "ent-1").output == 7
    tid = _client_span(spans, "ent-1").context.trace_id
    found = spans.wait(tid, "entity:trcounter:add")
    operation = next(s for s in found if s.name == "entity:trcounter:add")
    episodes = {s.context.span_id for s in found if s.name == "orchestration:tr_with_entity"}
    assert operation.parent.span_id in episodes
    assert operation.attributes["durable.entity_id"] == "@trcounter@ent-1"
    assert operation.status.status_code is StatusCode.UNSET


def test_a_failing_activity_has_an_error_span(hub: TaskHub, spans: Spans) -> None:
    assert _run(hub, tr_catches, "fail-1").output == "ValueError"
    tid = _client_span(spans, "fail-1").context.trace_id
    refused = next(s for s in spans.wait(tid, "activity:tr_refuse") if s.name == "activity:tr_refuse")
    assert refused.status.status_code is StatusCode.ERROR
    assert refused.attributes["error.type"] == "ValueError"


def test_a_failed_orchestration_ends_in_an_error_episode(hub: TaskHub, spans: Spans) -> None:
    assert _run(hub, tr_fails, "fail-2").runtime_status is OrchestrationRuntimeStatus.Failed
    tid = _client_span(spans, "fail-2").context.trace_id

    def last_episode() -> ReadableSpan | None:
        done = [s for s in spans.of_trace(tid)
                if s.name == "orchestration:tr_fails" and s.attributes["durable.outcome"] == "failed"]
        return done[0] if done else None

    episode = wait_until(last_episode, timeout=60)
    assert episode.status.status_code is StatusCode.ERROR
    assert episode.attributes["error.type"] == "TaskFailedError"

    def logged() -> list[dict[str, str]]:
        lines = ray.get(spans.sink.take_logs.remote())
        return [line for line in lines if line["message"].startswith("orchestration fail-2 (tr_fails) failed")]

    line = wait_until(logged, timeout=60)[0]  # the shard host's log line carries the episode's ids
    assert line["logger"] == "ray_durable.shard"
    assert (line["trace_id"], line["span_id"]) == (f"{tid:032x}", f"{episode.context.span_id:016x}")


def test_a_sub_orchestration_joins_its_parents_trace(hub: TaskHub, spans: Spans) -> None:
    assert _run(hub, tr_parent, "parent-1").output == 0 + 1
    tid = _client_span(spans, "parent-1").context.trace_id
    found = spans.wait(tid, "orchestration:tr_fan_out", "activity:tr_square", counts={"activity:tr_square": 2})
    parents = {s.context.span_id for s in found if s.name == "orchestration:tr_parent"}
    children = [s for s in found if s.name == "orchestration:tr_fan_out"]
    assert children and all(s.parent.span_id in parents for s in children)


def test_a_start_without_trace_context_gets_a_root_made_by_the_shard_host(hub: TaskHub, spans: Spans) -> None:
    msg = hub._start_message(tr_fan_out, "bare-1", 2)  # a driver that does not trace: no client span
    hub._submit([msg])
    hub.wait_for_completion("bare-1", timeout=60)
    started = hub.get_history("bare-1")[0]
    assert started.trace is not None
    tid = int(started.trace.split("-")[1], 16)
    found = spans.wait(tid, "start_orchestration:tr_fan_out", "orchestration:tr_fan_out")
    root = next(s for s in found if s.name == "start_orchestration:tr_fan_out")
    assert root.parent is None and f"{root.context.span_id:016x}" == started.trace.split("-")[2]
    assert all(s.parent.span_id == root.context.span_id for s in found if s.name == "orchestration:tr_fan_out")


def test_every_execution_after_continue_as_new_stays_in_the_trace(hub: TaskHub, spans: Spans) -> None:
    assert _run(hub, tr_rounds, "rounds-1", 2).output == "done"
    client = _client_span(spans, "rounds-1")
    found = spans.wait(client.context.trace_id, "activity:tr_square", counts={"activity:tr_square": 3})
    episodes = [s for s in found if s.name == "orchestration:tr_rounds"]
    assert len({s.attributes["durable.execution_id"] for s in episodes}) == 3  # three executions, one trace
    assert all(s.parent.span_id == client.context.span_id for s in episodes)
    assert [s.attributes["durable.outcome"] for s in episodes].count("continued_as_new") == 2


def test_a_signal_from_a_driver_span_is_its_child(hub: TaskHub, spans: Spans) -> None:
    with trace.get_tracer("test").start_as_current_span("driver-work") as work:
        hub.signal_entity(EntityId("TrCounter", "signalled"), "add", 1)
    tid = work.get_span_context().trace_id
    operation = next(s for s in spans.wait(tid, "entity:trcounter:add") if s.name == "entity:trcounter:add")
    assert operation.parent.span_id == work.get_span_context().span_id
