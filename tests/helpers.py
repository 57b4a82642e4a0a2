"""Test helpers: wait on a condition with a deadline (never a bare sleep), from threads or from
asyncio; a free port for a server a test starts; a small simulated multi-node Ray cluster; a
process killed with everything it started."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
_pause = threading.Event()  # never set: wait() is a pause between polls


def has_litestream() -> bool:
    """Whether the Litestream binary (the ``replica`` extra) is installed."""
    from runtime._litestream import litestream_binary

    try:
        litestream_binary()
    except Exception:
        return False
    return True


def wait_until(condition: Callable[[], T], timeout: float = 30.0, interval: float = 0.02) -> T:
    """Poll ``condition`` until it returns a truthy value, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        _pause.wait(interval)


async def until(condition: Callable[[], object], timeout: float = 10.0, interval: float = 0.01) -> None:
    """:func:`wait_until` for asyncio code: poll without blocking the loop."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"condition not met within {timeout} s"
        await asyncio.sleep(interval)  # a poll interval


def _children() -> dict[int, list[int]]:
    """Every process's children, by parent pid, read from ``/proc``."""
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the field after the state
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def running(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie, dead but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def kill_tree(pids: list[int], timeout: float = 10.0) -> None:
    """SIGKILL ``pids`` and every process they started, the way a machine's loss takes them all
    at once, and return once none of them runs: a child a parent's death would kill only
    later (``PR_SET_PDEATHSIG``) must not be writing files while a test deletes them."""
    tree, doomed, todo = _children(), [], list(pids)
    while todo:
        pid = todo.pop()
        doomed.append(pid)
        todo.extend(tree.get(pid, []))
    for pid in doomed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not any(running(pid) for pid in doomed), timeout=timeout)


def free_port() -> int:
    """A port free now (on every interface), below Linux's ephemeral range (32768 and up) where Ray's
    processes take theirs: a port the kernel hands out can be handed to a Ray process again
    before the server it was meant for binds it (a CI run failed so: "Address already in use")."""
    for port in random.sample(range(20000, 32000), 200):
        with socket.socket() as s:
            try:
                s.bind(("", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port between 20000 and 32000")


@contextlib.contextmanager
def three_node_cluster() -> Iterator[tuple[Any, list[Any]]]:
    """A head (1 CPU, runs the driver) plus two 1-CPU worker nodes on this machine, with this
    process connected to it: yields ``(cluster, workers)``; torn down at the end. The local Ray
    other modules share is shut down first (the next module starts a fresh one)."""
    import ray
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if ray.is_initialized():
        ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    workers = [c.add_node(num_cpus=1) for _ in range(2)]
    ray.init(address=c.address, logging_level="WARNING", log_to_driver=False)
    c.wait_for_nodes()
    try:
        yield c, workers
    finally:
        ray.shutdown()
        c.shutdown()
