"""What the parts of :class:`runtime.TaskHub` (``ControlClient``, ``QueryClient``,
``EntityClient``) may use of the hub itself: its attributes and plumbing, declared once here
and defined by ``TaskHub`` (``runtime._client``). The parts inherit these declarations so that
each type-checks on its own; in ``TaskHub``'s MRO this class comes after every part, so a
declaration never hides a real method (``tests/test_client_layout.py``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from ._client_link import ClientLink
from ._messages import Message

T = TypeVar("T")


class ClientParts:
    """The hub's attributes and plumbing, as its parts see them."""

    name: str
    num_shards: int
    _shards: list[Any]
    _link: ClientLink

    def _call(self, make: Callable[[], T]) -> T:
        raise NotImplementedError

    def _submit(self, msgs: list[Message]) -> None:
        raise NotImplementedError

    def _shard(self, instance_id: str) -> Any:
        raise NotImplementedError

    def _shard_index(self, instance_id: str) -> int:
        raise NotImplementedError

    def _sync_registry(self) -> None:
        raise NotImplementedError

    def _by_shard(self, items: list[T], key: Callable[[T], str]) -> dict[int, list[T]]:
        raise NotImplementedError

    def _on_shards(self, method: str, by_shard: dict[int, list[Any]], *args: Any) -> list[Any]:
        raise NotImplementedError

    def get_status(self, instance_id: Any, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError
