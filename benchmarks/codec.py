"""Storage-format micro-benchmark: what a shard turn pays to encode (and a replay to decode)
its history events, format version 2 (a pickle of each event, ``runtime._codec.encode``) vs
version 3 (an event record as JSON, ``runtime._codec_records.dump_event``). No Ray, no file.

The events are those of the hello sequence (``OrchestratorStarted``, ``TaskScheduled`` with a
string input, ``TaskCompleted`` with a string result, ``OrchestratorCompleted``, plus its
``ExecutionStarted`` and ``ExecutionCompleted``), N in all (``--events``, default 10,000), each
side timed ``--runs`` times (default 5) in alternation; the median is reported. Output: one
JSON line, microseconds per event and the ratio version 3 / version 2.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from orchestrations import (
    ExecutionCompleted,
    ExecutionStarted,
    HistoryEvent,
    OrchestratorCompleted,
    OrchestratorStarted,
    TaskCompleted,
    TaskScheduled,
)
from runtime._codec import decode, encode
from runtime._codec_records import dump_event, load_event


def typical_events(count: int) -> list[HistoryEvent]:
    """``count`` events shaped like a hello sequence's history."""
    now = datetime.now(UTC)
    cycle: list[HistoryEvent] = [
        ExecutionStarted(now, "hello_sequence", None, "6f1c0e9d2a4b4c8e9f0a1b2c3d4e5f60", "0a1b2c3d4e5f6071"),
        OrchestratorStarted(now),
        TaskScheduled(now, 0, "say_hello", "Tokyo"),
        OrchestratorCompleted(now),
        OrchestratorStarted(now),
        TaskCompleted(now, 0, "Hello Tokyo!"),
        ExecutionCompleted(now, "Completed", ["Hello Tokyo!", "Hello Seattle!", "Hello London!"]),
        OrchestratorCompleted(now),
    ]
    return [cycle[i % len(cycle)] for i in range(count)]


def _timed(fn: Callable[[Any], Any], items: list[Any]) -> float:
    start = time.perf_counter()
    for item in items:
        fn(item)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    events = typical_events(args.events)
    pickles = [encode(e) for e in events]
    records = [dump_event(e) for e in events]
    times: dict[str, list[float]] = {"encode_v2": [], "encode_v3": [], "decode_v2": [], "decode_v3": []}
    for _ in range(args.runs):
        times["encode_v2"].append(_timed(encode, events))
        times["encode_v3"].append(_timed(dump_event, events))
        times["decode_v2"].append(_timed(decode, pickles))
        times["decode_v3"].append(_timed(load_event, records))
    per_event = {k: round(statistics.median(v) / args.events * 1e6, 2) for k, v in times.items()}
    print(json.dumps({
        "benchmark": "codec", "events": args.events, "runs": args.runs,
        **{f"{k}_us_per_event": v for k, v in per_event.items()},
        "bytes_v2": sum(map(len, pickles)), "bytes_v3": sum(len(r.encode()) for r in records),
        "ratio_encode_v3_over_v2": round(per_event["encode_v3"] / per_event["encode_v2"], 3),
        "ratio_decode_v3_over_v2": round(per_event["decode_v3"] / per_event["decode_v2"], 3),
    }))


if __name__ == "__main__":
    main()
