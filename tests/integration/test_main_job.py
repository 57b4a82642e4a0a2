"""The README's main job and attaching from another hub object: demo, detached hubs, connect."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrations import orchestrator
from runtime import OrchestrationRuntimeStatus as S
from runtime import TaskHub

from ..conftest import ALWAYS_REPLAY

pytestmark = [
    pytest.mark.integration,
    # its hubs (in subprocesses or about files) take no always_replay: a second run would repeat the first
    pytest.mark.skipif(ALWAYS_REPLAY, reason="passes no always_replay; the normal run covers it"),
]
ROOT = Path(__file__).resolve().parents[2]


@orchestrator(name="mj_echo")
def echo(ctx):
    return ctx.get_input()


def test_demo_runs_hello_sequence_and_fan_out(tmp_path):
    """`make demo`: definitions in __main__ travel by value; the history table is printed."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(ROOT), "RAY_ADDRESS": "local"}
    done = subprocess.run(
        [sys.executable, "-m", "runtime.demo", "--data-dir", str(tmp_path), "--fan-out", "200"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "output ['Hello Tokyo!', 'Hello Seattle!', 'Hello London!']" in out
    assert "| ExecutionStarted      |" in out and "| E1_SayHello      |" in out
    assert "sum 2646700 (expected 2646700)" in out
    assert "total 2000 (expected 2000): conserved" in out
    assert (tmp_path / "demo" / "shard-00.sqlite").exists()


def test_connect_to_a_detached_hub(ray_session, tmp_path):
    owner = TaskHub("detached-hub", data_dir=tmp_path, num_shards=2, detached=True)
    try:
        iid = owner.start_new(echo, client_input="from the owner")
        owner.close()  # detached: the shard hosts keep running
        other = TaskHub.connect("detached-hub")
        status = other.wait_for_completion(iid, timeout=30)
        assert (status.runtime_status, status.output) == (S.Completed, "from the owner")
        assert other.num_shards == 2
    finally:
        owner.shutdown()
    with pytest.raises(ValueError, match="no running task hub named 'detached-hub'"):
        TaskHub.connect("detached-hub")


def test_a_hub_cannot_be_opened_twice(ray_session, tmp_path):
    with TaskHub("twice", data_dir=tmp_path, num_shards=1), pytest.raises(ValueError, match="already open"):
        TaskHub("twice", data_dir=tmp_path, num_shards=1)
