"""Pure tests of the tracing helpers (runtime/_tracing.py) and of what traces add to stored
records and to the entity executor. No Ray, no SQLite; no global tracer provider is set here
(tracing is off in this process), so spans are made with a provider of the test's own."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from entities import EntityId, EntitySpec, EntityState, run_entity
from entities._executor import OperationWatch
from orchestrations import DurableTypeError, DurableValueError, EntityRequest, ExecutionStarted, FailureDetails
from orchestrations.testing import T0
from runtime import _tracing
from runtime._client_args import check_tracing_setup
from runtime._client_control import traced_starts
from runtime._codec import encode
from runtime._codec_records import dump_event, event_to_record, load_event
from runtime._messages import Message

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def off() -> Iterator[None]:
    """Tracing is off in this process (no provider set): the precondition of these tests."""
    if _tracing.enabled():
        pytest.skip("a tracer provider is set in this process")
    yield


# -- off: every helper is a no-op ---------------------------------------------------------------


def test_with_tracing_off_the_helpers_do_nothing(off: None) -> None:
    assert not _tracing.enabled()
    assert _tracing.open_span("x", PARENT) is None
    assert _tracing.root("start_orchestration:x") is None
    assert _tracing.current_traceparent() is None
    with _tracing.span("x", PARENT) as opened:
        assert opened is None
    _tracing.close_span(None, "ValueError")
    _tracing.fail(None, "ValueError")
    assert _tracing.traceparent_of(None) is None


def test_with_tracing_off_a_start_carries_no_trace(off: None) -> None:
    msg = Message("i-1", ExecutionStarted(T0, "job", None, "i-1", "e-1"))
    before = msg.event
    with traced_starts([msg]):
        pass
    assert msg.event is before and msg.event.trace is None


def test_without_the_package_tracing_is_off_and_setup_imports_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_tracing, "AVAILABLE", False)
    monkeypatch.setattr(_tracing, "_on", None)
    _tracing.setup("no_such_module_anywhere:setup")  # not even imported
    assert not _tracing.enabled()
    assert _tracing.open_span("x", None) is None
    record = logging.LogRecord("ray_durable", logging.INFO, __file__, 1, "m", None, None)
    assert _tracing.TraceIdsFilter().filter(record) and (record.trace_id, record.span_id) == ("-", "-")


def test_the_answer_is_kept_and_a_driver_or_a_setup_asks_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_tracing, "_on", None)
    monkeypatch.setattr(_tracing._trace, "get_tracer_provider", lambda: trace.ProxyTracerProvider())
    assert not _tracing.enabled()
    monkeypatch.setattr(_tracing._trace, "get_tracer_provider", lambda: TracerProvider())
    assert not _tracing.enabled()  # kept: the hot paths ask once
    assert _tracing.enabled(fresh=True)
    monkeypatch.setattr(_tracing, "_on", False)
    _tracing.setup("tests.test_tracing:quiet_setup")
    assert _tracing.enabled()


def quiet_setup() -> None:
    """A setup of its own (each runs once per process)."""


WITHOUT_OPENTELEMETRY = textwrap.dedent("""
    import importlib.abc, sys

    class NoOpenTelemetry(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "opentelemetry" or name.startswith("opentelemetry."):
                raise ImportError(f"no module named {name!r} (hidden by the test)")
            return None

    sys.meta_path.insert(0, NoOpenTelemetry())
    from orchestrations import ExecutionStarted, Registry
    from orchestrations.testing import T0
    from runtime import _tracing
    from runtime._batch import run_batch
    from runtime._client_control import traced_starts
    from runtime._codec import decode, dump_value, encode
    from runtime._messages import Message

    assert not _tracing.AVAILABLE and not _tracing.enabled(fresh=True)
    _tracing.setup("tests.test_tracing:count_setup")
    msg = Message("i-1", ExecutionStarted(T0, "job", None, "i-1", "e-1"))
    with traced_starts([msg]):
        pass
    assert msg.event.trace is None
    registry = encode({"twice": Registry().add_activity(lambda x: 2 * x, "twice")})
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert decode(run_batch("k", registry, [("twice", dump_value(21), parent)], "pkg.mod:setup")) == [(True, 42)]
    print("ok without opentelemetry")
""")


def test_the_runtime_runs_without_opentelemetry() -> None:
    done = subprocess.run([sys.executable, "-c", WITHOUT_OPENTELEMETRY], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok without opentelemetry"


# -- setup -----------------------------------------------------------------------------------------

CALLS: list[str] = []


def count_setup() -> None:
    CALLS.append("setup")


def broken_setup() -> None:
    raise RuntimeError("no collector")


def test_setup_runs_an_import_path_once_per_process() -> None:
    CALLS.clear()
    _tracing.setup("tests.test_tracing:count_setup")
    _tracing.setup("tests.test_tracing:count_setup")
    assert CALLS == ["setup"]
    assert _tracing.resolve("tests.test_tracing.count_setup") is count_setup


def test_setup_runs_an_encoded_callable_once_as_a_warm_worker_receives_it() -> None:
    CALLS.clear()
    blob = encode(count_setup, "tracing_setup")
    _tracing.setup(blob)
    _tracing.setup(blob)
    assert CALLS == ["setup"]


def test_a_setup_that_fails_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="ray_durable.tracing"):
        _tracing.setup("tests.test_tracing:broken_setup")
    assert "no collector" in caplog.text and "tests.test_tracing:broken_setup" in caplog.text


@pytest.mark.parametrize("good", [None, "pkg.mod:setup", "pkg.mod.setup", count_setup])
def test_the_hub_accepts_a_tracing_setup_path_or_callable(good: Any) -> None:
    check_tracing_setup(good)


@pytest.mark.parametrize(("bad", "error"), [(3, DurableTypeError), ("setup", DurableValueError),
                                             ("pkg:", DurableValueError), (":setup", DurableValueError)])
def test_the_hub_refuses_a_bad_tracing_setup(bad: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="tracing_setup"):
        check_tracing_setup(bad)


# -- ids in the logs ------------------------------------------------------------------------------


def test_the_log_filter_adds_the_current_spans_ids() -> None:
    tracer = TracerProvider().get_tracer("test")  # not the global provider: nothing else changes
    record = logging.LogRecord("ray_durable.shard", logging.INFO, __file__, 1, "m", None, None)
    with tracer.start_as_current_span("episode") as current:
        assert _tracing.TraceIdsFilter().filter(record)
    ctx = current.get_span_context()
    assert (record.trace_id, record.span_id) == (f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}")
    assert logging.Formatter("%(trace_id)s/%(span_id)s %(message)s").format(record) == (
        f"{ctx.trace_id:032x}/{ctx.span_id:016x} m")


def test_the_log_filter_gives_dashes_without_a_span_and_keeps_ids_given_explicitly() -> None:
    bare = logging.LogRecord("ray_durable", logging.INFO, __file__, 1, "m", None, None)
    _tracing.TraceIdsFilter().filter(bare)
    assert (bare.trace_id, bare.span_id) == ("-", "-")
    given = logging.LogRecord("ray_durable", logging.INFO, __file__, 1, "m", None, None)
    given.__dict__.update(_tracing.log_ids(PARENT))
    _tracing.TraceIdsFilter().filter(given)
    assert (given.trace_id, given.span_id) == ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
    assert _tracing.log_ids(None) == _tracing.log_ids("garbage") == {"trace_id": "-", "span_id": "-"}


def test_the_filter_goes_on_every_runtime_logger_once() -> None:
    _tracing.install_log_filter()
    _tracing.install_log_filter()
    for name in ("ray_durable", "ray_durable.shard", "ray_durable.entities", "ray_durable.warm"):
        filters = logging.getLogger(name).filters
        assert sum(isinstance(f, _tracing.TraceIdsFilter) for f in filters) == 1, name


def test_a_span_of_a_provider_gives_its_traceparent() -> None:
    opened = TracerProvider().get_tracer("test").start_span("x")
    ctx = opened.get_span_context()
    assert _tracing.traceparent_of(opened).split("-")[:3] == ["00", f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"]
    assert _tracing.traceparent_of(trace.INVALID_SPAN) is None


# -- stored records ---------------------------------------------------------------------------------


def test_a_start_without_a_trace_is_stored_as_before_and_one_with_a_trace_keeps_it() -> None:
    plain = ExecutionStarted(T0, "job", None, "i-1", "e-1")
    assert "trace" not in event_to_record(plain)
    traced = ExecutionStarted(T0, "job", None, "i-1", "e-1", trace=PARENT)
    assert json.loads(dump_event(traced))["trace"] == PARENT
    assert load_event(dump_event(traced)).trace == PARENT and load_event(dump_event(plain)).trace is None
    assert traced == plain  # replay ignores it


def test_an_entity_request_keeps_its_trace_only_when_set() -> None:
    assert "trace" not in event_to_record(EntityRequest(T0, "add", 1))
    assert load_event(dump_event(EntityRequest(T0, "add", 1, trace=PARENT))).trace == PARENT


# -- the entity executor's watch ---------------------------------------------------------------------


def _counter(context: Any) -> None:
    if context.operation_name == "boom":
        raise ValueError("boom")
    context.signal_entity(EntityId("other", "k"), "ping")
    context.set_state(context.get_state(lambda: 0) + 1)


class Watch(OperationWatch):
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str | None]] = []

    def begin(self, entity_id: EntityId, request: EntityRequest) -> str | None:
        self.seen.append(("begin", request.name, request.trace))
        return f"span-of-{request.name}"

    def end(self, request: EntityRequest, failure: FailureDetails | None) -> None:
        self.seen.append(("end", request.name, None if failure is None else failure.error_type))


def test_the_entity_executor_tells_its_watch_of_each_operation_and_hands_on_its_context() -> None:
    spec = EntitySpec("counter", _counter, is_class=False)
    watch = Watch()
    out = run_entity(spec, EntityId("counter", "a"), EntityState(),
                     [EntityRequest(T0, "add", None, trace=PARENT), EntityRequest(T0, "boom")], T0, watch=watch)
    assert watch.seen == [("begin", "add", PARENT), ("end", "add", None), ("begin", "boom", None),
                          ("end", "boom", "ValueError")]
    signals = [o.event for o in out if isinstance(o.event, EntityRequest)]
    assert [(s.name, s.trace) for s in signals] == [("ping", "span-of-add")]


def test_without_a_watch_an_entitys_signals_carry_the_requests_context() -> None:
    spec = EntitySpec("counter", _counter, is_class=False)
    out = run_entity(spec, EntityId("counter", "a"), EntityState(), [EntityRequest(T0, "add", trace=PARENT)], T0)
    assert [o.event.trace for o in out] == [PARENT]
