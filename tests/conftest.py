"""Shared fixtures: one local Ray the modules share, one hub per module on real SQLite files."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

#: CI runs the integration suite twice: cached generators, then always_replay=True.
ALWAYS_REPLAY = os.environ.get("DURABLE_ALWAYS_REPLAY", "") == "1"


@pytest.fixture(scope="module")
def ray_session() -> Iterator[None]:
    """A local Ray for the module, started by the first module that needs one and left running
    for the next (starting one costs ~3-5 s on 2 cores, and the suite runs ~20 modules twice);
    shut down at the end of the session. A module that needs a Ray of another shape (a
    multi-node cluster) shuts this one down first; the next module starts a fresh one."""
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if not ray.is_initialized():
        # address="local": always a new Ray of our own, never a cluster someone started with
        # `ray start` (or a multi-node test) on this machine
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    yield


@pytest.fixture(scope="session", autouse=True)
def _ray_shut_down_at_the_end() -> Iterator[None]:
    """Stop the Ray the modules shared, once every test ran."""
    yield
    ray = sys.modules.get("ray")  # a unit-test run never imported it
    if ray is not None and ray.is_initialized():
        ray.shutdown()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh data directory for the module's hubs."""
    return tmp_path_factory.mktemp("durable")


@pytest.fixture(scope="module")
def hub(ray_session: None, data_dir: Path, request: pytest.FixtureRequest) -> Iterator[object]:
    """A 2-shard task hub for the module (always_replay per DURABLE_ALWAYS_REPLAY)."""
    from runtime import TaskHub

    name = request.module.__name__.rsplit(".", 1)[-1].replace("_", "-")
    with TaskHub(name, data_dir=data_dir, num_shards=2, always_replay=ALWAYS_REPLAY) as h:
        yield h



# -- modules that are one sequence by design keep their order when the suite is shuffled -----------


class _InOrder:
    """Tests marked ``in_order`` (the README's examples, which run one after another in one
    directory, as a reader would) take back their defined order, in the places pytest-randomly's
    shuffle gave them; every other test stays shuffled."""

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        by_module: dict[str, list[int]] = {}
        for n, item in enumerate(items):
            if item.get_closest_marker("in_order"):
                by_module.setdefault(str(item.path), []).append(n)
        for places in by_module.values():  # each module in its own places: modules stay whole
            for n, item in zip(places, sorted((items[n] for n in places), key=_defined_at)):
                items[n] = item


def _defined_at(item: pytest.Item) -> tuple[str, int, tuple[int, ...]]:
    path, line, _ = item.reportinfo()
    callspec = getattr(item, "callspec", None)
    return str(path), line or 0, tuple(callspec.indices.values()) if callspec is not None else ()


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(_InOrder(), "durable-in-order")
