"""Several drivers on one Ray cluster: one starts work on a detached hub and exits, another
attaches with ``TaskHub.connect`` and sees it through.

The cluster is this module's own: ``ray start --head --block`` with a unique ``--temp-dir``
(a process group of its own). ``ray stop`` would kill every Ray on the machine, including other
test runs, so the module stops only its own: SIGTERM to that ``ray start``, which takes down
what it started, then SIGKILL for anything still naming the temp dir.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..conftest import ALWAYS_REPLAY
from ..helpers import free_port, wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(ALWAYS_REPLAY, reason="drivers attaching to one hub: the normal run covers them"),
]
ROOT = Path(__file__).resolve().parents[2]
NAMES = ["Tokyo", "Seattle", "London"]

PREAMBLE = """
import json, sys
import ray
ray.init(address={address!r}, logging_level="WARNING", log_to_driver=False)
from runtime import TaskHub
"""

#: driver A: opens the detached hub, starts an instance that waits for an event, and exits
STARTER = """
from tests.integration import _driver_jobs
hub = TaskHub({hub!r}, data_dir={data_dir!r}, num_shards=2, detached=True, always_replay={always_replay!r})
iid = hub.start_new("dj_greetings", client_input={names!r})
print("RESULT", json.dumps([iid, hub.get_status(iid).runtime_status.value]), flush=True)
"""

#: driver B: attaches, lets the instance go on, waits for it, then shuts the hub down
FINISHER = """
{imports}
hub = TaskHub.connect({hub!r})
hub.raise_event({iid!r}, "go", "Hello")
status = hub.wait_for_completion({iid!r}, timeout=60)
hub.shutdown()
try:
    TaskHub.connect({hub!r})
    gone = False
except ValueError:
    gone = True
print("RESULT", json.dumps([status.runtime_status.value, status.output, gone]), flush=True)
"""


def processes_using(marker: str) -> list[int]:
    """Pids whose command line mentions ``marker`` (every process of a cluster names its temp dir)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):  # gone meanwhile
                if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(entry.name))
    return pids


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    """A Ray head of this module's own, separate from any other Ray; yields its address."""
    temp_dir = tempfile.mkdtemp(prefix="rdd-", dir="/tmp")  # short: Ray puts sockets in it
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(ROOT)}
    head = subprocess.Popen(
        [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", "--num-cpus=2",
         f"--port={free_port()}", "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp_dir}"],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        address_file = Path(temp_dir) / "ray_current_cluster"
        def written() -> str:  # Ray creates the file, then writes the address: wait for both
            with contextlib.suppress(OSError):
                return address_file.read_text().strip()
            return ""

        wait_until(lambda: head.poll() is not None or bool(written()), timeout=60)
        assert head.poll() is None, "ray start failed"
        yield written()
    finally:
        head.send_signal(signal.SIGTERM)  # ray start --block then stops everything it started
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait(timeout=30)
        for pid in processes_using(temp_dir):  # stragglers of this cluster only
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not processes_using(temp_dir), timeout=30)
        shutil.rmtree(temp_dir, ignore_errors=True)


def run_driver(address: str, body: str, **values: object) -> list[object]:
    """Run a driver process on the cluster at ``address``; returns what it printed after RESULT."""
    script = textwrap.dedent(PREAMBLE).format(address=address) + textwrap.dedent(body).format(**values)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def start_and_exit(address: str, hub: str, data_dir: Path) -> str:
    """Driver A: start an instance on a detached hub and exit while it waits for its event."""
    iid, status = run_driver(address, STARTER, hub=hub, data_dir=str(data_dir), names=NAMES,
                             always_replay=ALWAYS_REPLAY)
    assert status in ("Pending", "Running")
    return str(iid)


def test_a_driver_finishes_what_another_started(address, tmp_path):
    iid = start_and_exit(address, "drivers", tmp_path)
    imports = "from tests.integration import _driver_jobs"
    status, output, gone = run_driver(address, FINISHER, imports=imports, hub="drivers", iid=iid)
    assert (status, output) == ("Completed", [f"Hello {n}!" for n in NAMES])
    assert gone  # shut down: nothing left running
    files = sorted(p.name for p in (tmp_path / "drivers").glob("shard-*.sqlite"))
    assert files == ["shard-00.sqlite", "shard-01.sqlite"]  # the data stays on disk


def test_a_driver_that_registers_nothing_can_attach(address, tmp_path):
    """The attaching driver imports none of the hub's code: attaching must not wipe the
    orchestrators and activities the hub runs."""
    iid = start_and_exit(address, "drivers-watch", tmp_path)
    status, output, gone = run_driver(address, FINISHER, imports="", hub="drivers-watch", iid=iid)
    assert (status, output, gone) == ("Completed", [f"Hello {n}!" for n in NAMES], True)
