"""The ``ray-durable`` command line against real hubs: a closed hub (read commands read its
files read-only; control commands open it for a moment) and a running detached hub (every
command goes through Ray).

The hubs run code registered in a private registry, not the default one, so a control
command only works if the CLI opens or reaches the hub with the hub's own code: a CLI that
installed its own (empty) registry would leave the instances below unable to go on.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from unittest.mock import ANY

import pytest
import ray
from click.testing import CliRunner, Result

from entities import EntityContext, EntityId
from entities._registry import EntitySpec
from orchestrations._registry import Registry
from runtime import OrchestrationRuntimeStatus as S
from runtime import TaskHub
from runtime._delivery import NAMESPACE, actor_name
from runtime.cli import main

from ..conftest import ALWAYS_REPLAY
from ..helpers import wait_until

pytestmark = [
    pytest.mark.integration,
    # the CLI is a client: what always_replay changes (the shard hosts' turns) every other
    # integration module covers; running these twice would only double ~90 s of Ray start-ups
    pytest.mark.skipif(ALWAYS_REPLAY, reason="the CLI runs once; always_replay is a shard-host mode"),
]

REGISTRY = Registry()


def say_hello(name: str) -> str:
    return f"Hello {name}!"


def call_service(path: str) -> str:
    """Fails while the service is down: until the file ``path`` exists."""
    if not Path(path).exists():
        raise ConnectionError("the service is down")
    return "the service answered"


def hello(ctx):
    first = yield ctx.call_activity("cli_say_hello", "Tokyo")
    second = yield ctx.call_activity("cli_say_hello", "Seattle")
    return [first, second]


def wait_for_go(ctx):
    ctx.set_custom_status("waiting")
    value = yield ctx.wait_for_external_event("go")
    return value


def flaky(ctx):
    result = yield ctx.call_activity("cli_call_service", ctx.get_input())
    return result


def remind(ctx):
    yield ctx.create_timer(datetime(2099, 1, 2, 3, 4, 5, tzinfo=UTC))
    return "reminded"


def counter(context: EntityContext):
    value = context.get_state(lambda: 0)
    if context.operation_name == "add":
        value += context.get_input()
    context.set_state(value)


REGISTRY.add_activity(say_hello, name="cli_say_hello")
REGISTRY.add_activity(call_service, name="cli_call_service")
REGISTRY.add_orchestrator(hello, name="cli_hello")
REGISTRY.add_orchestrator(wait_for_go, name="cli_wait")
REGISTRY.add_orchestrator(flaky, name="cli_flaky")
REGISTRY.add_orchestrator(remind, name="cli_remind")
REGISTRY.add_entity("cli_Counter", EntitySpec("cli_Counter", counter, False))


def cli(hub: str, data_dir: Path, *args: str, code: int = 0) -> Result:
    """Run ``ray-durable --hub hub --data-dir data_dir args...`` in this process."""
    result = CliRunner().invoke(main, ["--hub", hub, "--data-dir", str(data_dir), *args])
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit | None), result.exception  # never a traceback
    return result


def cli_json(hub: str, data_dir: Path, *args: str) -> object:
    return json.loads(cli(hub, data_dir, "--json", *args).stdout)


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed ``ray-durable`` script in a process of its own."""
    script = Path(sys.executable).parent / "ray-durable"
    return subprocess.run([str(script), *args], capture_output=True, text=True, timeout=120, check=False)


def open_hub(name: str, data_dir: Path, detached: bool = False) -> TaskHub:
    return TaskHub(name, data_dir=data_dir, num_shards=2, registry=REGISTRY, always_replay=ALWAYS_REPLAY,
                   detached=detached)


def fingerprint(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.glob("shard-*.sqlite"))}


@pytest.fixture(scope="module")
def closed(ray_session, data_dir):
    """A hub that ran some work and was closed: two completed, one waiting, two entities."""
    with open_hub("cli-closed", data_dir) as hub:
        for iid in ("hello-1", "hello-2"):
            hub.start_new("cli_hello", instance_id=iid)
            hub.wait_for_completion(iid, timeout=60)
        hub.start_new("cli_wait", instance_id="wait-1")
        hub.signal_entity(EntityId("cli_Counter", "c1"), "add", 5)
        hub.signal_entity(EntityId("cli_Counter", "c2"), "add", 7)
        assert hub.get_status("wait-1").custom_status == "waiting"
    return SimpleNamespace(name="cli-closed", data_dir=data_dir)


@pytest.fixture(scope="module")
def to_control(ray_session, data_dir, tmp_path_factory):
    """A closed hub with instances for the control commands to act on."""
    services = tmp_path_factory.mktemp("services")
    with open_hub("cli-control", data_dir) as hub:
        hub.start_new("cli_flaky", instance_id="old-failure", client_input=str(services / "never-up"))
        hub.start_new("cli_hello", instance_id="done-1")
        for iid in ("old-failure", "done-1"):
            hub.wait_for_completion(iid, timeout=60)
        cutoff = datetime.now(UTC)
        for iid in ("wait-a", "wait-b", "wait-c", "wait-d", "wait-e"):
            hub.start_new("cli_wait", instance_id=iid)
        hub.start_new("cli_flaky", instance_id="flaky-1", client_input=str(services / "flaky-1"))
        assert hub.wait_for_completion("flaky-1", timeout=60).runtime_status is S.Failed
    return SimpleNamespace(name="cli-control", data_dir=data_dir, cutoff=cutoff, services=services)


@pytest.fixture(scope="module")
def live(ray_session, data_dir, tmp_path_factory):
    """A detached hub running in this module's Ray; shut down (and checked gone) at the end."""
    hub = open_hub("cli-live", data_dir, detached=True)
    try:
        yield SimpleNamespace(name="cli-live", hub=hub, services=tmp_path_factory.mktemp("live-services"),
                              nowhere=data_dir / "no-hub-here")
    finally:
        hub.shutdown()
        with pytest.raises(ValueError):
            ray.get_actor(actor_name("cli-live", 0), namespace=NAMESPACE)


# -- a closed hub: read commands read its files ------------------------------------------------------


def test_list_reads_a_closed_hubs_files_and_filters(closed):
    before = fingerprint(closed.data_dir / closed.name)
    rows = cli_json(closed.name, closed.data_dir, "list")
    assert [(r["instance_id"], r["runtime_status"]) for r in rows] == [
        ("hello-1", "Completed"), ("hello-2", "Completed"), ("wait-1", "Running"),
    ]
    completed = cli_json(closed.name, closed.data_dir, "list", "--status", "Completed")
    assert [r["instance_id"] for r in completed] == ["hello-1", "hello-2"]
    both = cli_json(closed.name, closed.data_dir, "list", "--status", "running", "--status", "Completed")
    assert len(both) == 3
    assert [r["instance_id"] for r in cli_json(closed.name, closed.data_dir, "list", "--name-prefix", "cli_w")] == [
        "wait-1"
    ]
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert cli_json(closed.name, closed.data_dir, "list", "--created-from", later) == []
    assert len(cli_json(closed.name, closed.data_dir, "list", "--created-to", later)) == 3
    first = cli(closed.name, closed.data_dir, "list", "--limit", "1")
    assert "hello-1" in first.stdout and "hello-2" not in first.stdout
    assert "--limit 0" in first.stderr
    table = cli(closed.name, closed.data_dir, "list").stdout
    assert all(word in table for word in ("Instance ID", "hello-1", "wait-1", "cli_wait", "Running"))
    assert fingerprint(closed.data_dir / closed.name) == before  # read-only


def test_status_and_history_from_a_closed_hubs_files(closed):
    done = cli_json(closed.name, closed.data_dir, "status", "hello-1")
    assert (done["runtime_status"], done["output"]) == ("Completed", ["Hello Tokyo!", "Hello Seattle!"])
    waiting = cli_json(closed.name, closed.data_dir, "status", "wait-1")
    assert (waiting["runtime_status"], waiting["custom_status"]) == ("Running", "waiting")
    text = cli(closed.name, closed.data_dir, "history", "hello-1").stdout
    for column in ("Event type", "Timestamp", "Name", "Input", "Result"):
        assert column in text
    for row in ("ExecutionStarted", "TaskScheduled", "TaskCompleted", "ExecutionCompleted", '"Hello Tokyo!"'):
        assert row in text
    events = cli_json(closed.name, closed.data_dir, "history", "hello-1")
    assert events[0]["event_type"] == "ExecutionStarted" and events[-1]["event_type"] == "ExecutionCompleted"
    assert [e["result"] for e in events if e["event_type"] == "TaskCompleted"] == ["Hello Tokyo!", "Hello Seattle!"]
    both = cli(closed.name, closed.data_dir, "status", "hello-1", "--history").stdout
    assert "Completed" in both and "TaskCompleted" in both
    with_history = cli_json(closed.name, closed.data_dir, "status", "wait-1", "--history")
    assert with_history["history"][0]["event_type"] == "ExecutionStarted"


def test_entities_from_a_closed_hubs_files(closed):
    found = cli_json(closed.name, closed.data_dir, "entities")
    assert [(e["entity_id"], e["state"], e["locked_by"]) for e in found] == [
        ("@cli_counter@c1", 5, None), ("@cli_counter@c2", 7, None),  # names are case-insensitive
    ]
    assert cli_json(closed.name, closed.data_dir, "entities", "--name", "other") == []
    assert "@cli_counter@c2" in cli(closed.name, closed.data_dir, "entities", "--name", "cli_Counter").stdout
    assert cli_json(closed.name, closed.data_dir, "entity", "@cli_Counter@c1") == {
        "entity_id": "@cli_counter@c1", "exists": True, "state": 5,
    }
    assert "7" in cli(closed.name, closed.data_dir, "entity", "@cli_Counter@c2").stdout


def test_what_does_not_exist_is_one_line_and_exit_status_1(closed, data_dir):
    def error(*args: str, hub: str = closed.name) -> str:
        result = cli(hub, data_dir, *args, code=1)
        assert "Traceback" not in result.output
        return result.stderr.strip()

    assert error("status", "no-such") == "Error: no orchestration instance with id 'no-such'"
    assert error("history", "no-such") == "Error: no orchestration instance with id 'no-such'"
    assert "must not contain '/'" in error("status", "a/b")
    assert error("entity", "@cli_Counter@nobody") == "Error: no entity @cli_counter@nobody (or it has no state)"
    assert "not an entity id" in error("entity", "cli_Counter")
    assert error("list", hub="nope") == f"Error: no task hub 'nope' in {data_dir}"
    assert error("terminate", "x", hub="nope") == f"Error: no task hub 'nope' in {data_dir}"
    assert not (data_dir / "nope").exists()  # a control command never creates a hub
    assert error("terminate", "no-such") == "Error: no orchestration instance with id 'no-such'"
    usage = cli(closed.name, data_dir, "purge", code=2)
    assert "give either an INSTANCE_ID or filters" in usage.stderr


# -- a closed hub: control commands open it for a moment ---------------------------------------------


def test_raise_on_a_closed_hub_completes_the_waiting_instance(to_control):
    hub, data_dir = to_control.name, to_control.data_dir
    out = cli(hub, data_dir, "raise", "wait-a", "go", '{"n": 1}').stdout
    assert out.strip() == 'raised \'go\' on wait-a: Completed, output {"n": 1}'
    assert cli_json(hub, data_dir, "status", "wait-a")["output"] == {"n": 1}
    cli(hub, data_dir, "raise", "wait-b", "go", "plain words")
    assert cli_json(hub, data_dir, "status", "wait-b")["output"] == "plain words"


def test_terminate_suspend_resume_on_a_closed_hub(to_control):
    hub, data_dir = to_control.name, to_control.data_dir
    assert "Terminated" in cli(hub, data_dir, "terminate", "wait-c", "--reason", "no longer needed").stdout
    terminated = cli_json(hub, data_dir, "status", "wait-c")
    assert (terminated["runtime_status"], terminated["output"]) == ("Terminated", "no longer needed")
    assert "Suspended" in cli(hub, data_dir, "suspend", "wait-d").stdout
    cli(hub, data_dir, "raise", "wait-d", "go", "7")  # held, durably, while suspended
    assert cli_json(hub, data_dir, "status", "wait-d")["runtime_status"] == "Suspended"
    assert "Completed, output 7" in cli(hub, data_dir, "resume", "wait-d", "--wait", "60").stdout
    assert cli_json(hub, data_dir, "status", "wait-d")["output"] == 7
    history = cli_json(hub, data_dir, "history", "wait-d")
    assert {"ExecutionSuspended", "ExecutionResumed", "EventRaised"} <= {e["event_type"] for e in history}


def test_rewind_on_a_closed_hub_reruns_the_failed_activity(to_control):
    hub, data_dir = to_control.name, to_control.data_dir
    assert cli_json(hub, data_dir, "status", "flaky-1")["runtime_status"] == "Failed"
    assert "ConnectionError: the service is down" in cli(hub, data_dir, "status", "flaky-1").stdout
    (to_control.services / "flaky-1").touch()  # the service is back
    out = cli(hub, data_dir, "rewind", "flaky-1", "--wait", "60").stdout
    assert out.strip() == 'rewound flaky-1: Completed, output "the service answered"'
    refused = cli(hub, data_dir, "rewind", "flaky-1", code=1)
    assert "only a Failed instance can be rewound" in refused.stderr


def test_purge_on_a_closed_hub(to_control):
    hub, data_dir = to_control.name, to_control.data_dir
    assert cli(hub, data_dir, "purge", "done-1").stdout.strip() == "purged done-1"
    cli(hub, data_dir, "status", "done-1", code=1)
    refused = cli(hub, data_dir, "purge", "wait-e", code=1)
    assert "wait-e is Running: only Completed, Failed or Terminated instances are purged" in refused.stderr
    purged = cli(hub, data_dir, "purge", "--status", "Failed", "--created-to", to_control.cutoff.isoformat())
    assert purged.stdout.strip() == "purged 1 instance(s)"
    cli(hub, data_dir, "status", "old-failure", code=1)
    assert cli_json(hub, data_dir, "status", "wait-e")["runtime_status"] == "Running"


# -- a running detached hub: every command goes through Ray ------------------------------------------


def test_read_commands_reach_a_running_detached_hub(live):
    hub = live.hub
    hub.start_new("cli_hello", instance_id="live-hello")
    hub.wait_for_completion("live-hello", timeout=60)
    hub.start_new("cli_wait", instance_id="live-wait")
    hub.signal_entity(EntityId("cli_Counter", "live"), "add", 3)
    # the CLI looks in a directory with no hub in it: it can only have answered through Ray
    name, nowhere = live.name, live.nowhere
    # (other tests of this module use the live hub too, in any order: look at these ids only)
    mine = {"live-hello", "live-wait"}
    completed = [r["instance_id"] for r in cli_json(name, nowhere, "list", "--status", "Completed")]
    assert [i for i in completed if i in mine] == ["live-hello"]
    assert {r["instance_id"] for r in cli_json(name, nowhere, "list")} >= mine
    assert cli_json(name, nowhere, "status", "live-wait")["custom_status"] == "waiting"
    text = cli(name, nowhere, "history", "live-hello").stdout
    assert "ExecutionStarted" in text and "TaskCompleted" in text and '"Hello Seattle!"' in text
    assert "TaskCompleted" in cli(name, nowhere, "status", "live-hello", "--history").stdout
    assert ("@cli_counter@live", 3) in [(e["entity_id"], e["state"]) for e in cli_json(name, nowhere, "entities")]
    assert cli_json(name, nowhere, "entity", "@cli_Counter@live")["state"] == 3
    assert "no orchestration instance with id 'no-such'" in cli(name, nowhere, "status", "no-such", code=1).stderr
    assert not nowhere.exists()


def test_control_commands_reach_a_running_detached_hub(live):
    hub, name, nowhere = live.hub, live.name, live.nowhere
    for iid in ("live-a", "live-b", "live-c"):
        hub.start_new("cli_wait", instance_id=iid)
    hub.start_new("cli_flaky", instance_id="live-flaky", client_input=str(live.services / "flaky"))
    assert hub.wait_for_completion("live-flaky", timeout=60).runtime_status is S.Failed

    assert "Completed" in cli(name, nowhere, "raise", "live-a", "go", '[1, "two"]').stdout
    assert hub.get_status("live-a").output == [1, "two"]  # the hub still runs its own code
    cli(name, nowhere, "terminate", "live-b", "--reason", "stop")
    assert (hub.get_status("live-b").runtime_status, hub.get_status("live-b").output) == (S.Terminated, "stop")
    cli(name, nowhere, "suspend", "live-c")
    assert hub.get_status("live-c").runtime_status is S.Suspended
    assert "Running" in cli(name, nowhere, "resume", "live-c").stdout
    cli(name, nowhere, "raise", "live-c", "go", "3")
    assert hub.wait_for_completion("live-c", timeout=60).output == 3
    (live.services / "flaky").touch()  # the service is back
    assert "Completed" in cli(name, nowhere, "rewind", "live-flaky", "--wait", "60").stdout
    assert hub.get_status("live-flaky").output == "the service answered"
    assert cli(name, nowhere, "purge", "live-a").stdout.strip() == "purged live-a"
    assert hub.get_status("live-a") is None
    assert cli(name, nowhere, "purge", "--status", "Terminated").stdout.strip() == "purged 1 instance(s)"
    assert hub.get_status("live-b") is None
    assert "no orchestration instance" in cli(name, nowhere, "terminate", "no-such", code=1).stderr


def test_the_installed_script_reaches_a_running_hub_at_an_address(live):
    """A separate process: finds the cluster by ``--address`` (a TCP probe first), joins it as a
    driver, talks to the hub and leaves; an address where nothing answers is one line."""
    live.hub.start_new("cli_hello", instance_id="from-afar")
    live.hub.wait_for_completion("from-afar", timeout=60)
    address = ray.get_runtime_context().gcs_address
    args = ["--address", address, "--hub", live.name, "--data-dir", str(live.nowhere), "--json", "status", "from-afar"]
    done = run_script(*args)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["output"] == ["Hello Tokyo!", "Hello Seattle!"]
    refused = run_script("--address", "127.0.0.1:9", "--hub", live.name, "list")
    assert (refused.returncode, refused.stderr.strip()) == (1, "Error: no Ray cluster answers at 127.0.0.1:9")


def test_after_a_detached_hub_shuts_down_the_cli_reads_its_files(ray_session, data_dir):
    hub = open_hub("cli-brief", data_dir, detached=True)
    try:
        hub.start_new("cli_hello", instance_id="brief")
        hub.wait_for_completion("brief", timeout=60)
        assert cli_json("cli-brief", data_dir / "elsewhere", "status", "brief")["runtime_status"] == "Completed"
    finally:
        hub.shutdown()
    with pytest.raises(ValueError):
        ray.get_actor(actor_name("cli-brief", 0), namespace=NAMESPACE)
    assert "no task hub 'cli-brief'" in cli("cli-brief", data_dir / "elsewhere", "status", "brief", code=1).stderr
    assert cli_json("cli-brief", data_dir, "status", "brief")["output"] == ["Hello Tokyo!", "Hello Seattle!"]


def test_the_installed_script_shows_its_help():
    done = run_script("--help")
    assert done.returncode == 0, done.stderr
    for command in ("list", "status", "history", "entities", "entity", "raise", "terminate", "suspend", "resume",
                    "purge", "rewind", "--hub", "--data-dir"):
        assert command in done.stdout


# -- papercuts: --version, hubs, --json after the command, relative times, what an instance awaits ----


def test_version_and_the_hubs_under_a_data_dir(closed, tmp_path):
    assert CliRunner().invoke(main, ["--version"]).output.startswith("ray-durable, version ")
    listed = cli_json(closed.name, closed.data_dir, "hubs")
    assert {"hub": "cli-closed", "num_shards": 2} in [{k: h[k] for k in ("hub", "num_shards")} for h in listed]
    assert "cli-closed" in cli(closed.name, closed.data_dir, "hubs").stdout
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "hub.json").write_text("{not json")
    [row] = cli_json("x", tmp_path, "hubs")
    assert row["hub"] == "broken" and row["format_version"].startswith("unreadable")
    assert "no task hub under" in cli("x", tmp_path / "empty", "hubs").stderr


def test_json_goes_after_the_command_too_and_times_may_be_relative(closed):
    after = json.loads(cli(closed.name, closed.data_dir, "status", "wait-1", "--json").stdout)
    assert after["instance_id"] == "wait-1" and after["custom_status"] == "waiting"
    rows = json.loads(cli(closed.name, closed.data_dir, "list", "--created-from", "1h", "--json").stdout)
    assert [r["instance_id"] for r in rows] == ["hello-1", "hello-2", "wait-1"]
    assert cli_json(closed.name, closed.data_dir, "list", "--created-to", "1h") == []
    bad = cli(closed.name, closed.data_dir, "list", "--created-from", "yesterday", code=2)
    assert "'yesterday'" in bad.output and "1h" in bad.output


def test_status_and_history_say_when_a_timer_fires_and_what_an_instance_waits_for(ray_session, data_dir):
    with open_hub("cli-timers", data_dir) as hub:
        hub.start_new("cli_remind", instance_id="remind-1")
        wait_until(lambda: any(e.event_type == "TimerCreated" for e in hub.get_history("remind-1")), timeout=30)
    status = cli("cli-timers", data_dir, "status", "remind-1").stdout
    assert "Waiting for" in status and "timer #1 (fires 2099-01-02T03:04:05.000Z)" in status.replace("\n", " ")
    assert cli_json("cli-timers", data_dir, "status", "remind-1")["waiting_for"] == [
        {"kind": "timer", "what": "#1", "since": ANY, "fires_at": "2099-01-02T03:04:05.000Z"}
    ]
    history = cli("cli-timers", data_dir, "history", "remind-1").stdout
    assert "fires 2099-01-02T03:04:05.000Z" in history and "Waiting for" in history
    [timer] = [e for e in cli_json("cli-timers", data_dir, "history", "remind-1") if e["event_type"] == "TimerCreated"]
    assert timer["fire_at"] == "2099-01-02T03:04:05.000Z"
