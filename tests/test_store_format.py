"""The stored format (version 3) on a real SQLite file, without Ray: a version-2 file checked in
under ``tests/data/hub_v2`` (written by the release at c114a73) migrates in place with a backup
kept; a file newer than the code is refused untouched; what is stored reads with ``sqlite3``
and ``json`` alone."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from orchestrations import FailureDetails, ShardFileError, TaskCompleted
from runtime._codec import load_value
from runtime._codec_records import load_event, load_failure
from runtime._files import read_hub_file
from runtime._messages import Instance
from runtime._store import FORMAT_VERSION, ShardStore

FIXTURE = Path(__file__).parent / "data" / "hub_v2"


@pytest.fixture
def hub_v2(tmp_path: Path) -> Path:
    """A copy of the version-2 hub (the checked-in files are never opened for writing)."""
    skip = shutil.ignore_patterns("*-shm", "*-wal", "*.lock")
    return Path(shutil.copytree(FIXTURE, tmp_path / "hub_v2", ignore=skip))


def _open(directory: Path, shard: int) -> ShardStore:
    info = read_hub_file(str(directory))
    assert info is not None
    store = ShardStore(str(directory / f"shard-{shard:02d}.sqlite"), "hub_v2", shard, 2, hub_id=info["hub_id"],
                       create=False)
    asyncio.run(_open_and_close(store))
    return store


async def _open_and_close(store: ShardStore) -> None:
    await store.open(lock_timeout=1)
    await store.close()


def _rows(path: Path, sql: str) -> list[tuple]:
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return db.execute(sql).fetchall()


def test_the_fixture_is_a_version_2_hub(hub_v2: Path) -> None:
    assert _rows(hub_v2 / "shard-00.sqlite", "SELECT value FROM meta WHERE key = 'format_version'") == [("2",)]
    assert FORMAT_VERSION == 3


def test_a_version_2_file_is_migrated_in_place_with_a_backup(hub_v2: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ray_durable.store"):
        _open(hub_v2, 0)
    path = hub_v2 / "shard-00.sqlite"
    backup = hub_v2 / "shard-00.sqlite.v2.bak"
    assert _rows(path, "SELECT value FROM meta WHERE key = 'format_version'") == [("3",)]
    assert _rows(backup, "SELECT value FROM meta WHERE key = 'format_version'") == [("2",)]
    assert _rows(backup, "SELECT count(*) FROM history") == _rows(path, "SELECT count(*) FROM history")
    assert (backup.stat().st_mode & 0o777) == 0o600
    assert "migrated to version 3" in caplog.text and str(backup) in caplog.text

    from runtime._schema import INSTANCE_COLUMNS, InstanceRow

    rows = {r[0]: InstanceRow._make(r) for r in _rows(path, f"SELECT {INSTANCE_COLUMNS} FROM instances")}
    done = Instance.from_row(rows["done-1"])
    assert load_value(done.input_blob) == {"user": "ada"}
    assert json.loads(done.input_blob or "") == {"user": "ada"}  # plain JSON now
    assert load_value(done.output_blob) == ["Hello Tokyo!", "Hello Seattle!", ("a", "tuple")]  # a tuple: marked
    assert json.loads(done.custom_status_blob or "") == {"step": 2}
    waiting = Instance.from_row(rows["waiting-1"])
    assert load_value(waiting.input_blob) == ("tuple", 1)
    stored = _rows(path, f"SELECT data FROM history WHERE num = {done.num} ORDER BY seq")
    history = [load_event(data) for (data,) in stored]
    assert history[0].event_type == "ExecutionStarted" and history[-1].event_type == "ExecutionCompleted"
    assert [e.result for e in history if isinstance(e, TaskCompleted)] == ["Hello Tokyo!", "Hello Seattle!"]
    (state,) = _rows(path, "SELECT state FROM entities")
    assert json.loads(state[0]) == 41
    assert _rows(path, "SELECT count(*) FROM timers") == [(1,)]


def test_a_failure_migrates_to_a_failure_record(hub_v2: Path) -> None:
    _open(hub_v2, 1)
    ((failure,),) = _rows(hub_v2 / "shard-01.sqlite", "SELECT failure FROM instances WHERE instance_id = 'failed-1'")
    record = json.loads(failure)
    assert record["error_type"] == "TaskFailedError" and "out of stock" in record["message"]
    assert isinstance(load_failure(failure), FailureDetails)


def test_opening_a_migrated_file_again_changes_nothing(hub_v2: Path) -> None:
    _open(hub_v2, 0)
    before = _rows(hub_v2 / "shard-00.sqlite", "SELECT data FROM history ORDER BY num, seq")
    _open(hub_v2, 0)
    assert _rows(hub_v2 / "shard-00.sqlite", "SELECT data FROM history ORDER BY num, seq") == before
    assert not (hub_v2 / "shard-00.sqlite.v2.bak.1").exists()


def test_a_file_newer_than_the_code_is_refused_untouched(hub_v2: Path) -> None:
    path = hub_v2 / "shard-00.sqlite"
    with closing(sqlite3.connect(path)) as db:
        db.execute("UPDATE meta SET value = '4' WHERE key = 'format_version'")
        db.commit()
    before = path.read_bytes()
    with pytest.raises(ShardFileError, match="format version 4, newer than this runtime's 3"):
        _open(hub_v2, 0)
    assert path.read_bytes() == before
    assert not (hub_v2 / "shard-00.sqlite.v2.bak").exists()


def test_a_version_2_file_of_another_hub_is_refused_before_anything_is_written(hub_v2: Path) -> None:
    before = (hub_v2 / "shard-00.sqlite").read_bytes()
    store = ShardStore(str(hub_v2 / "shard-00.sqlite"), "another", 0, 2, create=False)
    with pytest.raises(ShardFileError, match="belongs to hub 'hub_v2'"):
        asyncio.run(_open_and_close(store))
    assert (hub_v2 / "shard-00.sqlite").read_bytes() == before
    assert not (hub_v2 / "shard-00.sqlite.v2.bak").exists()


def test_stored_rows_read_with_the_standard_library_alone(hub_v2: Path) -> None:
    _open(hub_v2, 0)
    with closing(sqlite3.connect(f"file:{hub_v2 / 'shard-00.sqlite'}?mode=ro", uri=True)) as db:
        (output,) = db.execute("SELECT output FROM instances WHERE instance_id = 'done-1'").fetchone()
        (num,) = db.execute("SELECT num FROM instances WHERE instance_id = 'done-1'").fetchone()
        rows = db.execute("SELECT event_type, data FROM history WHERE num = ? ORDER BY seq", (num,)).fetchall()
    assert json.loads(output)["$pickle"]  # a tuple inside: JSON would change it, so it is a marked pickle
    records = [json.loads(data) for _, data in rows]
    assert [r["type"] for r in records] == [kind for kind, _ in rows]
    scheduled = [r for r in records if r["type"] == "TaskScheduled"]
    assert [(r["name"], r["input"]) for r in scheduled] == [("v2_greet", "Tokyo"), ("v2_greet", "Seattle")]
