"""The demo driver (``make demo``): the seed's E1_HelloSequence and a 1,000-activity fan-out.

Runs on a local Ray with SQLite shards under ``.durable/``. The orchestrators and activities
below are defined in ``__main__``, so they travel to the shard hosts and workers by value.
"""

from __future__ import annotations

import argparse
import sys
import time

from orchestrations import OrchestrationContext, activity, orchestrator
from runtime import OrchestrationRuntimeStatus, TaskHub
from runtime._render import format_history


@activity(name="E1_SayHello")
def say_hello(name: str) -> str:
    """The seed's activity."""
    return f"Hello {name}!"


@orchestrator(name="E1_HelloSequence")
def hello_sequence(context: OrchestrationContext):  # noqa: ANN201 - a generator orchestrator
    """The seed's orchestrator: three activities in sequence."""
    outputs = []
    outputs.append((yield context.call_activity("E1_SayHello", "Tokyo")))
    outputs.append((yield context.call_activity("E1_SayHello", "Seattle")))
    outputs.append((yield context.call_activity("E1_SayHello", "London")))
    return outputs


@activity
def square(x: int) -> int:
    """A trivial unit of fan-out work."""
    return x * x


@orchestrator
def fan_out_fan_in(context: OrchestrationContext):  # noqa: ANN201 - a generator orchestrator
    """Run one activity per input item in parallel, then add the results."""
    n = context.get_input()
    results = yield context.task_all([context.call_activity(square, i) for i in range(n)])
    return sum(results)


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", default=".durable")
    parser.add_argument("--fan-out", type=int, default=1000)
    args = parser.parse_args(argv)

    with TaskHub("demo", data_dir=args.data_dir, num_shards=4) as hub:
        print("== E1_HelloSequence ==")
        iid = hub.start_new(hello_sequence)
        status = hub.wait_for_completion(iid, timeout=60)
        print(f"instance {iid}: {status.runtime_status.value}, output {status.output}")
        print(format_history(hub.get_history(iid)))

        print(f"\n== fan-out/fan-in of {args.fan_out} activities ==")
        started = time.perf_counter()
        iid = hub.start_new(fan_out_fan_in, client_input=args.fan_out)
        status = hub.wait_for_completion(iid, timeout=600, show_progress=True)
        elapsed = time.perf_counter() - started
        expected = sum(i * i for i in range(args.fan_out))
        print(f"instance {iid}: {status.runtime_status.value}, sum {status.output} "
              f"(expected {expected}) in {elapsed:.2f} s")
        ok = status.runtime_status is OrchestrationRuntimeStatus.Completed and status.output == expected
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
