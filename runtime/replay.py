"""Where the replayer's histories come from: a hub's files, exported JSON, or a running hub.

Each loader gives ``(instance_id, events)`` pairs, what
:meth:`orchestrations.testing.Replayer.replay` takes::

    from orchestrations.testing import Replayer
    from runtime.replay import histories_from_files

    import my_app.orchestrations  # the code about to be deployed registers its orchestrators
    failing = [r for r in Replayer().replay(histories_from_files("shop", ".durable")) if not r.ok]

Replaying runs the orchestrators on the stored values, so the values are rebuilt as a shard
host rebuilds them (the converter's trusted mode, which imports the modules of a user's
classes): load only files and documents you trust as much as the code itself. The files are
opened read-only (:class:`runtime._readonly.HubFiles`): nothing is written, no owner lock is
taken, and a hub that runs meanwhile is not disturbed (the loader sees what it committed).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Protocol

from orchestrations import HistoryEvent
from orchestrations.testing import Replayer, ReplayResult

from ._history_json import histories_from_json, history_to_json
from ._readonly import HubFiles

__all__ = [
    "histories_from_files", "histories_from_hub", "histories_from_json", "history_to_json", "load_json_file",
    "replay_files",
]


class _HistorySource(Protocol):
    """What :func:`histories_from_hub` needs of a ``TaskHub``."""

    def get_history(self, instance_id: str) -> list[HistoryEvent]: ...


def histories_from_files(
    hub: str, data_dir: str | os.PathLike[str] = ".durable", instance_ids: Iterable[str] | None = None
) -> Iterator[tuple[str, list[HistoryEvent]]]:
    """The history of every instance stored in hub ``hub``'s files under ``data_dir`` (or of
    those of ``instance_ids``), read one at a time. An instance that never started (Pending
    until its ``start_at``, or terminated before it) has recorded nothing to replay and is left
    out. Raises ``ValueError`` if there is no such hub, :class:`InstanceNotFoundError` for an id
    it does not hold."""
    with closing(HubFiles(hub, data_dir, trusted=True)) as files:
        ids = [iid for iid, _ in files.instance_names()] if instance_ids is None else instance_ids
        for instance_id in ids:
            events = files.get_history(instance_id)
            if events:
                yield instance_id, events  # type: ignore[misc]  # decoded: HistoryEvents, not RawEvents


def histories_from_hub(hub: _HistorySource, instance_ids: Iterable[str]) -> list[tuple[str, list[HistoryEvent]]]:
    """The histories of ``instance_ids`` as ``hub.get_history`` returns them (a connected
    ``TaskHub``: the hub's own decoding, in this process)."""
    return [(instance_id, hub.get_history(instance_id)) for instance_id in instance_ids]


def load_json_file(path: str | os.PathLike[str]) -> list[tuple[str, list[HistoryEvent]]]:
    """The histories in a file written by ``ray-durable export`` or ``hub.export_history``
    (one document, or a JSON list of them)."""
    return histories_from_json(Path(path).read_bytes())


def replay_files(
    replayer: Replayer, hub: str, data_dir: str | os.PathLike[str] = ".durable"
) -> list[ReplayResult]:
    """Replay every instance stored in hub ``hub``'s files with ``replayer`` (but those that
    never started: see :func:`histories_from_files`). An instance whose history cannot be
    loaded (a value whose class cannot be imported here) is a failing result of type
    ``"UndecodableHistory"`` naming the reason; the others are replayed all the same."""
    results: list[ReplayResult] = []
    with closing(HubFiles(hub, data_dir, trusted=True)) as files:
        for instance_id, name in files.instance_names():
            try:
                events = files.get_history(instance_id)
            except Exception as exc:  # unpickling runs the user's code: any error, one instance
                reason = f"a stored value cannot be decoded here ({type(exc).__name__}: {exc})"
                results.append(ReplayResult(instance_id, name, "UndecodableHistory", reason))
                continue
            if events:
                results += replayer.replay([(instance_id, list(events))])  # type: ignore[arg-type]
    return results
