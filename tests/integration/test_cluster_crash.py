"""A whole-cluster crash: the driver and every process of its Ray are killed mid fan-out;
reopening the hub on the same files finishes the work with the right result."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from orchestrations import activity, orchestrator
from runtime import OrchestrationRuntimeStatus as S
from runtime import TaskHub

from ..conftest import ALWAYS_REPLAY
from ..helpers import wait_until

pytestmark = [
    pytest.mark.integration,
    # its hubs (in subprocesses or about files) take no always_replay: a second run would repeat the first
    pytest.mark.skipif(ALWAYS_REPLAY, reason="passes no always_replay; the normal run covers it"),
]
ROOT = Path(__file__).resolve().parents[2]
ITEMS = 200


@activity(name="cc_slow_double")
def slow_double(x: int) -> int:
    time.sleep(0.02)  # simulated work, so the crash lands mid fan-out
    return 2 * x


@orchestrator(name="cc_fan")
def fan(ctx):
    results = yield ctx.task_all([ctx.call_activity(slow_double, i) for i in range(ctx.get_input())])
    return sum(results)


DRIVER = """
import sys, threading
sys.path.insert(0, {root!r})
import ray
ray.init(num_cpus=2, include_dashboard=False, _temp_dir={ray_dir!r}, log_to_driver=False)
from tests.integration import test_cluster_crash as defs
from runtime import TaskHub
hub = TaskHub("cluster-crash", data_dir={data_dir!r}, num_shards=2)
iid = hub.start_new(defs.fan, client_input={items})
shard = hub._shard(iid)
pause = threading.Event()  # never set
while ray.get(shard.progress.remote(iid))[0] == 0:  # until the first results are committed
    pause.wait(0.05)
print("MID-FAN-OUT", iid, ray.get(shard.progress.remote(iid)), flush=True)
pause.wait()  # until killed
"""


def processes_using(marker: str) -> list[int]:
    """Pids whose command line mentions ``marker`` (the crashed cluster's temp dir)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_driver_and_its_ray_killed_mid_fan_out(ray_session, tmp_path):
    ray_dir = tempfile.mkdtemp(prefix="rdc-", dir="/tmp")  # short: Ray puts sockets in it
    script = textwrap.dedent(DRIVER).format(root=str(ROOT), ray_dir=ray_dir, data_dir=str(tmp_path), items=ITEMS)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    driver = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    line = driver.stdout.readline()
    assert line.startswith("MID-FAN-OUT"), line
    iid = line.split()[1]
    doomed = [driver.pid, *processes_using(ray_dir)]
    assert len(doomed) > 3  # the driver, gcs, raylet, workers, shard hosts...
    for pid in doomed:
        with contextlib.suppress(ProcessLookupError):  # already gone
            os.kill(pid, signal.SIGKILL)
    driver.wait(timeout=30)
    wait_until(lambda: not processes_using(ray_dir), timeout=30)

    with TaskHub("cluster-crash", data_dir=tmp_path, num_shards=2) as hub:
        status = hub.wait_for_completion(iid, timeout=120)
        assert (status.runtime_status, status.output) == (S.Completed, 2 * sum(range(ITEMS)))
        assert [e.event_type for e in hub.get_history(iid)].count("TaskScheduled") == ITEMS
    shutil.rmtree(ray_dir, ignore_errors=True)
