"""What every benchmark script shares: stderr logging and the one-JSON-line stdout contract."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from typing import Any


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
