"""Run every benchmark, then write the results as JSON, a Markdown table and a PNG chart.

Each benchmark runs as its own subprocess (its own Ray instance), one after the other, with
the same Python interpreter: fan-out/fan-in of 10,000 and of 100,000 activities
(``fanout.py``), latency of one hello sequence plus 1,000 concurrent sequences and 10,000
concurrent sequences (``hello.py``), 1,000 locked bank transfers (``bank.py``) and starting
10,000 orchestrations into a hub holding 100,000 (``start_full.py``); then the shapes users write,
at the hub's defaults: hello sequences from a loop of ``start_new``, from the asyncio client and
one alone (``hello.py --loop/--async/--single``), 1,000 transfer orchestrations over 100 and 10
accounts (``bank.py --shape orchestrations``) and the quick start's hub open and first result
in a fresh process (``start_up.py``). Each script runs its
plain-Ray baseline in the same process and reports medians of 3 runs; their stderr
(progress) passes through to this script's stderr.

Writes, under ``benchmarks/results/``:

* ``latest.json``: every script's command, exit code, wall time and JSON line, plus the rows;
* ``latest.md``: the table (workload, durable, plain Ray, ratio, target, met?), also printed
  to stdout;
* ``chart.png``: a bar chart of the ratios durable / plain Ray (log scale; lower is better).

``--quick`` scales every workload down and does one run of each, for a smoke run in a few
minutes; it writes ``quick.json``, ``quick.md`` and ``chart-quick.png`` instead, so the full
results stay. ``--only KEY ...`` runs some benchmarks again and keeps the others' results from
the previous file; ``--render-only`` runs nothing and redraws the table and chart from it. The
exit status is 1 if any benchmark failed.

Run it from the repository root (``make bench`` does, with ``RAY_AUTH_MODE=disabled``)::

    python benchmarks/run_all.py
    python benchmarks/run_all.py --quick
    python benchmarks/run_all.py --only hello_1k start_full
    python benchmarks/run_all.py --render-only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
GIB = 2**30
MEMORY_LIMIT = 2 * GIB
COLORS = {True: "#2e7d32", False: "#c62828", None: "#9e9e9e"}


@dataclass(frozen=True)
class Benchmark:
    """One subprocess: ``python benchmarks/<script> <args>`` (``quick_args`` with --quick)."""

    key: str
    title: str
    script: str
    args: tuple[str, ...]
    quick_args: tuple[str, ...]

    def command(self, quick: bool) -> list[str]:
        """The argv to run (with the current interpreter)."""
        extra = [*self.quick_args, "--runs", "1"] if quick else list(self.args)
        return [sys.executable, str(HERE / self.script), *extra]


BENCHMARKS = (
    Benchmark("fanout_10k", "fan-out/fan-in, 10,000 activities", "fanout.py",
              ("--activities", "10000"), ("--activities", "1000")),
    Benchmark("fanout_100k", "fan-out/fan-in, 100,000 activities", "fanout.py",
              ("--activities", "100000"), ("--activities", "5000")),
    Benchmark("hello_1k", "hello sequence latency + 1,000 concurrent", "hello.py",
              ("--concurrent", "1000"), ("--concurrent", "100", "--samples", "20")),
    Benchmark("hello_10k", "10,000 concurrent hello sequences", "hello.py",
              ("--concurrent", "10000", "--samples", "0"), ("--concurrent", "500", "--samples", "0")),
    Benchmark("bank", "1,000 locked bank transfers", "bank.py", (), ("--transfers", "100")),
    Benchmark("bank_4", "1,000 locked bank transfers, 4 shards", "bank.py", ("--shards", "4"),
              ("--transfers", "100", "--shards", "4")),
    Benchmark("start_full", "start 10,000 into a hub holding 100,000", "start_full.py",
              (), ("--existing", "2000", "--new", "500")),
    # the shapes users write (issue 12): one call at a time, the hub at its defaults
    Benchmark("hello_user", "hello sequences as users call them", "hello.py",
              ("--samples", "0", "--concurrent", "0", "--loop", "1000", "--async", "1000", "--single", "200"),
              ("--samples", "0", "--concurrent", "0", "--loop", "100", "--async", "100", "--single", "20")),
    Benchmark("bank_user", "1,000 transfer orchestrations, 100 accounts", "bank.py",
              ("--shape", "orchestrations"), ("--shape", "orchestrations", "--transfers", "100")),
    Benchmark("bank_user_10", "1,000 transfer orchestrations, 10 accounts", "bank.py",
              ("--shape", "orchestrations", "--accounts", "10"),
              ("--shape", "orchestrations", "--accounts", "10", "--transfers", "100")),
    Benchmark("start_up", "the quick start: hub open and first result", "start_up.py", (), ()),
    # issue 14: each durability mode next to local, the hub at its defaults
    Benchmark("replication", "hello latency and transfers in each durability mode", "replication.py",
              (), ("--samples", "20", "--transfers", "100")),
)
BY_KEY = {b.key: b for b in BENCHMARKS}


@dataclass
class Row:
    """One line of the table. ``ratio`` is durable / plain Ray (time, or p50/p99 latency);
    ``met`` is None where the issue sets no target; ``check`` is the figure the target is about."""

    workload: str
    durable: str
    ray: str
    ratio: float | None
    target: str = "-"
    met: bool | None = None
    check: str = ""
    target_ratio: float | None = None


# -- running -----------------------------------------------------------------------------------


def run_one(bench: Benchmark, quick: bool, timeout: float) -> dict[str, Any]:
    """Run one benchmark subprocess: its command, exit code, wall seconds and JSON line."""
    command = bench.command(quick)
    code = code_version()
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
    print(f"== {bench.key}: {' '.join(command[1:])}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the script and the Ray it started
        proc.communicate()
        stdout = ""
        print(f"== {bench.key}: killed after {timeout} s", file=sys.stderr, flush=True)
    seconds = time.perf_counter() - start
    lines = [line for line in stdout.splitlines() if line.strip()]
    result = None
    if proc.returncode == 0 and lines:
        try:
            result = json.loads(lines[-1])
        except json.JSONDecodeError:
            result = None
    print(f"== {bench.key}: exit {proc.returncode} after {seconds:.1f} s", file=sys.stderr, flush=True)
    return {"command": ["python", *(os.path.relpath(a, ROOT) for a in command[1:2]), *command[2:]],
            "exit_code": proc.returncode, "wall_seconds": round(seconds, 1), **code, "result": result}


# -- rows --------------------------------------------------------------------------------------


def seconds(value: float) -> str:
    """A duration for the table."""
    return f"{value:.2f} s" if value >= 0.1 else f"{value * 1000:.0f} ms"


def time_row(workload: str, r: dict[str, Any], target_ratio: float | None = None) -> Row:
    """A durable-vs-Ray wall-time row from ``durable_median`` / ``ray_median``, with an
    optional target on their ratio."""
    value = r["ratio_durable_over_ray"]
    row = Row(workload, seconds(r["durable_median"]), seconds(r["ray_median"]), value)
    if target_ratio is not None:
        row.target, row.met, row.check = f"≤ {target_ratio}x plain Ray", value <= target_ratio, f"{value:.2f}x"
        row.target_ratio = target_ratio
    return row


def shard_count(n: int) -> str:
    """``1 shard``, ``2 shards``, ..."""
    return f"{n} shard" if n == 1 else f"{n} shards"


def fanout_10k_rows(r: dict[str, Any]) -> list[Row]:
    """Wall time; target at most 0.5x plain Ray."""
    return [time_row(f"fan-out/fan-in, {r['activities']:,} activities", r, 0.5)]


def fanout_100k_rows(r: dict[str, Any]) -> list[Row]:
    """Wall time (no target), and the shard hosts' summed peak memory (target under 2 GiB)."""
    n, hwm = r["activities"], r["shard_hosts_peak_rss_bytes"]
    memory = Row(f"fan-out/fan-in, {n:,}: peak RSS of the {r['shard_hosts']} shard hosts, summed",
                 f"{hwm / GIB:.2f} GiB", "-", None, "< 2 GiB", hwm < MEMORY_LIMIT, f"{hwm / GIB:.2f} GiB")
    return [time_row(f"fan-out/fan-in, {n:,} activities", r), memory]


def hello_rows(r: dict[str, Any], target_ratio: float | None) -> list[Row]:
    """Latency rows (p50 target: <= 10 ms and <= 2x) if measured, and the throughput row."""
    rows = []
    if r["samples"]:
        p50, ratio50 = r["durable_p50_ms"], r["ratio_p50"]
        rows.append(Row("one hello sequence alone, p50", f"{p50:.1f} ms", f"{r['ray_p50_ms']:.1f} ms", ratio50,
                        "≤ 10 ms and ≤ 2x plain Ray", p50 <= 10 and ratio50 <= 2, f"{p50:.1f} ms, {ratio50:.2f}x",
                        2.0))
        rows.append(Row("one hello sequence alone, p99", f"{r['durable_p99_ms']:.1f} ms",
                        f"{r['ray_p99_ms']:.1f} ms", r["ratio_p99"]))
    if r["concurrent"]:
        rows.append(time_row(f"{r['concurrent']:,} concurrent hello sequences", r, target_ratio))
    return rows


def bank_rows(r: dict[str, Any], target: bool = True) -> list[Row]:
    """Transfers per second; target at least 300 (with one shard per core, ``--shards``'s default)."""
    tps = r["durable_transfers_per_second_median"]
    row = Row(f"{r['transfers']:,} locked bank transfers, {r['accounts']} accounts, {shard_count(r['shards'])}",
              f"{tps:.0f} transfers/s", f"{r['ray_transfers_per_second_median']:.0f} transfers/s",
              r["ratio_durable_over_ray_time"])
    if target:
        row.target, row.met, row.check = "≥ 300 transfers/s", tps >= 300, f"{tps:.0f}/s"
    return [row]


def start_full_rows(r: dict[str, Any]) -> list[Row]:
    """Empty hub and full hub (target: full at most 1.2x empty), each against Ray tasks."""
    n, existing, slowdown = r["new"], r["existing"], r["slowdown_full_over_empty"]
    ray_text = f"{seconds(r['ray_median'])} ({n:,} tasks)"
    empty = Row(f"start {n:,} orchestrations into an empty hub", seconds(r["empty_median"]), ray_text,
                r["ratio_empty_over_ray"])
    full = Row(f"start {n:,} orchestrations into a hub holding {existing:,}", seconds(r["full_median"]), ray_text,
               r["ratio_full_over_ray"], "≤ 1.2x the empty hub", slowdown <= 1.2, f"{slowdown:.2f}x empty")
    return [empty, full]


def hello_user_rows(r: dict[str, Any]) -> list[Row]:
    """A loop of ``start_new`` then of waits (target at most 1.0x plain Ray with asyncio), the
    asyncio client under ``gather`` (at most 0.5x), and one sequence alone (p50 at most plain
    Ray's p50 and 8 ms; p99 at most 2x its own p50); the hub at its defaults."""
    shards = shard_count(r["default_shards"])
    rows = []
    if r.get("loop"):
        rows.append(Row(f"{r['loop']:,} hello sequences, a loop of start_new then of waits ({shards}, default)",
                        seconds(r["loop_durable_median"]), seconds(r["loop_ray_median"]) + " (asyncio)",
                        r["loop_ratio"], "≤ 1.0x plain Ray", r["loop_ratio"] <= 1.0, f"{r['loop_ratio']:.2f}x", 1.0))
    if r.get("async"):
        rows.append(Row(f"{r['async']:,} hello sequences, asyncio client under gather ({shards}, default)",
                        seconds(r["async_durable_median"]), seconds(r["async_ray_median"]) + " (asyncio)",
                        r["async_ratio"], "≤ 0.5x plain Ray", r["async_ratio"] <= 0.5, f"{r['async_ratio']:.2f}x",
                        0.5))
    if r.get("single"):
        p50, ray50, p99 = r["single_durable_p50_ms"], r["single_ray_p50_ms"], r["single_durable_p99_ms"]
        rows.append(Row(f"one hello sequence alone, p50 ({shards}, default)", f"{p50:.1f} ms",
                        f"{ray50:.1f} ms", r["single_ratio_p50"], "≤ plain Ray and ≤ 8 ms",
                        p50 <= ray50 and p50 <= 8, f"{p50:.1f} ms, {r['single_ratio_p50']:.2f}x", 1.0))
        spread = r["single_durable_p99_over_p50"]
        rows.append(Row(f"one hello sequence alone, p99 ({shards}, default)", f"{p99:.1f} ms",
                        f"{r['single_ray_p99_ms']:.1f} ms", p99 / r["single_ray_p99_ms"], "≤ 2x its p50",
                        spread <= 2, f"{spread:.2f}x p50"))
    return rows


def bank_user_rows(r: dict[str, Any], floor: int) -> list[Row]:
    """One transfer orchestration per transfer, started by a loop of ``start_new`` at the hub's
    defaults; target at least ``floor`` transfers per second."""
    tps = r["durable_transfers_per_second_median"]
    row = Row(f"{r['transfers']:,} transfer orchestrations (a loop of start_new), {r['accounts']} accounts, "
              f"{shard_count(r['shards'])} (default)", f"{tps:.0f} transfers/s",
              f"{r['ray_transfers_per_second_median']:.0f} transfers/s", r["ratio_durable_over_ray_time"],
              f"≥ {floor:,} transfers/s", tps >= floor, f"{tps:.0f}/s")
    return [row]


def start_up_rows(r: dict[str, Any]) -> list[Row]:
    """The quick start in a fresh process: hub open plus the first result after ``ray.init()``
    (target under 1 s), against plain Ray's first result after ``ray.init()``."""
    total, open_, first = r["durable_open_plus_first_median"], r["durable_hub_open_median"], \
        r["durable_first_result_median"]
    ray_first = r["ray_first_result_median"]
    return [Row(f"quick start: hub open ({seconds(open_)}) + first result ({seconds(first)}) after ray.init(), "
                f"{shard_count(r['shards'])} (default)", seconds(total), f"{seconds(ray_first)} (first tasks)",
                total / ray_first if ray_first else None, "< 1 s", total < 1.0, seconds(total))]


MODE_TITLES = {
    "local": "local (no replica)", "async-file": "async, file:// replica",
    "replicated-file": "replicated, file:// replica", "replicated-s3": "replicated, S3 (moto on 127.0.0.1)",
}


def replication_rows(r: dict[str, Any]) -> list[Row]:
    """Per durability mode: one hello alone (p50, against plain Ray's p50 in the same run) and
    transfer orchestrations per second (against local's); no target, the cost is what it is."""
    rows = []
    for mode, f in r["modes"].items():
        title = MODE_TITLES.get(mode, mode)
        shards = shard_count(f["shards"])
        rows.append(Row(f"{title}: one hello sequence alone, p50 (p99 {f['p99_median']:.1f} ms; {shards})",
                        f"{f['p50_median']:.1f} ms", f"{f['ray_p50_median']:.1f} ms",
                        common_ratio(f["p50_median"], f["ray_p50_median"])))
        local = r["modes"].get("local")
        versus = f" ({f['tps_median'] / local['tps_median']:.2f}x local)" if local and mode != "local" else ""
        rows.append(Row(f"{title}: {r['transfers']:,} transfer orchestrations, {r['accounts']} accounts{versus}",
                        f"{f['tps_median']:.0f} transfers/s", "-", None))
    return rows


def common_ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


ROW_MAKERS: dict[str, Callable[[dict[str, Any]], list[Row]]] = {
    "fanout_10k": fanout_10k_rows,
    "fanout_100k": fanout_100k_rows,
    "hello_1k": lambda r: hello_rows(r, 1.5),
    "hello_10k": lambda r: hello_rows(r, None),
    "bank": bank_rows,
    "bank_4": lambda r: bank_rows(r, target=False),
    "start_full": start_full_rows,
    "hello_user": hello_user_rows,
    "bank_user": lambda r: bank_user_rows(r, 1000),
    "bank_user_10": lambda r: bank_user_rows(r, 250),
    "start_up": start_up_rows,
    "replication": replication_rows,
}


def make_rows(runs: dict[str, dict[str, Any]]) -> list[Row]:
    """Every row, in the order of :data:`BENCHMARKS`; a failed benchmark gets one row."""
    rows: list[Row] = []
    for bench in BENCHMARKS:
        entry = runs.get(bench.key)
        if entry is None:
            continue
        if entry["result"] is None:
            rows.append(Row(bench.title, f"failed (exit {entry['exit_code']})", "-", None, "-", False, "failed"))
        else:
            rows.extend(ROW_MAKERS[bench.key](entry["result"]))
    return rows


# -- output ------------------------------------------------------------------------------------


def markdown(rows: list[Row], meta: dict[str, Any], runs: dict[str, dict[str, Any]]) -> str:
    """The table, with where and how it was measured, and every command."""
    def met(row: Row) -> str:
        if row.met is None:
            return "-"
        return f"yes ({row.check})" if row.met else f"**no** ({row.check})"

    lines = [
        f"Measured {meta['generated'][:16].replace('T', ' ')} UTC on {meta['cpus']} CPU cores "
        f"(Python {meta['python']}, Ray {meta['ray']}, {describe_code(runs)})"
        f"{' — QUICK smoke run, scaled down' if meta['quick'] else ''}; "
        f"each figure is the median of {meta['runs']} run(s) and its plain-Ray baseline ran in the same process; "
        f"hubs have one shard per CPU core ({meta['cpus']}) unless the row says otherwise. "
        "Ratio = durable / plain Ray (time; lower is better). Produced by `make bench` "
        "(`python benchmarks/run_all.py`).",
        "",
        "| workload | durable | plain Ray | ratio | target | met? |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        ratio_text = f"{row.ratio:.2f}x" if row.ratio is not None else "-"
        lines.append(f"| {row.workload} | {row.durable} | {row.ray} | {ratio_text} | {row.target} | {met(row)} |")
    lines += ["", "Commands:", ""]
    lines += [f"- `{' '.join(entry['command'])}`" for entry in runs.values()]
    return "\n".join(lines) + "\n"


def chart(rows: list[Row], path: Path, quick: bool) -> None:
    """Horizontal bars of durable / plain Ray per row (log scale), green where the row's
    target is met, red where not, grey without a target; a tick marks a ratio target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    shown = [row for row in rows if row.ratio is not None][::-1]
    colors = [COLORS[row.met] for row in shown]
    fig, ax = plt.subplots(figsize=(11, 0.55 * len(shown) + 2.0))
    ys = range(len(shown))
    ratios = [row.ratio or 0.0 for row in shown]
    ax.barh(ys, ratios, color=colors, height=0.6)
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=1, zorder=0)
    for y, row, value in zip(ys, shown, ratios, strict=True):
        label = f"{value:.2f}x"
        near_target = row.target_ratio is not None and value < row.target_ratio < value * 1.4
        x = (row.target_ratio if near_target else value) * 1.08  # type: ignore[operator]
        ax.text(x, y, label, va="center", fontsize=8.5, bbox={"facecolor": "white", "edgecolor": "none", "pad": 1})
        if row.target_ratio is not None:
            ax.plot([row.target_ratio] * 2, [y - 0.4, y + 0.4], color="black", linestyle="--", linewidth=1.2)
    names = [row.workload + (f"\n({row.check}; target {row.target})" if row.met is not None and row.target_ratio is None
                             else "") for row in shown]
    ax.set_yticks(list(ys), names, fontsize=9)
    lo, hi = min(*ratios, 1.0) / 1.6, max(*ratios, 2.0) * 6
    ticks = [t for t in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100) if lo <= t <= hi]
    ax.set_xticks(ticks, ["1x\n(plain Ray)" if t == 1 else f"{t:g}x" for t in ticks])
    ax.minorticks_off()
    ax.set_xlim(lo, hi)
    ax.set_xlabel("durable time / plain Ray time, log scale (lower is better)")
    ax.legend(handles=[Patch(color=COLORS[True], label="target met"), Patch(color=COLORS[False], label="target missed"),
                       Patch(color=COLORS[None], label="no target"),
                       plt.Line2D([], [], color="black", linestyle="--", label="ratio target")],
              loc="lower right", fontsize=8)
    ax.set_title("Ray Durable vs plain Ray" + (" (quick smoke run)" if quick else ", medians of 3 runs"))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def git(*args: str) -> str:
    """Output of a git command in the repository ("" if git fails)."""
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def code_version() -> dict[str, Any]:
    """The commit, and whether the code under test (runtime, orchestrations, entities) has
    uncommitted changes, now (recorded as each benchmark starts)."""
    return {"commit": git("rev-parse", "--short", "HEAD"),
            "uncommitted_changes": bool(git("status", "--porcelain", "runtime", "orchestrations", "entities"))}


def describe_code(runs: dict[str, dict[str, Any]]) -> str:
    """"commit abc1234" (or several), and which benchmarks ran with uncommitted changes."""
    commits = sorted({entry.get("commit") or "?" for entry in runs.values()})
    text = ("commit " if len(commits) == 1 else "commits ") + ", ".join(commits)
    changed = [key for key, entry in runs.items() if entry.get("uncommitted_changes")]
    if changed:
        text += f"; {', '.join(changed)} ran with uncommitted changes to the code under test"
    return text


def versions() -> dict[str, Any]:
    """Where it ran: CPUs, Python and Ray versions."""
    try:
        ray_version = metadata.version("ray")
    except metadata.PackageNotFoundError:
        ray_version = "?"
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "ray": ray_version}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="scaled-down smoke run (one run each)")
    parser.add_argument("--only", nargs="+", choices=list(BY_KEY), metavar="KEY",
                        help=f"run only these ({', '.join(BY_KEY)}); keep the others' previous results")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds one benchmark may take")
    parser.add_argument("--render-only", action="store_true",
                        help="run nothing: redraw the table and chart from the previous JSON file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run, collect, write the JSON, table and chart; print the table."""
    args = parse_args(argv)
    stem = "quick" if args.quick else "latest"
    json_path, md_path = RESULTS / f"{stem}.json", RESULTS / f"{stem}.md"
    chart_path = RESULTS / ("chart-quick.png" if args.quick else "chart.png")
    runs: dict[str, dict[str, Any]] = {}
    previous: dict[str, Any] = {}
    if (args.only or args.render_only) and json_path.exists():
        previous = json.loads(json_path.read_text())
        runs = previous["benchmarks"]
    for bench in BENCHMARKS:
        if not args.render_only and (args.only is None or bench.key in args.only):
            runs[bench.key] = run_one(bench, args.quick, args.timeout)
    runs = {b.key: runs[b.key] for b in BENCHMARKS if b.key in runs}
    rows = make_rows(runs)
    run_counts = sorted({e["result"]["runs"] for e in runs.values() if e["result"] is not None})
    if args.render_only and previous:
        meta = {key: value for key, value in previous.items() if key not in ("benchmarks", "rows")}
    else:
        meta = {"generated": datetime.now(UTC).isoformat("T", "seconds"), "quick": args.quick,
                "runs": "/".join(map(str, run_counts)) or "?", **versions()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps({**meta, "benchmarks": runs, "rows": [asdict(r) for r in rows]}, indent=2) + "\n")
    table = markdown(rows, meta, runs)
    md_path.write_text(table)
    chart(rows, chart_path, args.quick)
    print(table, end="")
    print(f"wrote {json_path.relative_to(ROOT)}, {md_path.relative_to(ROOT)}, {chart_path.relative_to(ROOT)}",
          file=sys.stderr)
    return 0 if all(entry["result"] is not None for entry in runs.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
