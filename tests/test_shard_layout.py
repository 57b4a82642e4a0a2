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
