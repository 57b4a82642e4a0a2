"""The shard host is put together from parts (``ShardInstances``, ``ShardEntities``,
``ShardLifecycle``, ``ShardQueries``) that use each other through what ``ShardBase`` declares.
The type checker checks every part against those declarations, but not that someone defines
them: these tests do, so a renamed or lost method fails here rather than as a
``NotImplementedError`` in the middle of a turn. (From the mistake, not a peer's test.)"""

from __future__ import annotations

import inspect

from runtime._shard import ShardHost
from runtime._shard_base import ShardBase, ShardConfig


def test_every_method_the_parts_declare_is_defined_by_the_host_or_a_part():
    declared = [name for name, value in vars(ShardBase).items() if inspect.isfunction(value)]
    assert "_episode" in declared and "_stage_outgoing" in declared
    assert [name for name in declared if getattr(ShardHost, name) is getattr(ShardBase, name)] == []


def test_every_attribute_the_parts_declare_is_set_by_the_host(tmp_path):
    host = ShardHost(ShardConfig(hub="layout", index=0, num_shards=1, path=str(tmp_path / "shard-0.db")))
    declared = list(ShardBase.__annotations__)
    assert "_store" in declared and "config" in declared
    assert [name for name in declared if not hasattr(host, name)] == []


def test_the_declarations_come_last_so_they_never_hide_a_part():
    assert ShardHost.__mro__[-2:] == (ShardBase, object)


def test_the_actor_class_ray_sees_has_the_hosts_public_methods_as_they_are_and_nothing_else():
    """Ray fingerprints an actor class by disassembling a wrapper of each of its methods, once
    per driver, before the first host can start: the actor class keeps that to the methods
    callers reach (see ``runtime._shard_actor``), each as Ray must see it, under the host's
    name (process titles, log prefixes)."""
    from runtime._shard_actor import ShardHost as ShardActor

    public = {n: f for n, f in inspect.getmembers(ShardHost, inspect.isfunction) if not n.startswith("_")}
    exposed = {n: f for n, f in inspect.getmembers(ShardActor, inspect.isfunction) if n != "__init__"}
    assert set(exposed) == set(public) and "submit" in exposed and len(exposed) < 40
    for name, method in exposed.items():
        host_method = public[name]
        assert _parameters(method) == _parameters(host_method), name
        assert inspect.iscoroutinefunction(method) == inspect.iscoroutinefunction(host_method), name
        ray_options = {k: v for k, v in vars(host_method).items() if k.startswith("__ray_")}
        assert {k: v for k, v in vars(method).items() if k.startswith("__ray_")} == ray_options, name
    assert getattr(ShardActor.get_status, "__ray_concurrency_group__", None) == "reads"
    assert (ShardActor.__name__, ShardActor.__module__) == ("ShardHost", "runtime._shard_actor")


def _parameters(method: object) -> list[inspect.Parameter]:
    """A method's parameters, without the one Ray's tracing adds to each method of an actor class
    it made (in place, once ``runtime._client`` applied ``ray.remote``)."""
    return [p for p in inspect.signature(method).parameters.values() if p.name != "_ray_trace_ctx"]  # type: ignore[arg-type]


def test_the_actor_class_hands_each_call_to_its_host(tmp_path):
    from runtime._shard_actor import ShardHost as ShardActor

    config = ShardConfig(hub="layout", index=0, num_shards=1, path=str(tmp_path / "shard-0.db"))
    actor = ShardActor(config)
    assert isinstance(actor.host, ShardHost)
    assert actor.get_config() is config  # type: ignore[attr-defined]
    actor.fail_next_commits(2)  # type: ignore[attr-defined]
    assert actor.host._store.failing_commits == 2
