"""Traces: the one place that touches OpenTelemetry (the optional extra ``otel``).

Spans cross processes as W3C ``traceparent`` strings (``00-<trace id>-<span id>-<flags>``): a
client's start records one in the instance's ``ExecutionStarted``, an episode hands its own to
the activities, sub-orchestrations and entity operations it asks for, and the process that
runs them makes its span a child of it.

Who exports spans is the user's choice: the process's global tracer provider. A client sets it
as usual; the processes that host durable work (shard hosts, activity workers) call the hub's
``tracing_setup`` (an import path ``"package.module:function"`` or a picklable callable) once,
before their first span (:func:`setup`). Ray's ``ray.init(_tracing_startup_hook=...)`` sets the
same global provider and works as well.

Without the package, or with no provider set in a process, every helper here does nothing:
:func:`enabled` is the check the hot paths make first, and its answer is kept (a call and a
global's read); :func:`setup` asks again after it ran, and a driver asks again at each start
while it is off (it may set its provider after opening the hub).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

from ._codec import decode

try:
    from opentelemetry import context as _otel_context
    from opentelemetry import trace as _trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    AVAILABLE = True
except ImportError:  # the extra is not installed: tracing is off
    AVAILABLE = False

log = logging.getLogger("ray_durable.tracing")

#: the instrumentation scope of every span the runtime makes
TRACER_NAME = "ray_durable"
#: span kinds by name (so callers need not import OpenTelemetry)
CLIENT, SERVER, INTERNAL, CONSUMER = "client", "server", "internal", "consumer"

#: whether this process records spans (``None``: not asked yet, or asked again after a setup)
_on: bool | None = None
_setups_done: set[Any] = set()
_setup_lock = threading.Lock()
_propagator: Any = TraceContextTextMapPropagator() if AVAILABLE else None


def enabled(fresh: bool = False) -> bool:
    """Whether this process records spans: the package is there and a real tracer provider
    is set (not OpenTelemetry's default proxy or no-op one). The answer is kept; ``fresh``
    asks again if it was no (a driver, before a start)."""
    global _on
    if _on is not None and (_on or not fresh):
        return _on
    if not AVAILABLE:
        _on = False
        return False
    provider = _trace.get_tracer_provider()
    _on = not isinstance(provider, (_trace.ProxyTracerProvider, _trace.NoOpTracerProvider))
    return _on


def setup(spec: str | bytes | Callable[[], Any] | None) -> None:
    """Run the hub's ``tracing_setup`` in this process, once per setup (later calls with the
    same one do nothing). ``spec`` is ``"package.module:function"`` (or ``package.module.function``),
    a callable, or a callable encoded by ``runtime._codec.encode`` (how one travels to a warm
    worker: a function of ``__main__`` goes by value); ``None`` does nothing. A setup that fails
    is logged, not raised: traces are never a reason for durable work to stop."""
    global _on
    if spec is None or not AVAILABLE:
        return
    key: Any = spec if isinstance(spec, (str, bytes)) else id(spec)
    if key in _setups_done:
        return
    with _setup_lock:
        if key in _setups_done:
            return
        _setups_done.add(key)
        shown = _shown(spec)
        try:
            if isinstance(spec, str):
                spec = resolve(spec)
            elif isinstance(spec, bytes):
                spec = decode(spec)
            spec()  # type: ignore[operator]
        except Exception:
            log.exception("tracing_setup %r failed; this process records no spans", shown)
        _on = None  # ask again: the setup may have set a provider


def _shown(spec: Any) -> str:
    if isinstance(spec, bytes):
        return f"<encoded callable, {len(spec)} bytes>"
    return spec if isinstance(spec, str) else getattr(spec, "__qualname__", repr(spec))


def resolve(path: str) -> Callable[[], Any]:
    """The function an import path names: ``"package.module:function"`` or
    ``"package.module.function"``. Raises ``ValueError`` for a malformed path, ``ImportError``
    or ``AttributeError`` for one that names nothing."""
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ValueError(f"tracing_setup must be 'package.module:function', got {path!r}")
    fn = getattr(importlib.import_module(module_name), attr)
    if not callable(fn):
        raise ValueError(f"tracing_setup {path!r} is not callable")
    return fn  # type: ignore[no-any-return]


def _tracer() -> Any:
    return _trace.get_tracer(TRACER_NAME)


def _kind(kind: str) -> Any:
    return {CLIENT: SpanKind.CLIENT, SERVER: SpanKind.SERVER, CONSUMER: SpanKind.CONSUMER}.get(kind, SpanKind.INTERNAL)


def _parent_context(parent: str | None) -> Any:
    """The OpenTelemetry context of a ``traceparent`` (``None`` or a malformed one: a new trace
    begins, rather than the current span's being taken by accident)."""
    if parent is None:
        return _otel_context.Context()
    return _propagator.extract({"traceparent": parent})


def open_span(name: str, parent: str | None, kind: str = INTERNAL, attributes: dict[str, Any] | None = None) -> Any:
    """A started span (the caller ends it with :func:`close_span`), child of ``parent`` (a
    ``traceparent``; ``None``: the root of a new trace). ``None`` when tracing is off."""
    if not enabled():
        return None
    return _tracer().start_span(name, context=_parent_context(parent), kind=_kind(kind), attributes=attributes)


def close_span(span: Any, error_type: str | None = None, message: str | None = None) -> None:
    """End ``span`` (``None``: nothing); with ``error_type`` its status is an error naming it."""
    if span is None:
        return
    if error_type is not None:
        span.set_status(Status(StatusCode.ERROR, f"{error_type}: {message}" if message else error_type))
        span.set_attribute("error.type", error_type)
    span.end()


@contextlib.contextmanager
def span(
    name: str, parent: str | None, kind: str = INTERNAL, attributes: dict[str, Any] | None = None
) -> Iterator[Any]:
    """A span around the block, current inside it (log records made there carry its ids),
    child of ``parent`` (a ``traceparent``). An exception that leaves the block sets the error
    status with its type; :func:`fail` marks an error the block handled itself. Yields ``None``,
    and costs one check, when tracing is off."""
    opened = open_span(name, parent, kind, attributes)
    if opened is None:
        yield None
        return
    try:
        with _trace.use_span(opened, end_on_exit=False, record_exception=False, set_status_on_exception=False):
            yield opened
    except BaseException as exc:
        close_span(opened, type(exc).__name__, str(exc))
        raise
    opened.end()


def fail(span: Any, error_type: str, message: str | None = None) -> None:
    """Mark an open span (``None``: nothing) as failed with ``error_type``."""
    if span is not None:
        span.set_status(Status(StatusCode.ERROR, f"{error_type}: {message}" if message else error_type))
        span.set_attribute("error.type", error_type)


def activate(span: Any) -> Any:
    """Make ``span`` (not ``None``) current in this thread or task until :func:`deactivate` is
    given the token returned (for a span opened and closed in separate callbacks)."""
    return _otel_context.attach(_trace.set_span_in_context(span))


def deactivate(token: Any) -> None:
    """Undo :func:`activate`."""
    _otel_context.detach(token)


def traceparent_of(span: Any) -> str | None:
    """The ``traceparent`` of ``span`` (``None`` for ``None`` or an invalid span)."""
    if span is None or not span.get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=_trace.set_span_in_context(span))
    return carrier.get("traceparent")


def current_traceparent() -> str | None:
    """The ``traceparent`` of this thread's or task's current span (``None`` if there is none,
    or tracing is off)."""
    if not enabled():
        return None
    return traceparent_of(_trace.get_current_span())


def root(name: str, attributes: dict[str, Any] | None = None) -> str | None:
    """A new trace for something that arrived without one (an instance started with no trace
    context): a short span ``name`` is recorded as its root; returns its ``traceparent``
    (``None`` when tracing is off)."""
    opened = open_span(name, None, INTERNAL, attributes)
    parent = traceparent_of(opened)
    close_span(opened)
    return parent


# -- ids in the logs ----------------------------------------------------------------------------


def log_ids(traceparent: str | None) -> dict[str, str]:
    """``trace_id`` and ``span_id`` of a ``traceparent`` (``"-"`` each without one), as the
    ``extra`` of a log line about something whose span is not current (an instance's recorded
    context, say)."""
    parts = traceparent.split("-") if traceparent else []
    if len(parts) != 4:
        return {"trace_id": "-", "span_id": "-"}
    return {"trace_id": parts[1], "span_id": parts[2]}


class TraceIdsFilter(logging.Filter):
    """Adds ``trace_id`` and ``span_id`` (lower-case hex, or ``"-"`` when there is no current
    span) to every record it sees that has none yet (see :func:`log_ids`), for format strings
    (``%(trace_id)s``) and Ray's log encodings (which show a record's extra fields). It never
    drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if hasattr(record, "trace_id"):
            return True
        trace_id = span_id = "-"
        if AVAILABLE:  # any current span counts, whichever provider made it
            ctx = _trace.get_current_span().get_span_context()
            if ctx.is_valid:
                trace_id, span_id = format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")
        record.trace_id, record.span_id = trace_id, span_id
        return True


_FILTER = TraceIdsFilter()
#: the runtime's loggers (a logger's filters see only records logged on it, not its children's)
RUNTIME_LOGGERS = (
    "ray_durable", "ray_durable.shard", "ray_durable.entities", "ray_durable.warm", "ray_durable.delivery",
    "ray_durable.store", "ray_durable.wire", "ray_durable.watchdog", "ray_durable.tracing",
)


def install_log_filter() -> None:
    """Put :class:`TraceIdsFilter` on every ``ray_durable`` logger of this process (once each)."""
    names = set(RUNTIME_LOGGERS) | {
        n for n in logging.Logger.manager.loggerDict if n == "ray_durable" or n.startswith("ray_durable.")
    }
    for name in names:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
