"""The slow-episode watchdog (runtime._watchdog): a blocked orchestrator is named, with its line.

Temporal's deadlock detector reports workflow code that does not yield for a second; here the
watchdog reads the stuck thread's stack. A real thread and a real blocking call, no Ray.
"""

from __future__ import annotations

import threading

import pytest

from runtime._watchdog import EpisodeWatch

from .helpers import wait_until


def blocking_orchestrator(ctx):
    ctx.wait(5)  # stands for time.sleep: the line the warning must name
    yield None


def test_an_episode_over_the_bound_is_reported_with_the_orchestrator_and_its_line():
    watch = EpisodeWatch(0.2)
    release = threading.Event()

    class Ctx:
        def wait(self, seconds):
            release.wait(seconds)

    def shard_thread():
        watch.begin("inst-1", "blocking_orchestrator", blocking_orchestrator.__code__)
        try:
            next(blocking_orchestrator(Ctx()))
        finally:
            watch.end()

    worker = threading.Thread(target=shard_thread)
    worker.start()
    try:
        message = wait_until(lambda: watch.last_warning, timeout=10)
    finally:
        release.set()
        worker.join()
    assert "'blocking_orchestrator'" in message and "'inst-1'" in message
    line = blocking_orchestrator.__code__.co_firstlineno + 1
    assert f"test_watchdog.py:{line}" in message
    assert "activity" in message and "create_timer" in message
    assert watch.slow_episodes == 1  # reported once per episode


def test_a_quick_episode_is_not_reported():
    watch = EpisodeWatch(5.0)
    watch.begin("i", "quick", None)
    assert watch.check() is None
    watch.end()
    assert watch.check() is None and watch.slow_episodes == 0


@pytest.mark.parametrize("bad", [0, -1, float("nan")])
def test_the_bound_must_be_positive(bad):
    with pytest.raises(ValueError, match="positive"):
        EpisodeWatch(bad)
