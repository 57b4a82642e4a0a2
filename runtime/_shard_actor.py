"""The class Ray makes each shard host actor of: :class:`ShardHost`'s public methods and
nothing else, each handing its call to the host inside.

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
from collections.abc import Callable
from typing import Any

from ._shard import ShardHost
from ._shard_base import ShardConfig


def _forward(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    """A method of the actor class that calls ``host.<name>`` with its arguments."""
    wrapper: Callable[..., Any]
    if inspect.iscoroutinefunction(method):

        async def forward_async(self: ShardActor, *args: Any, **kwargs: Any) -> Any:
            return await getattr(self.host, name)(*args, **kwargs)

        wrapper = forward_async
    else:

        def forward(self: ShardActor, *args: Any, **kwargs: Any) -> Any:
            return getattr(self.host, name)(*args, **kwargs)

        wrapper = forward
    wrapper = functools.wraps(method)(wrapper)  # name, docstring, signature, @ray.method options
    del wrapper.__wrapped__  # type: ignore[attr-defined]  # Ray unwraps to the host's function otherwise
    wrapper.__signature__ = inspect.signature(method)  # type: ignore[attr-defined]
    return wrapper


class ShardActor:
    """One shard host as a Ray actor: ``host`` is the :class:`ShardHost` doing the work."""

    def __init__(self, config: ShardConfig) -> None:
        self.host = ShardHost(config)


for _name, _method in inspect.getmembers(ShardHost, inspect.isfunction):
    if not _name.startswith("_"):
        setattr(ShardActor, _name, _forward(_name, _method))
