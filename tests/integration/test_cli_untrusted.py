"""Issue 11, "No one in": the read-only CLI runs no code from the files it reads.

A pickle planted in a shard file (an instance's output, a history event, an entity's state)
that would run a command when unpickled: the read commands show it by the type it names and
never run it; ``--no-decode`` shows the stored bytes. The hub here is files only (real SQLite
written through ``ShardStore``, no Ray: the CLI reads a closed hub's files), so the module
starts no Ray.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import pickle
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from orchestrations import ExecutionStarted, FailureDetails
from runtime._codec import PICKLE_KEY, dump_json, dump_value
from runtime._codec_records import dump_event, dump_failure
from runtime._files import write_hub_file
from runtime._store import FORMAT_VERSION, ShardStore
from runtime.cli import main

from ..conftest import ALWAYS_REPLAY

pytestmark = [
    pytest.mark.integration,
    # no hub runs here (the CLI reads files): a second run would repeat the first
    pytest.mark.skipif(ALWAYS_REPLAY, reason="runs no orchestration; the normal run covers it"),
]


class Planted:
    """Unpickling it runs ``touch <marker>`` (what an attacker would plant)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def planted_hub(tmp_path):
    marker = tmp_path / "ran-code"
    evil = dump_json({PICKLE_KEY: base64.b64encode(pickle.dumps(Planted(marker), protocol=5)).decode()})
    directory = tmp_path / "planted"
    store = ShardStore(str(directory / "shard-00.sqlite"), "planted", 0, 1)

    async def write() -> None:
        await store.open()
        now = time.time()
        started = ExecutionStarted(datetime.now(UTC), "job", Planted(marker), "victim", "e1")
        failure = FailureDetails("ValueError", "planted", None, None)
        await store.db.execute(
            "INSERT INTO instances VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            ("victim", "job", "e1", "Failed", dump_value({"plain": [1, 2]}), evil, evil,
             dump_failure(failure), None, now, now, 1),
        )
        await store.db.execute(
            "INSERT INTO history VALUES (?,?,?,?,?,?)",
            (1, 0, "ExecutionStarted", now, "job", dump_event(started)),
        )
        await store.db.execute(
            "INSERT INTO entities VALUES (?,?,?,?,?,?,?)", ("@box@k", "box", 1, evil, None, evil, now)
        )
        await store.close()

    asyncio.run(write())
    write_hub_file(str(directory), {"name": "planted", "num_shards": 1, "format_version": FORMAT_VERSION})
    return tmp_path, marker


def cli(data_dir: Path, *args: str) -> Result:
    result = CliRunner().invoke(main, ["--hub", "planted", "--data-dir", str(data_dir), "--address", "local", *args])
    assert result.exit_code == 0, result.output
    return result


READS = [("status", "victim"), ("status", "victim", "--history"), ("history", "victim"), ("entities",),
         ("entity", "@box@k"), ("list",)]


@pytest.mark.parametrize("command", READS)
def test_reading_a_planted_pickle_runs_no_code_and_names_what_it_would_have_built(planted_hub, command):
    data_dir, marker = planted_hub
    text = cli(data_dir, *command).stdout
    assert not marker.exists(), "the CLI ran code from the hub's files"
    if command[0] in ("status", "entity", "entities"):
        assert "undecodable posix.system" in text


def test_what_is_plain_data_or_the_products_own_records_still_reads_as_before(planted_hub):
    data_dir, marker = planted_hub
    status = json.loads(cli(data_dir, "--json", "status", "victim", "--history").stdout)
    assert status["input"] == {"plain": [1, 2]}
    assert status["failure_details"]["message"] == "planted"
    assert status["history"][0]["event_type"] == "ExecutionStarted"
    assert "undecodable posix.system" in status["history"][0]["input"]
    assert not marker.exists()


@pytest.mark.parametrize("command", READS)
def test_no_decode_shows_the_stored_bytes(planted_hub, command):
    data_dir, marker = planted_hub
    text = cli(data_dir, "--no-decode", "--json", *command).stdout
    assert not marker.exists()
    if command[0] != "list":
        assert "<json, " in text and "posix.system" not in text


def test_no_decode_is_refused_for_a_control_command(planted_hub):
    data_dir, marker = planted_hub
    result = CliRunner().invoke(
        main, ["--hub", "planted", "--data-dir", str(data_dir), "--address", "local", "--no-decode", "terminate", "x"]
    )
    assert result.exit_code == 2 and "--no-decode is for read commands" in result.output
    assert not marker.exists()
