"""Replaying a real hub's histories against changed code: from its files, from exported JSON
and from ``hub.get_history``, in process and through ``ray-durable replay`` / ``export``.

Two orchestrators ran on a real hub; "rp_ship" then changes in a step that lies after an
external event, so exactly the instances that passed the event are broken by the change: the
one still waiting for it, and every "rp_bill", replay cleanly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from orchestrations import Registry
from orchestrations.testing import Replayer
from runtime import TaskHub
from runtime.cli import main
from runtime.replay import histories_from_files, histories_from_hub, histories_from_json, load_json_file

from ..conftest import ALWAYS_REPLAY

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(ALWAYS_REPLAY, reason="the offline replayer replays by itself: the normal run covers it"),
]

HUB = "replay-shop"
BROKEN = {"ship-done-1", "ship-done-2"}  # past the event: they ran the step that changes
ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Parcel:
    """An input of a class of this module: a process that cannot import it cannot decode it."""

    weight: float


def step(what: str) -> str:
    return f"did {what}"


def ship(ctx):
    yield ctx.call_activity("rp_step", "pack")
    yield ctx.wait_for_external_event("go")
    yield ctx.call_activity("rp_step", "ship")
    return "shipped"


def ship_v2(ctx):
    yield ctx.call_activity("rp_step", "pack")
    yield ctx.wait_for_external_event("go")
    yield ctx.call_activity("rp_step_fast", "ship")  # the change
    return "shipped"


def bill(ctx):
    result = yield ctx.call_activity("rp_step", "bill")
    return result


def registry(ship_fn) -> Registry:
    found = Registry()
    found.add_activity(step, name="rp_step")
    found.add_orchestrator(ship_fn, name="rp_ship")
    found.add_orchestrator(bill, name="rp_bill")
    return found


V1, V2 = registry(ship), registry(ship_v2)

MODULE = """
from orchestrations import orchestrator


@orchestrator(name="rp_ship")
def ship(ctx):
    yield ctx.call_activity("rp_step", "pack")
    yield ctx.wait_for_external_event("go")
    yield ctx.call_activity({step!r}, "ship")
    return "shipped"


@orchestrator(name="rp_bill")
def bill(ctx):
    result = yield ctx.call_activity("rp_step", "bill")
    return result
"""


@pytest.fixture(scope="module")
def shop(ray_session, data_dir, tmp_path_factory):
    """A closed hub: two shipments past the event, one waiting for it, two bills; and what
    ``export_history`` and ``get_history`` gave while it ran."""
    with TaskHub(HUB, data_dir=data_dir, num_shards=2, registry=V1, always_replay=ALWAYS_REPLAY) as hub:
        for iid in ("ship-done-1", "ship-wait-1", "ship-done-2"):
            hub.start_new("rp_ship", instance_id=iid)
        for iid in ("bill-1", "bill-2"):
            hub.start_new("rp_bill", instance_id=iid)
        hub.start_new("rp_bill", instance_id="bill-parcel", client_input=Parcel(2.5))
        # Pending for an hour: nothing recorded yet, so nothing to replay (left out)
        hub.start_new("rp_ship", instance_id="ship-later", start_at=datetime.now(UTC) + timedelta(hours=1))
        for iid in ("ship-done-1", "ship-done-2"):
            hub.raise_event(iid, "go")
        for iid in ("ship-done-1", "ship-done-2", "bill-1", "bill-2", "bill-parcel"):
            assert hub.wait_for_completion(iid, timeout=60).output is not None
        hub.wait_for_orchestration_start("ship-wait-1", timeout=60)
        ids = ["ship-done-1", "ship-wait-1", "ship-done-2", "bill-1", "bill-2", "bill-parcel"]
        from_hub = histories_from_hub(hub, ids)
        exported = hub.export_history("ship-done-1")
    modules = tmp_path_factory.mktemp("code")
    (modules / "shop_same.py").write_text(MODULE.format(step="rp_step"))
    (modules / "shop_changed.py").write_text(MODULE.format(step="rp_step_fast"))
    return SimpleNamespace(data_dir=data_dir, ids=ids, from_hub=from_hub, exported=exported, modules=modules)


def flagged(results) -> set[str]:
    return {r.instance_id for r in results if not r.ok}


def ray_durable(cwd: Path, *args: str, tests_importable: bool = True) -> subprocess.CompletedProcess[str]:
    """The installed ``ray-durable`` script in a process of its own (a fresh registry), where
    this module (the class of one instance's input) can be imported, or not."""
    script = Path(sys.executable).parent / "ray-durable"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if tests_importable:
        env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([str(script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
                          check=False)


def test_the_replayer_flags_exactly_the_instances_a_change_breaks_on_the_hubs_files(shop):
    loaded = list(histories_from_files(HUB, shop.data_dir))
    assert sorted(iid for iid, _ in loaded) == sorted(shop.ids)
    assert flagged(Replayer(V1).replay(loaded)) == set()
    results = Replayer(V2).replay(loaded)
    assert flagged(results) == BROKEN
    assert all("'rp_step_fast'" in r.message for r in results if not r.ok)


def test_histories_from_get_history_replay_alike(shop):
    assert flagged(Replayer(V1).replay(shop.from_hub)) == set()
    assert flagged(Replayer(V2).replay(shop.from_hub)) == BROKEN


def test_an_exported_history_loads_back_as_the_same_events_and_replays(shop):
    [(iid, events)] = histories_from_json(shop.exported)
    assert (iid, events) == ("ship-done-1", dict(shop.from_hub)["ship-done-1"])
    assert json.loads(shop.exported)["name"] == "rp_ship"
    assert flagged(Replayer(V2).replay([(iid, events)])) == {"ship-done-1"}


def test_the_cli_exports_from_the_files_and_replays_an_exported_file(shop, tmp_path):
    out = tmp_path / "ship-done-1.json"
    result = CliRunner().invoke(main, ["export", "ship-done-1", "--hub", HUB, "--data-dir", str(shop.data_dir),
                                       "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert load_json_file(out) == histories_from_json(shop.exported)
    assert out.stat().st_mode & 0o777 == 0o600
    changed = ray_durable(shop.modules, "replay", "--file", str(out), "--import", "shop_changed")
    assert changed.returncode == 1, changed.stdout + changed.stderr
    assert changed.stdout.startswith("ship-done-1 (rp_ship): orchestrations.NonDeterminismError")
    same = ray_durable(shop.modules, "replay", "--file", str(out), "--import", "shop_same")
    assert same.returncode == 0, same.stdout + same.stderr


def test_cli_replay_of_a_hub_exits_1_naming_what_would_fail_and_0_when_nothing_would(shop):
    args = ["replay", "--hub", HUB, "--data-dir", str(shop.data_dir)]
    changed = ray_durable(shop.modules, *args, "--import", "shop_changed")
    assert changed.returncode == 1, changed.stdout + changed.stderr
    lines = changed.stdout.splitlines()
    assert {line.split(" ", 1)[0] for line in lines[:-1]} == BROKEN
    assert lines[-1] == "2 of 6 instance(s) would fail with this code"
    same = ray_durable(shop.modules, *args, "--import", "shop_same", "--json")
    assert same.returncode == 0, same.stdout + same.stderr
    report = json.loads(same.stdout)
    assert (report["replayed"], report["failing"]) == (6, 0)
    nothing = ray_durable(shop.modules, *args)  # no code imported: nothing is registered
    assert nothing.returncode == 1 and "OrchestratorNotFound" in nothing.stdout


def test_an_instance_whose_values_cannot_be_decoded_here_is_named_and_the_others_replay(shop):
    result = ray_durable(shop.modules, "replay", "--hub", HUB, "--data-dir", str(shop.data_dir),
                         "--import", "shop_same", tests_importable=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        "bill-parcel (rp_bill): UndecodableHistory: a stored value cannot be decoded here "
        "(ModuleNotFoundError: No module named 'tests')",
        "1 of 6 instance(s) would fail with this code",
    ]


def test_cli_export_of_an_unknown_instance_is_one_line_and_exit_status_1(shop):
    result = CliRunner().invoke(main, ["--hub", HUB, "--data-dir", str(shop.data_dir), "export", "no-such"])
    assert result.exit_code == 1 and result.output.strip() == "Error: no orchestration instance with id 'no-such'"


def test_cli_replay_refuses_bad_arguments_with_exit_status_2(shop):
    def run(*args: str) -> str:
        result = CliRunner().invoke(main, ["--data-dir", str(shop.data_dir), "replay", *args])
        assert result.exit_code == 2, result.output
        return result.output

    assert "no task hub 'nope'" in run("--hub", "nope")
    assert "cannot import 'no_such_module_here'" in run("--hub", HUB, "--import", "no_such_module_here")
    assert "does not exist" in run("--file", str(shop.data_dir / "missing.json"))
