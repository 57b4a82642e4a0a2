"""Every shard file knows its hub and its index, and the hub (``hub.json``) knows its files: a
file that is missing, deleted under a running hub, swapped with another shard's, taken from
another hub, or another application's SQLite file is refused by name, never recreated empty,
served or written to. A hub written before files had an identity still opens, and records it.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from orchestrations import ShardFileError, orchestrator
from runtime import OrchestrationRuntimeStatus as S
from runtime import TaskHub

from ..conftest import ALWAYS_REPLAY

pytestmark = [
    pytest.mark.integration,
    # files, permissions and refusals at open: nothing here depends on replaying orchestrations
    pytest.mark.skipif(ALWAYS_REPLAY, reason="checks files and inputs, not replay; the normal run covers it"),
]


@orchestrator(name="si_waiter")
def waiter(ctx):
    return (yield ctx.wait_for_external_event("go"))


@orchestrator(name="si_echo")
def echo(ctx):
    return ctx.get_input()


HUB = "si-files"


def _hub(data_dir: Path, name: str = HUB, num_shards: int = 2) -> TaskHub:
    return TaskHub(name, data_dir=data_dir, num_shards=num_shards, always_replay=ALWAYS_REPLAY, lock_timeout=1,
                   warm_worker=False)


@pytest.fixture(scope="module")
def made(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A closed 2-shard hub whose shards hold some finished instances, and their ids; each
    test works on a copy of its directory (:func:`_copy`)."""
    data_dir = tmp_path_factory.mktemp("identity")
    with _hub(data_dir) as hub:
        ids = hub.start_new_batch(echo, range(6))
        for iid in ids:
            hub.wait_for_completion(iid, timeout=30)
    return data_dir / HUB, ids


def _copy(made: tuple[Path, list[str]], data_dir: Path) -> Path:
    """A copy of the made hub's directory under ``data_dir`` (the same hub: same identity)."""
    shutil.copytree(made[0], data_dir / HUB, ignore=shutil.ignore_patterns("*.lock"))
    return data_dir / HUB


def _unlink(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _snapshot(directory: Path, shard: str = "*") -> dict[str, bytes]:
    """The data of the hub's shard files (or of one): not the lock files, not SQLite's
    shared-memory index, not an empty write-ahead log (which reading a database in WAL mode
    creates)."""
    files = sorted(directory.glob(f"shard-{shard}.sqlite*"))
    kept = [p for p in files if p.suffix == ".sqlite" or (p.name.endswith("-wal") and p.stat().st_size)]
    return {p.name: p.read_bytes() for p in kept}


def _meta(path: Path) -> dict[str, str]:
    with closing(sqlite3.connect(path)) as db:
        return dict(db.execute("SELECT key, value FROM meta").fetchall())


def _set_meta(path: Path, key: str, value: str | None) -> None:
    with closing(sqlite3.connect(path)) as db:
        if value is None:
            db.execute("DELETE FROM meta WHERE key = ?", (key,))
        else:
            db.execute("UPDATE meta SET value = ? WHERE key = ?", (value, key))
        db.commit()


def test_a_shard_file_deleted_while_the_hub_runs_is_refused_by_name(ray_session, tmp_path):
    with _hub(tmp_path, "si-deleted", num_shards=1) as hub:
        hub.start_new(waiter, "si-w", None)
        path = tmp_path / "si-deleted" / "shard-00.sqlite"
        path.unlink()
        with pytest.raises(ShardFileError, match=r"shard-00\.sqlite: was deleted while its hub was running"):
            hub.raise_event("si-w", "go", 1)
        with pytest.raises(ShardFileError, match=r"shard-00\.sqlite: was deleted"):
            hub.get_status("si-w")  # not served from the file nobody sees any more
        with pytest.raises(ShardFileError, match=r"shard-00\.sqlite: was deleted"):
            hub.start_new(echo, "si-later", 2)
        assert not path.exists()  # never recreated


def test_a_shard_file_missing_when_the_hub_is_reopened_is_refused_by_name(made, tmp_path):
    directory = _copy(made, tmp_path)
    _unlink(directory / "shard-01.sqlite")
    with pytest.raises(ShardFileError, match=r"shard-01\.sqlite: is missing: hub 'si-files' has it"):
        _hub(tmp_path)
    assert not (directory / "shard-01.sqlite").exists()  # not recreated empty


def test_swapped_shard_files_are_refused_by_name_and_left_as_they_are(made, tmp_path):
    directory = _copy(made, tmp_path)
    first, second = directory / "shard-00.sqlite", directory / "shard-01.sqlite"
    first.rename(directory / "tmp")
    second.rename(first)
    (directory / "tmp").rename(second)
    before = _snapshot(directory)
    with pytest.raises(ShardFileError, match=r"shard-0[01]\.sqlite: is the file of shard [01] of hub 'si-files'"):
        _hub(tmp_path)
    assert _snapshot(directory) == before


@pytest.mark.parametrize(
    ("key", "value", "refused"),
    [
        ("hub", "si-other", r"belongs to hub 'si-other', not to 'si-files'"),
        ("hub_id", "0" * 32, r"belongs to another hub named 'si-files' \(hub id 0{32}"),  # same name, elsewhere
    ],
)
def test_a_shard_file_of_another_hub_is_refused_by_name(made, tmp_path, key, value, refused):
    directory = _copy(made, tmp_path)
    _set_meta(directory / "shard-00.sqlite", key, value)
    before = _snapshot(directory, "00")  # (shard 1's host may write its own file before the hub gives up)
    with pytest.raises(ShardFileError, match=r"shard-00\.sqlite: " + refused):
        _hub(tmp_path)
    assert _snapshot(directory, "00") == before


def _foreign_database(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT)")
        db.execute("INSERT INTO users(name) VALUES ('ada')")
        db.commit()


@pytest.mark.parametrize("hub_exists", [False, True])
def test_another_applications_sqlite_file_is_refused_untouched(made, tmp_path, hub_exists):
    directory = _copy(made, tmp_path) if hub_exists else tmp_path / HUB
    _unlink(directory / "shard-01.sqlite")
    foreign = directory / "shard-01.sqlite"
    _foreign_database(foreign)
    before = foreign.read_bytes()
    refused = r"shard-01\.sqlite: is a SQLite database but not a shard file \(tables: users\)"
    with pytest.raises(ShardFileError, match=refused):
        _hub(tmp_path)
    assert foreign.read_bytes() == before  # not written: no table, no journal mode, nothing
    assert not Path(f"{foreign}-wal").exists()


def test_a_hub_written_before_files_had_an_identity_opens_and_records_it(made, tmp_path):
    directory, ids = _copy(made, tmp_path), made[1]
    # what the previous version wrote: hub.json without hub_id and shards, files without hub_id
    info = json.loads((directory / "hub.json").read_text())
    (directory / "hub.json").write_text(json.dumps({k: info[k] for k in ("name", "num_shards", "format_version")}))
    for i in range(2):
        _set_meta(directory / f"shard-{i:02d}.sqlite", "hub_id", None)
    with _hub(tmp_path) as hub:
        assert [hub.get_status(i).runtime_status for i in ids] == [S.Completed] * len(ids)
        assert hub.wait_for_completion(hub.start_new(echo, None, "new"), timeout=30).output == "new"
    info = json.loads((directory / "hub.json").read_text())
    assert info["shards"] == ["shard-00.sqlite", "shard-01.sqlite"]
    assert [_meta(directory / f"shard-{i:02d}.sqlite")["hub_id"] for i in range(2)] == [info["hub_id"]] * 2
    # and from now on its files are known: one that goes missing is refused
    _unlink(directory / "shard-00.sqlite")
    with pytest.raises(ShardFileError, match=r"shard-00\.sqlite: is missing"):
        _hub(tmp_path)


def test_a_new_hub_records_its_identity_in_hub_json_and_in_every_file(made):
    directory = made[0]
    info = json.loads((directory / "hub.json").read_text())
    assert info["shards"] == ["shard-00.sqlite", "shard-01.sqlite"] and len(info["hub_id"]) == 32
    for i in range(2):
        meta = _meta(directory / f"shard-{i:02d}.sqlite")
        identity = (meta["hub"], meta["hub_id"], meta["shard"], meta["num_shards"])
        assert identity == (HUB, info["hub_id"], str(i), "2")
