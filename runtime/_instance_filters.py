"""The WHERE terms of an instance query, shared by the store and the read-only reader of a
hub's files (``runtime._readonly``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def _filters(
    created_from: float | None, created_to: float | None, statuses: Iterable[str] | None,
    prefix: str | None = None, name: str | None = None,
) -> tuple[list[str], list[Any]]:
    """The WHERE terms and arguments of an instance query (shared with the read-only path):
    creation time, statuses, id prefix and orchestrator ``name`` (exact), each if given."""
    where: list[str] = []
    args: list[Any] = []
    if name is not None:
        where.append("name = ?")
        args.append(name)
    if prefix is not None:
        low, high = prefix_bounds(prefix)
        where.append("instance_id >= ?")
        args.append(low)
        if high is not None:
            where.append("instance_id < ?")
            args.append(high)
    if created_from is not None:
        where.append("created_at >= ?")
        args.append(created_from)
    if created_to is not None:
        where.append("created_at <= ?")
        args.append(created_to)
    if statuses is not None:
        statuses = list(statuses)
        where.append(f"status IN ({','.join('?' * len(statuses))})")
        args += statuses
    return where, args


def prefix_bounds(prefix: str) -> tuple[str, str | None]:
    """``(low, high)`` such that a string starts with ``prefix`` exactly when ``low <= s < high``
    in SQLite's text order (``high`` is ``None``: no upper bound).

    A range on the primary key instead of ``LIKE 'prefix%'`` (whose ``%`` and ``_`` would need
    escaping and which SQLite only turns into a range under conditions): TEXT compares as UTF-8
    bytes, which orders like code points, so the bound is the prefix with its last character
    raised by one (past the surrogates, which UTF-8 cannot hold; a last character that cannot
    be raised is dropped and the one before it raised).
    """
    chars = list(prefix)
    while chars:
        code = ord(chars[-1]) + 1
        if 0xD800 <= code <= 0xDFFF:
            code = 0xE000
        if code <= 0x10FFFF:
            chars[-1] = chr(code)
            return prefix, "".join(chars)
        chars.pop()
    return prefix, None
