"""The engine against DurableTask.Core, durabletask-dotnet and durabletask-python, for the
cases a scan of their tests found we handled differently: user exceptions that cannot be
printed, continue-as-new generations that must not repeat ids, work an orchestration starts
in its last episode, and tasks passed where a value belongs.

Each test names the peer behaviour it ports. Pure: hand-written histories, no Ray, no files.
"""

from __future__ import annotations

from orchestrations import ExecutionState, Registry
from orchestrations.testing import at, task_completed
from runtime._batch import run_batch
from runtime._codec import decode, dump_value, encode

from .test_executor import Instance

S = ExecutionState


class _UnprintableError(Exception):
    """An exception whose ``__str__`` itself fails (as ``traceback`` prints it: ``<exception
    str() failed>``)."""

    def __str__(self) -> str:
        raise RuntimeError("str broken")


# -- a user exception that cannot be printed fails its task, not the engine --------------------


def test_an_orchestrator_raising_an_unprintable_exception_fails_naming_its_type():
    # before: execute() itself raised RuntimeError("str broken"), the host dropped the message
    # and the instance stayed Running for good
    def unprintable(ctx):
        yield ctx.call_activity("a")
        raise _UnprintableError()

    inst = Instance(unprintable)
    inst.start()
    done = inst.run(task_completed(1, None), now=at(2))
    assert done.state is S.FAILED
    assert done.failure.error_type.endswith("_UnprintableError")
    assert done.failure.message == "<exception str() failed>"
    assert "_UnprintableError" in done.failure.details


def test_an_activity_raising_an_unprintable_exception_fails_only_its_own_call():
    # before: run_batch raised, and every call of the batch was reported failed with it
    registry = Registry()

    def good(x: int) -> int:
        return x * 2

    def bad(x: int) -> int:
        raise _UnprintableError()

    registry.add_activity(good, "good")
    registry.add_activity(bad, "bad")
    activities = encode(registry.snapshot()[1])
    calls = [("good", dump_value(1)), ("bad", dump_value(2)), ("good", dump_value(3))]
    first, failed, last = decode(run_batch("k", activities, calls))
    assert first == (True, 2) and last == (True, 6)
    ok, failure = failed
    assert not ok and failure.message == "<exception str() failed>"
    assert failure.error_type.endswith("_UnprintableError")
