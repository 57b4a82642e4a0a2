"""What tests/integration/test_tracing.py runs in the hub's processes: ``tracing_setup`` (the
hub's ``tracing_setup="tests.integration._tracing_app:tracing_setup"``) installs a tracer
provider whose exporter forwards every finished span's fields to a Ray actor the test creates
(:class:`SpanSink`), where the driver collects them and rebuilds them as ``ReadableSpan``; and
a log handler that forwards the runtime's INFO records, with their trace ids, to the same
actor."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import ray
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

SINK_NAME = "tracing-test-span-sink"
SINK_NAMESPACE = "tracing-test"


class SpanSink:
    """A Ray actor: the finished spans of every process, as records."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.logs: list[dict[str, str]] = []

    def add(self, records: list[dict[str, Any]]) -> None:
        self.records.extend(records)

    def take(self) -> list[dict[str, Any]]:
        return list(self.records)

    def add_log(self, line: dict[str, str]) -> None:
        self.logs.append(line)

    def take_logs(self) -> list[dict[str, str]]:
        return list(self.logs)


def span_record(span: ReadableSpan) -> dict[str, Any]:
    """The fields of a finished span that the driver rebuilds it from."""
    ctx, parent = span.get_span_context(), span.parent
    assert ctx is not None
    return {
        "name": span.name,
        "trace_id": ctx.trace_id,
        "span_id": ctx.span_id,
        "parent_span_id": parent.span_id if parent is not None else None,
        "kind": span.kind.name,
        "attributes": dict(span.attributes or {}),
        "status": span.status.status_code.name,
        "description": span.status.description,
        "start_time": span.start_time,
        "end_time": span.end_time,
    }


def rebuild(record: dict[str, Any]) -> ReadableSpan:
    """A ``ReadableSpan`` from a :func:`span_record`."""
    parent = record["parent_span_id"]
    return ReadableSpan(
        name=record["name"],
        context=SpanContext(record["trace_id"], record["span_id"], False, TraceFlags(TraceFlags.SAMPLED)),
        parent=None if parent is None else SpanContext(record["trace_id"], parent, True),
        kind=SpanKind[record["kind"]],
        attributes=record["attributes"],
        status=Status(StatusCode[record["status"]], record["description"]),
        start_time=record["start_time"],
        end_time=record["end_time"],
    )


class ForwardingExporter(SpanExporter):
    """Sends each finished span's record to the sink actor (fire and forget)."""

    def __init__(self) -> None:
        self._sink: Any = None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            if self._sink is None:
                self._sink = ray.get_actor(SINK_NAME, namespace=SINK_NAMESPACE)
            self._sink.add.remote([span_record(s) for s in spans])
        except Exception:  # no sink (the test module is over): these spans are dropped
            self._sink = None
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS


class ForwardingLogHandler(logging.Handler):
    """Sends each record's logger, message and trace ids to the sink actor."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = {"logger": record.name, "message": record.getMessage(),
                    "trace_id": getattr(record, "trace_id", "?"), "span_id": getattr(record, "span_id", "?")}
            ray.get_actor(SINK_NAME, namespace=SINK_NAMESPACE).add_log.remote(line)
        except Exception:  # no sink: the line is dropped
            pass


def tracing_setup() -> None:
    """The hub's tracing_setup: this process's spans, and the runtime's INFO records, go to the
    sink."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(ForwardingExporter()))
    trace.set_tracer_provider(provider)
    runtime_log = logging.getLogger("ray_durable")
    runtime_log.setLevel(logging.INFO)
    runtime_log.addHandler(ForwardingLogHandler())
