"""What every benchmark script shares: the one-JSON-line stdout contract, the common options,
opening Ray and task hubs, alternating the sides of a comparison, waiting for many instances,
percentiles, and reading the shard hosts' resident memory.

Not a benchmark itself; the scripts next to it import it (``benchmarks/`` is on ``sys.path``
when one of them runs as ``python benchmarks/<name>.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import ray

from runtime import DurableOrchestrationStatus, OrchestrationRuntimeStatus, TaskHub

NOT_FINISHED = [OrchestrationRuntimeStatus.Pending, OrchestrationRuntimeStatus.Running]


class BenchmarkError(Exception):
    """A run failed or its result did not match the baseline's."""


def log(message: str) -> None:
    """Progress and diagnostics go to stderr; stdout holds only the JSON line."""
    print(message, file=sys.stderr, flush=True)


def run_main(name: str, data_dir: str | None, benchmark: Callable[[str], dict[str, Any]]) -> int:
    """Run ``benchmark(data_dir)`` and print its result as one JSON line on stdout.

    Everything else written to fd 1 from here on (Ray's worker log forwarding, child
    processes, stray prints) goes to stderr. Without ``data_dir`` a temporary one is used and
    removed. Returns the exit code: 1 if the benchmark raised :class:`BenchmarkError`.
    """
    sys.stdout.flush()
    result_out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    temp_dir = None
    if data_dir is None:
        temp_dir = data_dir = tempfile.mkdtemp(prefix=f"ray-durable-{name}-")
    try:
        result = benchmark(data_dir)
    except BenchmarkError as exc:
        log(f"{name} benchmark failed: {exc}")
        return 1
    finally:
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)
    result_out.write(json.dumps(result) + "\n")
    result_out.flush()
    return 0


# -- options -----------------------------------------------------------------------------------


#: Shard hosts per hub of the classic rows (``--shards``'s default): one per CPU core of this
#: machine. The hub's own default is one per two cores; the user-shaped rows keep that.
DEFAULT_SHARDS = max(1, os.cpu_count() or 1)


def make_parser(doc: str | None, *, runs: int = 3, shards: int = DEFAULT_SHARDS) -> argparse.ArgumentParser:
    """An argument parser with the options every script has: --runs, --shards (default: one
    per CPU core), --data-dir, --timeout (its description is the first line of ``doc``)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0] if doc else None)
    parser.add_argument("--runs", type=int, default=runs, metavar="R", help="timed runs of each side")
    parser.add_argument("--shards", type=int, default=shards, metavar="S", help="task hub shards")
    parser.add_argument("--data-dir", default=None, help="hub data directory (default: a fresh temp dir, removed)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for one orchestration")
    return parser


def require_positive(parser: argparse.ArgumentParser, args: argparse.Namespace, *names: str) -> None:
    """Exit with a usage error unless every option in ``names`` (dest names) is >= 1."""
    bad = [name for name in names if getattr(args, name) < 1]
    if bad:
        parser.error(" and ".join("--" + name.replace("_", "-") for name in bad) + " must be positive")


# -- Ray and hubs ------------------------------------------------------------------------------


@contextlib.contextmanager
def ray_session() -> Iterator[None]:
    """A new local Ray instance (no dashboard, quiet) for the duration of the block; never
    one that is already running on this machine (its load would skew the figures)."""
    ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING)
    try:
        yield
    finally:
        ray.shutdown()


@contextlib.contextmanager
def open_hub(name: str, data_dir: str, shards: int | None, **options: Any) -> Iterator[TaskHub]:
    """A :class:`TaskHub` (Ray must already be up) that is closed when the block ends;
    ``shards=None`` leaves ``num_shards`` at the hub's default."""
    hub = TaskHub(name, data_dir=data_dir, num_shards=shards, **options)
    try:
        yield hub
    finally:
        hub.close()


def alternating(runs: int, sides: Sequence[str]) -> Iterator[tuple[int, str]]:
    """``(run, side)`` for every timed measurement, rotating the order of the sides from run to
    run (two sides: run 0 a then b, run 1 b then a, ...) to be fair on a noisy machine."""
    for run in range(runs):
        shift = run % len(sides)
        for side in [*sides[shift:], *sides[:shift]]:
            yield run, side


def median_fields(prefix: str, seconds: Sequence[float]) -> dict[str, Any]:
    """``{prefix}_seconds`` (every run, rounded) and ``{prefix}_median`` for the JSON line."""
    median = round(statistics.median(seconds), 4)
    return {f"{prefix}_seconds": [round(s, 4) for s in seconds], f"{prefix}_median": median}


def durable_vs_ray(seconds: dict[str, list[float]]) -> dict[str, Any]:
    """The JSON fields of a two-sided timing: ``ray_seconds``, ``ray_median``,
    ``durable_seconds``, ``durable_median`` and ``ratio_durable_over_ray`` (of the medians)."""
    fields = {**median_fields("ray", seconds["ray"]), **median_fields("durable", seconds["durable"])}
    fields["ratio_durable_over_ray"] = ratio(statistics.median(seconds["durable"]), statistics.median(seconds["ray"]))
    return fields


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator`` rounded to 3 places (the ratios in every JSON line)."""
    return round(numerator / denominator, 3)


def percentile(samples: Sequence[float], pct: int) -> float:
    """The ``pct``-th percentile (1-99) of ``samples``, linearly interpolated between ranks."""
    if len(samples) == 1:
        return samples[0]
    return statistics.quantiles(samples, n=100, method="inclusive")[pct - 1]


# -- many instances at once --------------------------------------------------------------------


def utc_now() -> datetime:
    """Now, as the hub stamps an instance's creation time (instances started after this call
    have ``created_time >= utc_now()``)."""
    return datetime.now(UTC)


def wait_all(hub: TaskHub, since: datetime, timeout: float) -> None:
    """Block until no instance created at or after ``since`` is Pending or Running.

    Asks every shard for one unfinished instance (oldest first), waits for that one with
    :meth:`TaskHub.wait_for_completion` (the shard answers when it ends: no sleeping), and
    asks again. By the time one ends most of the others have too, so this takes a handful of
    round trips however many instances there are, and adds no polling delay to the time.
    """
    deadline = time.monotonic() + timeout
    while True:
        page = hub.list_instances(created_time_from=since, runtime_status=NOT_FINISHED, page_size=1, show_input=False)
        if not page.instances:
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BenchmarkError(f"instances started since {since} still running after {timeout} s")
        hub.wait_for_completion(page.instances[0].instance_id, timeout=remaining)


def check_completed(
    hub: TaskHub, since: datetime, ids: Iterable[str], expected_output: Callable[[Any], Any]
) -> None:
    """Raise :class:`BenchmarkError` unless every instance in ``ids`` (all created at or after
    ``since``) is Completed with ``expected_output(its input)`` as output."""
    statuses: dict[str, DurableOrchestrationStatus] = {s.instance_id: s for s in hub.get_status_by(since)}
    for iid in ids:
        status = statuses.get(iid)
        if status is None:
            raise BenchmarkError(f"instance {iid} not found")
        if status.runtime_status != OrchestrationRuntimeStatus.Completed:
            raise BenchmarkError(f"instance {iid} ended {status.runtime_status}: {status.failure_details}")
        if status.output != expected_output(status.input_):
            raise BenchmarkError(f"instance {iid}: output {status.output!r} != {expected_output(status.input_)!r}")


# -- shard host memory -------------------------------------------------------------------------


def _proc_status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return dict(line.split(":", 1) for line in f if ":" in line)


def _kib_field(pid: int, field: str) -> int:
    """A ``/proc/<pid>/status`` memory field (``VmRSS``, ``VmHWM``) in bytes."""
    return int(_proc_status(pid)[field].split()[0]) * 1024


def _descends_from(pid: int, ancestor: int) -> bool:
    while pid > 1:
        pid = int(_proc_status(pid)["PPid"])
        if pid == ancestor:
            return True
    return False


def shard_host_pids() -> list[int]:
    """Processes whose command line starts with ``ray::ShardHost`` and that descend from this
    process (the local Ray it started), so another Ray on the machine is not counted."""
    me = os.getpid()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if f.read(14) == b"ray::ShardHost" and _descends_from(int(entry), me):
                    pids.append(int(entry))
        except (OSError, KeyError, ValueError):
            continue  # it ended meanwhile
    return sorted(pids)


class ShardHostMemory:
    """Samples the summed resident memory (VmRSS) of this Ray's shard hosts on a background
    thread while the block runs; :meth:`peak_hwm` sums their VmHWM (each process's own peak).

    ``with ShardHostMemory() as mem: ...`` then ``mem.peak_sampled`` (bytes) and, while the
    hosts are still alive (before the hub closes), ``mem.peak_hwm()``.
    """

    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        self.peak_sampled = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="shard-host-memory", daemon=True)

    def __enter__(self) -> ShardHostMemory:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak_sampled = max(self.peak_sampled, self._sum("VmRSS"))
            self.samples += 1
            self._stop.wait(self.interval)

    @staticmethod
    def _sum(field: str) -> int:
        total = 0
        for pid in shard_host_pids():
            with contextlib.suppress(OSError, KeyError, ValueError):
                total += _kib_field(pid, field)
        return total

    def peak_hwm(self) -> tuple[int, int]:
        """(number of shard host processes alive, sum of their VmHWM in bytes)."""
        return len(shard_host_pids()), self._sum("VmHWM")


@contextlib.contextmanager
def moto_server(work: str, bucket: str = "bench") -> Iterator[str]:
    """moto's S3 server (the dev extra's ``moto_server``) on a free port of 127.0.0.1 with
    ``bucket`` created, its log under ``work``, and dummy credentials in the environment (set
    before Ray starts, so its processes inherit them): yields the endpoint URL."""
    import socket
    import subprocess
    import urllib.request

    binary = os.path.join(os.path.dirname(sys.executable), "moto_server")
    if not os.access(binary, os.X_OK):
        raise BenchmarkError("moto_server is not installed (pip install 'moto[server]', in the dev extra)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    with open(os.path.join(work, "moto.log"), "wb") as log_file:
        proc = subprocess.Popen([binary, "-H", "127.0.0.1", "-p", str(port)], stdout=log_file, stderr=log_file)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise BenchmarkError("moto_server did not answer in 30 s") from None
                time.sleep(0.05)
        import boto3

        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(10)
