"""Registration rules: names, duplicates, Ray options."""

from __future__ import annotations

import pytest

from orchestrations import DurableValueError, Registry
from orchestrations._registry import function_name


def hello(ctx):
    yield ctx.call_activity("x")


def work(x):
    return x


async def awork(x):
    return x


def test_duplicate_names_are_refused_at_registration():
    reg = Registry()
    reg.add_orchestrator(hello)
    with pytest.raises(DurableValueError, match="'hello' is already registered"):
        reg.add_orchestrator(hello)
    reg.add_activity(work)
    with pytest.raises(DurableValueError, match="'work' is already registered"):
        reg.add_activity(work, name="work")


def test_specs_know_generators_async_and_options():
    reg = Registry()
    assert reg.add_orchestrator(hello).is_generator
    assert not reg.add_orchestrator(work, name="plain").is_generator
    spec = reg.add_activity(awork, name="Slow", num_cpus=1)
    assert spec.is_async and dict(spec.ray_options) == {"num_cpus": 1}


def test_unknown_ray_option_is_refused():
    with pytest.raises(DurableValueError, match="num_cpu"):
        Registry().add_activity(work, num_cpu=1)


def test_function_name_of_names_and_functions():
    assert function_name("by_name", "activity") == "by_name"
    assert function_name(work, "activity") == "work"
    with pytest.raises(ValueError, match="must not be empty"):
        function_name("", "activity")
    with pytest.raises(TypeError, match="activity must be a name or a function"):
        function_name(42, "activity")  # type: ignore[arg-type]
