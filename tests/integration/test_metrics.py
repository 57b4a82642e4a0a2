"""Issue 15, the metrics: a workload (hello sequences, a fan-out, a failing activity, slow
orchestrations that make a queue, a contended pair of locked transfers) runs while the test
reads Ray's Prometheus endpoint, and every ``durable_`` metric is there and moves.

The module starts its own Ray (the shared one has no metrics export port and reports every
10 s): with a free ``_metrics_export_port`` and ``RAY_metrics_report_interval_ms`` (read by
every Ray process from its environment, so set before ``ray.init``) at 1 s, Ray's floor. It
shuts that Ray down at the end, so the next module starts the usual one."""

from __future__ import annotations

import os
import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from entities import EntityId, entity
from orchestrations import OrchestrationContext, activity, orchestrator
from runtime import OrchestrationRuntimeStatus, TaskHub

from ..conftest import ALWAYS_REPLAY
from ..helpers import free_port, wait_until

try:
    import ray.dashboard.optional_deps  # noqa: F401  (what Ray checks to run its full agent)

    FULL_AGENT = True
except ImportError:
    FULL_AGENT = False

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not FULL_AGENT, reason="needs ray[default] (the metrics extra); `make metrics-test` runs it"),
]

HUB = "metrics-hub"
#: how often Ray's processes send their metrics to the agent that serves the endpoint (1 s is
#: Ray's floor; its default, 10 s, would make the test wait)
REPORT_ENV, REPORT_MS = "RAY_metrics_report_interval_ms", "1000"
#: how long a metric may take to reach the endpoint: Ray reports every second (REPORT_MS), and
#: instances by status are counted every 5 s
SEEN_WITHIN = 60.0

Sample = dict[tuple[str, frozenset[tuple[str, str]]], float]


@activity(name="metrics_hello")
def say_hello(name: str) -> str:
    return f"Hello {name}!"


@activity(name="metrics_fails")
def fails(_: Any) -> None:
    raise RuntimeError("this activity always fails")


@orchestrator(name="metrics_sequence")
def hello_sequence(ctx: OrchestrationContext):
    outputs = []
    for city in ("Tokyo", "Seattle", "London"):
        outputs.append((yield ctx.call_activity(say_hello, city)))
    return outputs


@orchestrator(name="metrics_fan_out")
def fan_out(ctx: OrchestrationContext):
    return len((yield ctx.task_all([ctx.call_activity(say_hello, str(i)) for i in range(ctx.get_input())])))


@orchestrator(name="metrics_failing")
def failing(ctx: OrchestrationContext):
    try:
        yield ctx.call_activity(fails, None)
    except Exception:
        return "caught"
    return "not failed"


def _hold_the_turn(seconds: float) -> None:
    threading.Event().wait(seconds)


@orchestrator(name="metrics_slow")
def slow(ctx: OrchestrationContext):
    """Holds its shard's turn for a moment (orchestrator code runs in the turn; deliberately,
    where a real orchestrator must not block): starts sent together queue behind it, so the
    mailbox has a depth a read of the endpoint can see."""
    _hold_the_turn(ctx.get_input())
    return "slept"


@entity(name="MetricsAccount")
class Account:
    def __init__(self) -> None:
        self.balance = 100

    def add(self, amount: int) -> int:
        self.balance += amount
        return self.balance


@orchestrator(name="metrics_transfer")
def transfer(ctx: OrchestrationContext):
    """Moves 10 between the two accounts inside a critical section; with ``hold``, waits for
    the event ``go`` while it holds the locks, so a second transfer queues behind it."""
    keys, hold = ctx.get_input()
    a, b = (EntityId("MetricsAccount", k) for k in keys)
    with (yield ctx.lock_entities([a, b])):
        if hold:
            yield ctx.wait_for_external_event("go")
        yield ctx.call_entity(a, "add", -10)
        yield ctx.call_entity(b, "add", 10)
    return "moved"


# -- reading the endpoint ------------------------------------------------------------------------------

_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> Sample:
    """The samples of a Prometheus text exposition: (name, labels) -> value."""
    out: Sample = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if m is None or line.startswith("#"):
            continue
        labels = frozenset(_LABEL.findall(m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def total(sample: Sample, metric: str, /, **labels: str) -> float:
    """The sum of ``metric``'s series of this module's hub whose labels include ``labels``."""
    want = {("hub", HUB), *labels.items()}
    return sum(v for (n, ls), v in sample.items() if n == metric and want <= ls)


def series(sample: Sample, name: str) -> list[dict[str, str]]:
    """The label sets of ``name``'s series of this module's hub."""
    return [dict(ls) for (n, ls) in sample if n == name and ("hub", HUB) in ls]


class Scraper:
    """Reads the endpoint every quarter second in a thread while the workload runs; ``max_of``
    gives the largest value a series took in any of those reads."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def read(self) -> Sample:
        with urllib.request.urlopen(self.url, timeout=10) as resp:
            return parse(resp.read().decode())

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.read())
            self._stop.wait(0.25)

    def __enter__(self) -> Scraper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def max_of(self, metric: str, /, **labels: str) -> float:
        return max((total(s, metric, **labels) for s in self.samples), default=0.0)


# -- fixtures -------------------------------------------------------------------------------------------


def _start_ray_exporting_metrics(tries: int = 3) -> None:
    """A local Ray exporting metrics on a free port; another port if Ray could not bind it (a
    port free when chosen can still be taken before Ray's agent binds it)."""
    import ray

    for attempt in range(tries):
        try:
            ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING",
                     log_to_driver=False, _metrics_export_port=free_port())
            return
        except Exception:
            ray.shutdown()
            if attempt == tries - 1:
                raise


@pytest.fixture(scope="module")
def metrics_url() -> Iterator[str]:
    """A Ray of this module's own, exporting metrics every second on a free port; the URL of
    its Prometheus endpoint. The shared Ray (if a module before started one) is shut down
    first and this one at the end: the next module starts the usual one."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    with pytest.MonkeyPatch.context() as env:
        env.setenv(REPORT_ENV, REPORT_MS)  # Ray's processes inherit it
        env.setenv("RAY_AUTH_MODE", os.environ.get("RAY_AUTH_MODE", "disabled"))
        try:
            _start_ray_exporting_metrics()
            node = ray.nodes()[0]
            yield f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
        finally:
            ray.shutdown()


@pytest.fixture(scope="module")
def metrics_hub(metrics_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TaskHub]:
    data_dir: Path = tmp_path_factory.mktemp("durable")
    with TaskHub(HUB, data_dir=data_dir, num_shards=2, always_replay=ALWAYS_REPLAY) as hub:
        yield hub


def _completed(hub: TaskHub, iid: str) -> Any:
    status = hub.wait_for_completion(iid, timeout=120)
    assert status.runtime_status is OrchestrationRuntimeStatus.Completed, status
    return status.output


def _run_workload(hub: TaskHub) -> None:
    """Hello sequences, a fan-out, a failing activity, slow starts sent together, and two
    transfers on one pair of accounts, the second asking while the first holds the locks."""
    for i in range(5):
        assert _completed(hub, hub.start_new(hello_sequence, instance_id=f"hello-{i}"))[0] == "Hello Tokyo!"
    assert _completed(hub, hub.start_new(fan_out, instance_id="fan-out", client_input=100)) == 100
    assert _completed(hub, hub.start_new(failing, instance_id="failing")) == "caught"
    for iid in hub.start_new_batch(slow, [0.25] * 12):
        assert _completed(hub, iid) == "slept"
    keys = ["a", "b"]
    holder = hub.start_new(transfer, instance_id="transfer-holder", client_input=(keys, True))
    wait_until(lambda: _waits_for_go(hub, holder))
    waiter = hub.start_new(transfer, instance_id="transfer-waiter", client_input=(keys, False))
    wait_until(lambda: _lock_queued(hub))
    hub.raise_event(holder, "go")
    assert _completed(hub, holder) == _completed(hub, waiter) == "moved"


def _waits_for_go(hub: TaskHub, iid: str) -> bool:
    """The holder has its locks (its grant is in its history)."""
    return any(e.event_type == "EntityLockGranted" for e in hub.get_history(iid) or [])


def _lock_queued(hub: TaskHub) -> bool:
    """A lock request waits in an account's queue."""
    return any(e.queue_length for e in hub.list_entities("MetricsAccount", include_deleted=True))


# -- the test -----------------------------------------------------------------------------------------


#: every metric, as exported (Ray prefixes ``ray_``; a counter is ``_total``, a histogram
#: ``_count``/``_sum``/``_bucket``), with what must grow between the read before the workload
#: and one after it (labels the grown series must have)
COUNTERS: dict[str, dict[str, str]] = {
    "ray_durable_turns_total": {},
    "ray_durable_turn_duration_ms_count": {},
    "ray_durable_commit_duration_ms_count": {},
    "ray_durable_messages_total": {"kind": "TaskCompleted"},
    "ray_durable_activity_latency_ms_count": {"name": "metrics_hello"},
    "ray_durable_activity_results_total": {"name": "metrics_hello"},
    "ray_durable_activity_failures_total": {"name": "metrics_fails"},
    "ray_durable_lock_wait_ms_count": {},
    "ray_durable_lock_waits_total": {},
}


def _missing(before: Sample, after: Sample) -> list[str]:
    """The counters that did not grow from ``before`` to ``after``, and Completed instances
    not counted yet."""
    missing = [n for n, labels in COUNTERS.items() if total(after, n, **labels) <= total(before, n, **labels)]
    if total(after, "ray_durable_instances", status="Completed") <= 0:
        missing.append("ray_durable_instances{status=Completed}")
    return missing


def _when_moved(before: Sample, after: Sample) -> Sample | None:
    return None if _missing(before, after) else after


def test_every_metric_appears_and_moves_while_a_workload_runs(metrics_hub: TaskHub, metrics_url: str) -> None:
    with Scraper(metrics_url) as scraper:
        before = scraper.read()
        _run_workload(metrics_hub)
        try:
            after = wait_until(lambda: _when_moved(before, scraper.read()), timeout=SEEN_WITHIN, interval=0.5)
        except AssertionError:
            last = scraper.read()
            names = sorted({n for (n, _) in last if "durable" in n})
            raise AssertionError(f"not moved: {_missing(before, last)}; exported: {names}") from None
    # every series carries the hub and its shard
    for name in (*COUNTERS, "ray_durable_instances", "ray_durable_mailbox_depth"):
        assert series(after, name), name
        assert all(labels.get("shard") in {"0", "1"} for labels in series(after, name)), name
    # the 12 slow starts sent together queued behind each other's turn: a read saw the queue
    assert scraper.max_of("ray_durable_mailbox_depth") >= 2
    # the workload's 5 + 1 + 1 + 12 + 2 instances all completed; the count (every 5 s) shows them
    wait_until(lambda: total(scraper.read(), "ray_durable_instances", status="Completed") >= 21,
               timeout=SEEN_WITHIN, interval=0.5)
    # and keeps showing them while the hub is idle: Ray forgets a gauge a process stops setting
    # after two report intervals, so the hosts set theirs again every second
    idle_since = time.monotonic()
    later = wait_until(lambda: time.monotonic() - idle_since > 4 * int(REPORT_MS) / 1000 and scraper.read())
    assert total(later, "ray_durable_instances", status="Completed") >= 21
    assert series(later, "ray_durable_mailbox_depth")
    assert total(after, "ray_durable_activity_failures_total", name="metrics_hello") == 0
    assert total(after, "ray_durable_activity_results_total", name="metrics_hello") >= 5 * 3 + 100
