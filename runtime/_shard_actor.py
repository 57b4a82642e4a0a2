"""The class Ray makes each shard host actor of: the public methods of
:class:`runtime._shard.ShardHost` and nothing else, each handing its call to the host inside.
It carries the host's name, so process titles (``ray::ShardHost``) and the log prefixes users
see (``(ShardHost pid=...)``) stay as they were.

Ray wraps every method of an actor class (its tracing hooks), and the first time a driver
creates an actor of the class it disassembles every one of those wrappers to fingerprint the
class (``function_manager.compute_collision_identifier``). ``ShardHost`` has about 120
methods, most of them the private parts of a turn: the fingerprint took ~0.19 s of every hub
open on a 2-core machine, in the driver, before any host process could start. This class has
only the methods callers reach through Ray (about 30), so it costs a fraction of that.

Each method keeps what Ray reads from the host's own method: whether it is a coroutine
(``async``), its signature (Ray checks a call's arguments against it), its docstring and its
``@ray.method`` options (the ``reads`` concurrency group of status reads).
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable
from typing import Any

from . import _shard
from ._shard_base import ShardConfig

#: the shard host process's GIL switch interval (see ``ShardHost.__init__``)
GIL_SWITCH_SECONDS = 0.0005


def _forward(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    """A method of the actor class that calls ``host.<name>`` with its arguments."""
    wrapper: Callable[..., Any]
    if inspect.iscoroutinefunction(method):

        async def forward_async(self: ShardHost, *args: Any, **kwargs: Any) -> Any:
            return await getattr(self.host, name)(*args, **kwargs)

        wrapper = forward_async
    else:

        def forward(self: ShardHost, *args: Any, **kwargs: Any) -> Any:
            return getattr(self.host, name)(*args, **kwargs)

        wrapper = forward
    wrapper = functools.wraps(method)(wrapper)  # name, docstring, signature, @ray.method options
    del wrapper.__wrapped__  # type: ignore[attr-defined]  # Ray unwraps to the host's function otherwise
    wrapper.__signature__ = inspect.signature(method)  # type: ignore[attr-defined]
    return wrapper


class ShardHost:
    """One shard host as a Ray actor: ``host`` is the :class:`runtime._shard.ShardHost` doing
    the work."""

    def __init__(self, config: ShardConfig) -> None:
        # The host's event loop takes client calls (a start is answered once journaled) while
        # its other threads run Python too (the SQLite thread applies a commit's writes). A
        # thread that wants the GIL waits up to the switch interval for a busy one to let go:
        # 5 ms by default, far more than a start costs. At 0.5 ms, 1,000 looped transfer starts
        # took 3.1-3.5 s instead of 3.5-4.5 s (4 alternating runs of each, 100 and 10 accounts).
        sys.setswitchinterval(GIL_SWITCH_SECONDS)
        self.host = _shard.ShardHost(config)


for _name, _method in inspect.getmembers(_shard.ShardHost, inspect.isfunction):
    if not _name.startswith("_"):
        setattr(ShardHost, _name, _forward(_name, _method))
