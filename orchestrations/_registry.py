"""Registration of orchestrators and activities by name.

Decorators register into the process-wide :data:`default_registry`. The runtime ships a
snapshot of the registry to shard hosts and workers with cloudpickle, so functions defined in
``__main__`` or a notebook travel by value.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar, overload

from ._compat import tolerate_new_fields
from ._errors import DurableTypeError, DurableValueError
from ._guards import in_orchestrator_code, warn_nondeterministic_calls
from ._ids import check_encodable
from ._options import activity_options

F = TypeVar("F", bound=Callable[..., Any])

#: Ray resource options an activity may carry (passed to ``.options()`` of the Ray task).
ACTIVITY_OPTION_NAMES = frozenset(
    {
        "num_cpus",
        "num_gpus",
        "memory",
        "resources",
        "accelerator_type",
        "max_retries",
        "retry_exceptions",
        "runtime_env",
        "scheduling_strategy",
        "label_selector",
    }
)


@dataclass(frozen=True, slots=True)
class ActivitySpec:
    """A registered activity: its name, function, whether it is async, and Ray options."""

    name: str
    fn: Callable[..., Any]
    is_async: bool
    ray_options: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class OrchestratorSpec:
    """A registered orchestrator: its name and function. ``is_generator``: a generator function
    or an ``async def`` (driven step by step); otherwise a plain function (one episode). The
    executor decides by what the call returns, so a wrapper that returns a generator works too.

    ``version`` is the one given to ``@orchestrator(version=...)`` (``None``: unversioned). The
    registry holds one spec per name, its latest version, with the other versions registered
    under that name in ``earlier`` (oldest first); ``None`` sorts before every number.
    """

    name: str
    fn: Callable[..., Any]
    is_generator: bool
    version: int | None = None
    earlier: tuple[OrchestratorSpec, ...] = ()

    @property
    def versions(self) -> list[int | None]:
        """Every version registered under this name, oldest first."""
        return [s.version for s in self.earlier] + [self.version]

    def at_version(self, version: int | None) -> OrchestratorSpec | None:
        """The spec of ``version`` under this name, ``None`` if it is not registered."""
        if version == self.version:
            return self
        return next((s for s in self.earlier if s.version == version), None)

    def with_version(self, other: OrchestratorSpec) -> OrchestratorSpec:
        """This name's versions plus ``other`` (which replaces a spec of the same version)."""
        specs = {s.version: replace(s, earlier=()) for s in (*self.earlier, self)}
        specs[other.version] = replace(other, earlier=())
        ordered = sorted(specs.values(), key=_version_order)
        return replace(ordered[-1], earlier=tuple(ordered[:-1]))

    def missing_version(self, version: int | None) -> str:
        """The failure message for an instance recorded on ``version``, which is not registered
        here: it names the orchestrator, the version, the versions registered and the fix."""
        registered = ", ".join("unversioned" if v is None else str(v) for v in self.versions)
        if version is None:
            return (
                f"orchestrator {self.name!r} has no unversioned function registered (registered versions: "
                f"{registered}); this instance started before versions were used and replays only with "
                f"that code: keep it registered as @orchestrator(name={self.name!r}) to finish such instances"
            )
        return (
            f"orchestrator {self.name!r} version {version} is not registered (registered versions: {registered}); "
            f"this instance started on version {version} and replays only with it: register it again as "
            f"@orchestrator(name={self.name!r}, version={version}) to finish such instances"
        )


def _version_order(spec: OrchestratorSpec) -> int:
    return -1 if spec.version is None else spec.version


def merge_orchestrators(
    current: dict[str, OrchestratorSpec], incoming: dict[str, OrchestratorSpec]
) -> dict[str, OrchestratorSpec]:
    """``current`` with every version of ``incoming`` added (by name and version; a version
    registered again takes the new code). Nothing is removed, so a registry that holds only
    the latest version does not take an older one away from the instances still running it."""
    merged = dict(current)
    for name, spec in incoming.items():
        base = merged.get(name)
        if base is None:
            merged[name] = spec
            continue
        for one in (*spec.earlier, spec):
            base = base.with_version(one)
        merged[name] = base
    return merged


@dataclass
class Registry:
    """Orchestrators and activities by name. ``version`` grows with every registration."""

    orchestrators: dict[str, OrchestratorSpec] = field(default_factory=dict)
    activities: dict[str, ActivitySpec] = field(default_factory=dict)
    #: entity specs by lower-cased name (the type lives in ``entities``, which builds on this package)
    entities: dict[str, Any] = field(default_factory=dict)
    version: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add_orchestrator(
        self, fn: Callable[..., Any], name: str | None = None, version: int | None = None
    ) -> OrchestratorSpec:
        """Register ``fn`` as an orchestrator, as ``version`` of ``name`` if given (several
        versions may share a name; new instances start on the latest). A (name, version) pair
        already in use raises ``ValueError``; returns the spec of ``fn``."""
        if not callable(fn):
            raise DurableTypeError(f"an orchestrator must be a function, got {fn!r}")
        _check_parameters(fn, "orchestrator", 1, 1, "def {name}(context): ...")
        if inspect.isasyncgenfunction(fn):
            raise DurableTypeError(
                f"orchestrator {getattr(fn, '__name__', fn)!r} is an async generator (async def with yield): "
                "write a generator (def ... yield task) or a coroutine (async def ... await task), not both"
            )
        is_stepwise = inspect.isgeneratorfunction(fn) or inspect.iscoroutinefunction(fn)
        spec = OrchestratorSpec(_check_name(name or fn.__name__), fn, is_stepwise, check_version(version))
        with self._lock:
            family = self.orchestrators.get(spec.name)
            if family is not None and family.at_version(spec.version) is not None:
                which = "" if spec.version is None else f" version {spec.version}"
                raise DurableValueError(f"an orchestrator named {spec.name!r}{which} is already registered")
            self.orchestrators[spec.name] = spec if family is None else family.with_version(spec)
            self.version += 1
        warn_nondeterministic_calls(fn, spec.name)
        return spec

    def add_activity(
        self, fn: Callable[..., Any], name: str | None = None, **ray_options: Any
    ) -> ActivitySpec:
        """Register ``fn`` as an activity; unknown Ray options or a duplicate name raise."""
        if not callable(fn):
            raise DurableTypeError(f"an activity must be a function, got {fn!r}")
        fn = getattr(fn, "__durable_activity__", fn)  # registered again: the function, not its guard
        _check_parameters(
            fn, "activity", 0, 1, "def {name}(input): ... (pass several values as one tuple or dict)"
        )
        unknown = sorted(set(ray_options) - ACTIVITY_OPTION_NAMES)
        if unknown:
            raise DurableValueError(f"unknown activity option(s) {unknown}")
        spec = ActivitySpec(
            _check_name(name or fn.__name__),
            fn,
            inspect.iscoroutinefunction(fn),
            activity_options(ray_options),
        )
        with self._lock:
            if spec.name in self.activities:
                raise DurableValueError(f"an activity named {spec.name!r} is already registered")
            self.activities[spec.name] = spec
            self.version += 1
        return spec

    def add_entity(self, name: str, spec: Any) -> None:
        """Register an entity spec under its lower-cased name (entity names are
        case-insensitive); a name already in use, in any case, or one containing ``@`` (the
        separator of ``@name@key``) raises ``ValueError``."""
        key = _check_name(name).lower()
        if "@" in key:
            raise DurableValueError(f"an entity name must not contain '@' (ids are written @name@key), got {name!r}")
        with self._lock:
            if key in self.entities:
                raise DurableValueError(
                    f"an entity named {name!r} is already registered (entity names are case-insensitive)"
                )
            self.entities[key] = spec
            self.version += 1

    def snapshot(self) -> tuple[dict[str, OrchestratorSpec], dict[str, ActivitySpec], dict[str, Any], int]:
        """Copies of the three tables and the version they correspond to."""
        with self._lock:
            return dict(self.orchestrators), dict(self.activities), dict(self.entities), self.version

    def __getstate__(self) -> dict[str, Any]:
        return {
            "orchestrators": self.orchestrators,
            "activities": self.activities,
            "entities": self.entities,
            "version": self.version,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]


def _check_parameters(fn: Callable[..., Any], kind: str, least: int, most: int, shape: str) -> None:
    """Refuse, at decoration, a function that cannot be called with ``least`` to ``most``
    positional arguments the way the runtime calls it (``shape`` shows the right form)."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # a builtin or C callable: nothing to check
        return
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    required_kw = [p for p in params if p.kind is p.KEYWORD_ONLY and p.default is p.empty]
    takes_more = any(p.kind is p.VAR_POSITIONAL for p in params)
    name = getattr(fn, "__name__", "fn")
    if len(required) > most or required_kw or (len(positional) < least and not takes_more):
        count = "one parameter" if most == 1 and least == 1 else f"at most {most} parameter"
        raise DurableTypeError(
            f"{kind} {name!r} must take {count}, but its signature is {name}{inspect.signature(fn)}: "
            f"write {shape.format(name=name)}"
        )


def did_you_mean(name: str, known: Any, fold_case: bool = False) -> str:
    """A hint for "not registered" errors: ``"did you mean 'x' or 'y'?"`` naming the registered
    names closest to ``name``; if none is close, the registered names themselves (up to ten);
    ``"nothing is registered"`` if there are none. ``fold_case`` compares lower-cased ``name``
    (entity names are case-insensitive)."""
    names = sorted(str(k) for k in known)
    wanted = name.lower() if fold_case else name
    scored = sorted(
        ((difflib.SequenceMatcher(None, wanted, n).ratio(), n) for n in names), key=lambda t: -t[0]
    )
    # the best match, and only those nearly as close (a typo has one obvious fix)
    close = [n for score, n in scored[:3] if score >= 0.6 and score >= scored[0][0] - 0.1]
    if close:
        return "did you mean " + " or ".join(repr(c) for c in close) + "?"
    if names:
        more = ", ..." if len(names) > 10 else ""
        return "registered: " + ", ".join(repr(n) for n in names[:10]) + more
    return "nothing is registered"


def check_version(version: object) -> int | None:
    """``version`` if it is ``None`` or an int of at least 0; raises naming it otherwise."""
    if version is None:
        return None
    if isinstance(version, bool) or not isinstance(version, int):
        raise DurableTypeError(f"an orchestrator version must be an int (or None), got {version!r}")
    if version < 0:
        raise DurableValueError(f"an orchestrator version must be 0 or more, got {version!r}")
    return version


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not name or len(name) > 256:
        raise DurableValueError(f"a function name must be a non-empty string of at most 256 chars, got {name!r}")
    check_encodable(name, "a function name")
    return name


# a registry saved by an older release (in a shard file) has specs without the version fields
tolerate_new_fields(OrchestratorSpec)

#: The process-wide registry the decorators write to.
default_registry = Registry()


def function_name(name_or_fn: str | Callable[..., Any], kind: str) -> str:
    """The registered name of ``name_or_fn`` (a name, or a decorated or plain function)."""
    if isinstance(name_or_fn, str):
        if not name_or_fn:
            raise DurableValueError(f"{kind} name must not be empty")
        return name_or_fn
    registered = getattr(name_or_fn, "__durable_name__", None)
    if isinstance(registered, str):
        return registered
    if callable(name_or_fn) and hasattr(name_or_fn, "__name__"):
        return name_or_fn.__name__
    raise DurableTypeError(f"{kind} must be a name or a function, got {name_or_fn!r}")


def function_version(name_or_fn: str | Callable[..., Any]) -> int | None:
    """The version ``@orchestrator(version=...)`` gave ``name_or_fn``; ``None`` for a name (the
    latest is meant) or an unversioned function."""
    version = getattr(name_or_fn, "__durable_version__", None)
    return version if isinstance(version, int) and not isinstance(name_or_fn, str) else None


@overload
def orchestrator(fn: F, /) -> F: ...
@overload
def orchestrator(*, name: str | None = None, version: int | None = None) -> Callable[[F], F]: ...
def orchestrator(fn: Any = None, /, *, name: str | None = None, version: int | None = None) -> Any:
    """Register an orchestrator function (``@orchestrator``, ``@orchestrator(name=...)``, or
    ``@orchestrator(name=..., version=N)``).

    The function takes one argument, the :class:`OrchestrationContext` (checked here). A
    generator function yields tasks, an ``async def`` awaits them; either is replayed from
    history after a restart, so it must be deterministic: calls of the clock, ``time.sleep``
    and random numbers found in its code are reported here with a :class:`DeterminismWarning`.
    A plain function completes in one episode.

    Versions (an int, 0 or more) let code change while instances run: register the new code as
    a new version under the same name and keep the old ones registered. A start by name
    (``start_new("shipping")``, ``continue_as_new``, ``restart``) runs the latest version, and
    so does ``call_sub_orchestrator`` (given a name or a function: the child is started by
    name); ``start_new(fn)`` runs ``fn``'s own version. Each instance records
    its version and always replays with it; if that version is no longer registered, the
    instance fails with a message naming it, never running another version. An unversioned
    function counts as older than every version. A (name, version) registered twice raises
    ``ValueError``.
    """

    def register(f: F) -> F:
        spec = default_registry.add_orchestrator(f, name, version)
        f.__durable_name__ = spec.name  # type: ignore[attr-defined]
        f.__durable_version__ = spec.version  # type: ignore[attr-defined]
        return f

    return register(fn) if fn is not None else register


@overload
def activity(fn: F, /) -> F: ...
@overload
def activity(*, name: str | None = None, **ray_options: Any) -> Callable[[F], F]: ...
def activity(fn: Any = None, /, *, name: str | None = None, **ray_options: Any) -> Any:
    """Register an activity (``@activity`` or ``@activity(name=..., num_cpus=...)``).

    An activity takes at most one argument, its input (checked here), and may be sync or
    async. It runs on a Ray worker with the given Ray resource options, at least once (again
    after a crash). The decorated function stays callable as a plain function, except inside
    orchestrator code, where a direct call raises :class:`DurableTypeError` (it would run
    inline, on every replay): use ``context.call_activity``.
    """

    def register(f: F) -> F:
        spec = default_registry.add_activity(f, name, **ray_options)
        guarded = _guard(f, spec.name)
        guarded.__durable_name__ = spec.name  # type: ignore[attr-defined]
        return guarded  # type: ignore[return-value]

    return register(fn) if fn is not None else register


def _guard(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    """``fn``, refusing to run inside orchestrator code: there a direct call would run the
    activity inline on the shard host, on every replay, outside any history."""

    @functools.wraps(fn)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if in_orchestrator_code():
            raise DurableTypeError(
                f"activity {name!r} was called directly inside an orchestrator: write "
                f"`result = yield context.call_activity({name!r}, input)` (`await` in an async "
                "orchestrator); a direct call would run it inline, again on every replay"
            )
        return fn(*args, **kwargs)

    if inspect.iscoroutinefunction(fn) and sys.version_info >= (3, 12):
        inspect.markcoroutinefunction(guarded)  # type: ignore[attr-defined]
    guarded.__durable_activity__ = fn  # type: ignore[attr-defined]
    return guarded
