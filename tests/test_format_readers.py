"""Issue 13: what reads a hub's files keeps working when the code that wrote them is gone.

* A value whose class no longer exists is shown as such (its type, why) by ``ray-durable
  list`` / ``status`` / ``history`` / ``entity``, and every other row still shows.
* A file in the new format stays readable after the engine's modules are renamed: a
  subprocess runs the CLI from a copy of the packages in which ``orchestrations._history`` is
  ``orchestrations._events`` (and ``orchestrations._history`` cannot be imported).

The hubs here are files only (real SQLite; no Ray): the CLI reads a closed hub's files.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
import types
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from orchestrations import ExecutionStarted, OrchestratorStarted, TaskCompleted, TaskScheduled
from runtime._codec import dump_value
from runtime._codec_records import dump_event
from runtime._files import write_hub_file
from runtime._hub_file import open_hub_file
from runtime._store import FORMAT_VERSION, ShardStore
from runtime.cli import main

ROOT = Path(__file__).parent.parent
FIXTURE = ROOT / "tests" / "data" / "hub_v2"
NOW = datetime(2026, 12, 2, 7, 0, tzinfo=UTC)


def _gone_object() -> object:
    """An object of a class whose module is removed right after: its pickle names a module
    that no longer exists, like a class a user renamed."""
    module = types.ModuleType("durable_renamed_shop")
    exec("class Parcel:\n    def __init__(self):\n        self.weight = 3\n", module.__dict__)
    sys.modules[module.__name__] = module
    try:
        return module.Parcel()
    finally:
        del sys.modules[module.__name__]


@pytest.fixture
def hub_with_a_gone_class(tmp_path: Path) -> Path:
    directory = tmp_path / "shop"
    store = ShardStore(str(directory / "shard-00.sqlite"), "shop", 0, 1)
    gone = _gone_object()
    sys.modules["durable_renamed_shop"] = types.ModuleType("durable_renamed_shop")
    sys.modules["durable_renamed_shop"].Parcel = type(gone)  # type: ignore[attr-defined]
    try:
        stored_gone = dump_value(gone)
        history = [
            ExecutionStarted(NOW, "ship", "p-1", "gone-1", "e1"), OrchestratorStarted(NOW),
            TaskScheduled(NOW, 0, "weigh", "p-1"), TaskCompleted(NOW, 0, gone),
        ]
        rows = [dump_event(e) for e in history]
    finally:
        del sys.modules["durable_renamed_shop"]

    async def write() -> None:
        await store.open()
        now = time.time()
        for num, (iid, output) in enumerate([("good-1", dump_value({"ok": 1})), ("gone-1", stored_gone)], 1):
            await store.db.execute(
                "INSERT INTO instances VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (iid, "ship", "e1", "Completed", dump_value("p-1"), output, stored_gone, None, None, now + num,
                 now, num),
            )
        await store.db.executemany(
            "INSERT INTO history VALUES (?,?,?,?,?,?)",
            [(2, seq, e.event_type, now, e.name, row) for seq, (e, row) in enumerate(zip(history, rows))],
        )
        await store.db.executemany(
            "INSERT INTO entities VALUES (?,?,?,?,?,?,?)",
            [("@box@gone", "box", 1, stored_gone, None, None, now), ("@box@good", "box", 1, dump_value(5), None,
                                                                     None, now)],
        )
        await store.close()

    asyncio.run(write())
    write_hub_file(str(directory), {"name": "shop", "num_shards": 1, "format_version": FORMAT_VERSION})
    return tmp_path


def cli(data_dir: Path, hub: str, *args: str) -> Result:
    result = CliRunner().invoke(main, ["--hub", hub, "--data-dir", str(data_dir), "--address", "local", *args])
    assert result.exit_code == 0, result.output
    return result


def test_list_shows_every_row_and_the_undecodable_value_as_such(hub_with_a_gone_class: Path) -> None:
    found = json.loads(cli(hub_with_a_gone_class, "shop", "--json", "list").stdout)
    assert [s["instance_id"] for s in found] == ["good-1", "gone-1"]
    assert found[0]["output"] == {"ok": 1}
    assert "undecodable durable_renamed_shop.Parcel" in found[1]["output"]
    table = cli(hub_with_a_gone_class, "shop", "list").stdout
    assert "good-1" in table and "gone-1" in table


def test_status_and_history_show_the_other_fields(hub_with_a_gone_class: Path) -> None:
    status = json.loads(cli(hub_with_a_gone_class, "shop", "--json", "status", "gone-1", "--history").stdout)
    assert status["input"] == "p-1"
    assert "undecodable durable_renamed_shop.Parcel" in status["custom_status"]
    assert [e["event_type"] for e in status["history"]] == [
        "ExecutionStarted", "OrchestratorStarted", "TaskScheduled", "TaskCompleted",
    ]
    assert "undecodable durable_renamed_shop.Parcel" in status["history"][3]["result"]
    table = cli(hub_with_a_gone_class, "shop", "history", "gone-1").stdout
    assert "TaskScheduled" in table and "weigh" in table and "undecodable durable_renamed_shop.Parcel" in table


def test_entities_show_every_state(hub_with_a_gone_class: Path) -> None:
    found = json.loads(cli(hub_with_a_gone_class, "shop", "--json", "entities").stdout)
    states = {e["entity_id"]: e["state"] for e in found}
    assert states["@box@good"] == 5
    assert "undecodable durable_renamed_shop.Parcel" in states["@box@gone"]


def _migrated_fixture(tmp_path: Path) -> Path:
    """The checked-in version-2 hub, migrated to the new format (by its shard stores; no Ray)."""
    skip = shutil.ignore_patterns("*-shm", "*-wal", "*.lock")
    directory = Path(shutil.copytree(FIXTURE, tmp_path / "hub_v2", ignore=skip))
    record = open_hub_file(str(directory), "hub_v2", 2)

    async def migrate() -> None:
        for shard in (0, 1):
            store = ShardStore(str(directory / f"shard-{shard:02d}.sqlite"), "hub_v2", shard, 2,
                               hub_id=record.hub_id, create=False)
            await store.open(lock_timeout=1)
            await store.close()

    asyncio.run(migrate())
    for backup in directory.glob("*.bak"):
        backup.unlink()  # only files in the new format remain
    return tmp_path


def _renamed_packages(target: Path) -> Path:
    """A copy of the packages in which ``orchestrations._history`` is renamed
    ``orchestrations._events`` (every reference to it too)."""
    for package in ("orchestrations", "entities", "runtime"):
        shutil.copytree(ROOT / package, target / package, ignore=shutil.ignore_patterns("__pycache__"))
    (target / "orchestrations" / "_history.py").rename(target / "orchestrations" / "_events.py")
    for path in target.rglob("*.py"):
        text = path.read_text()
        renamed = re.sub(r"\b_history\b", "_events", text)
        if renamed != text:
            path.write_text(renamed)
    return target


_READ_IN_RENAMED = """
import importlib.util, json, sys
# only the renamed copy: not the checkout an editable install maps the packages' modules to
sys.meta_path = [f for f in sys.meta_path if "Editable" not in getattr(f, "__name__", type(f).__name__)]
from click.testing import CliRunner
assert importlib.util.find_spec("orchestrations._history") is None, "the old module is still importable"
import orchestrations, runtime.cli
assert orchestrations.__file__.startswith(sys.argv[1]), orchestrations.__file__
assert orchestrations.TaskCompleted.__module__ == "orchestrations._events"
out = {}
for name, args in [("history", ["history", "done-1"]), ("status", ["status", "done-1"]), ("list", ["list"])]:
    result = CliRunner().invoke(runtime.cli.main, ["--hub", "hub_v2", "--data-dir", sys.argv[2], "--address", "local",
                                                   "--json", *args])
    assert result.exit_code == 0, result.output
    out[name] = json.loads(result.stdout)
print(json.dumps(out))
"""


def test_a_file_in_the_new_format_reads_after_the_engines_modules_are_renamed(tmp_path: Path) -> None:
    data_dir = _migrated_fixture(tmp_path / "data")
    src = _renamed_packages(tmp_path / "src")
    env = {**os.environ, "PYTHONPATH": str(src), "RAY_AUTH_MODE": "disabled"}
    done = subprocess.run(
        [sys.executable, "-c", _READ_IN_RENAMED, str(src), str(data_dir)], env=env, cwd=tmp_path,
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    kinds = [e["event_type"] for e in out["history"]]
    assert kinds[0] == "ExecutionStarted" and kinds[-1] == "ExecutionCompleted" and "TaskCompleted" in kinds
    assert "undecodable" not in json.dumps(out["history"])
    results = [e["result"] for e in out["history"] if e["event_type"] == "TaskCompleted"]
    assert results == ["Hello Tokyo!", "Hello Seattle!"]
    assert out["status"]["input"] == {"user": "ada"} and out["status"]["custom_status"] == {"step": 2}
    assert {s["instance_id"] for s in out["list"]} == {"done-1", "failed-1", "waiting-1"}


def test_a_shard_hosts_status_shows_a_gone_class_as_undecodable_and_the_rest() -> None:
    """What ``hub.get_status`` returns (a shard host runs ``status_from_row``, with the hub's
    code but not the class that is gone): the value is undecodable, naming why; the rest reads."""
    from runtime._codec import Undecodable
    from runtime._messages import status_from_row
    from runtime._schema import InstanceRow

    gone = _gone_object()
    sys.modules["durable_renamed_shop"] = types.ModuleType("durable_renamed_shop")
    sys.modules["durable_renamed_shop"].Parcel = type(gone)  # type: ignore[attr-defined]
    try:
        stored = dump_value(gone)
    finally:
        del sys.modules["durable_renamed_shop"]
    row = InstanceRow("gone-1", "ship", "e1", "Completed", dump_value("p-1"), stored, dump_value({"step": 3}),
                      None, None, 1.0, 2.0, 1)
    status = status_from_row(row)
    assert status.input_ == "p-1" and status.custom_status == {"step": 3}
    assert isinstance(status.output, Undecodable)
    assert status.output.type_name == "durable_renamed_shop.Parcel"
    assert "No module named 'durable_renamed_shop'" in status.output.reason
