"""Shard files: one owner at a time, and files that cannot be trusted are refused by name."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from orchestrations import ShardFileError, activity, orchestrator
from runtime import TaskHub

from ..conftest import ALWAYS_REPLAY

pytestmark = [
    pytest.mark.integration,
    # its hubs (in subprocesses or about files) take no always_replay: a second run would repeat the first
    pytest.mark.skipif(ALWAYS_REPLAY, reason="passes no always_replay; the normal run covers it"),
]
ROOT = Path(__file__).resolve().parents[2]
MB = 1024 * 1024


@activity(name="sf_size")
def size(blob: bytes) -> bytes:
    return blob[::-1] + b"!"


@orchestrator(name="sf_big")
def big(ctx):
    data = ctx.get_input()
    result = yield ctx.call_activity(size, data)
    return len(result)


def test_a_second_owner_of_a_shard_file_is_refused(ray_session, tmp_path):
    """Another driver (its own Ray) opening the same files while this hub holds them."""
    with TaskHub("owned", data_dir=tmp_path, num_shards=1):
        script = textwrap.dedent(f"""
            import sys
            sys.path.insert(0, {str(ROOT)!r})
            from runtime import TaskHub
            from orchestrations import ShardFileError
            try:
                TaskHub("owned", data_dir={str(tmp_path)!r}, num_shards=1, lock_timeout=0.5)
            except ShardFileError as exc:
                print("REFUSED:", exc)
        """)
        env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=240)
        assert "REFUSED:" in done.stdout, done.stderr[-2000:]
        assert "shard-00.sqlite: is in use by another process (pid" in done.stdout


def test_a_corrupt_shard_file_is_refused_by_name(ray_session, tmp_path):
    TaskHub("corrupt", data_dir=tmp_path, num_shards=1).close()
    path = tmp_path / "corrupt" / "shard-00.sqlite"
    for suffix in ("-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    path.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(ShardFileError, match=r"shard-00\.sqlite: is not a usable SQLite database"):
        TaskHub("corrupt", data_dir=tmp_path, num_shards=1, lock_timeout=1)
    assert path.read_bytes().startswith(b"this is not a database")  # nothing was reset


def test_a_truncated_shard_file_is_refused_by_name(ray_session, tmp_path):
    with TaskHub("truncated", data_dir=tmp_path, num_shards=1) as hub:
        for i in range(50):
            hub.start_new(big, client_input=bytes(2000) + bytes([i]))
    path = tmp_path / "truncated" / "shard-00.sqlite"
    size_before = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size_before // 2)
    with pytest.raises(ShardFileError, match=r"shard-00\.sqlite"):
        TaskHub("truncated", data_dir=tmp_path, num_shards=1, lock_timeout=1)


@pytest.mark.parametrize(("version", "word"), [("99", "newer"), ("1", "older")])
def test_another_format_version_is_refused_by_name(ray_session, tmp_path, version, word):
    TaskHub("versions", data_dir=tmp_path, num_shards=1).close()
    path = tmp_path / "versions" / "shard-00.sqlite"
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = ? WHERE key = 'format_version'", (version,))
    db.commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the change is in the file itself now
    db.close()
    before = path.read_bytes()
    with pytest.raises(ShardFileError, match=rf"shard-00\.sqlite: has format version {version}, {word} than"):
        TaskHub("versions", data_dir=tmp_path, num_shards=1, lock_timeout=1)
    assert path.read_bytes() == before  # refused untouched


def test_ten_megabyte_inputs_and_results(ray_session, tmp_path):
    with TaskHub("large", data_dir=tmp_path, num_shards=1) as hub:
        payload = os.urandom(10 * MB)
        iid = hub.start_new(big, client_input=payload)
        status = hub.wait_for_completion(iid, timeout=120)
        assert status.output == 10 * MB + 1
        assert hub.get_status(iid).input_ == payload
        history = hub.get_history(iid)
        assert next(e.result for e in history if e.event_type == "TaskCompleted") == payload[::-1] + b"!"
