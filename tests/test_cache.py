"""The shard host's instance cache keeps its byte count right through every way an entry
comes and goes (no Ray, no SQLite)."""

from __future__ import annotations

from runtime._cache import _OVERHEAD, InstanceCache
from runtime._messages import Instance
from runtime._status import OrchestrationRuntimeStatus as S


def inst(iid: str, size: int) -> Instance:
    return Instance(iid, "o", "e", S.Running, b"x" * size, 0.0, 0.0)


def test_bytes_follow_set_replace_delete_pop_and_popitem():
    cache = InstanceCache()
    cache["a"], cache["b"], cache["c"] = inst("a", 100), inst("b", 200), inst("c", 300)
    assert cache.bytes == 3 * _OVERHEAD + 600
    cache["a"] = inst("a", 1000)  # replaced: the old one's bytes go
    assert cache.bytes == 3 * _OVERHEAD + 1500
    del cache["b"]
    assert cache.bytes == 2 * _OVERHEAD + 1300
    assert cache.pop("missing") is None and cache.pop("c").input_blob == b"x" * 300
    assert cache.popitem(last=False)[0] == "a"
    assert (len(cache), cache.bytes) == (0, 0)


def test_over_counts_entries_and_bytes_but_never_empties_for_one_big_entry():
    cache = InstanceCache()
    cache["a"] = inst("a", 10_000)
    assert not cache.over(max_count=5, max_bytes=100)  # one entry is kept, however big
    cache["b"] = inst("b", 10)
    assert cache.over(max_count=5, max_bytes=100)
    assert cache.over(max_count=1, max_bytes=10**9)
    assert not cache.over(max_count=5, max_bytes=10**9)
