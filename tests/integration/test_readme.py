"""README.md's examples, run as written.

How README.md's fenced blocks are treated:

- Every ```python block is a complete script. They run in the order they appear, each saved
  to a file of its own and run with ``python file.py`` in one working directory shared by
  all of them (so later blocks and the command line see the files earlier ones wrote), and
  each must exit with status 0.
- The first block, the quick start, gets ``RAY_ADDRESS=local``: it starts a Ray of its own, as
  a user's first script does ("starts a local Ray if none is running"), and never joins someone
  else's cluster. Every other block runs against a private Ray head of this module
  (``RAY_ADDRESS`` names it; see ``test_drivers``: own temp dir, own process group, never
  ``ray stop``), as a script does on a cluster; the detached hub and ``TaskHub.connect`` of
  "Several drivers" need a cluster that outlives a driver anyway. Joining a running Ray costs
  ~1 s where starting and stopping one costs ~7-10 s on 2 cores: the module went from ~4.5 to
  ~2 minutes.
- In ```bash blocks, every line that starts with ``ray-durable`` runs (the installed script),
  after all the python blocks, in the same directory, against the same head; it must exit
  with status 0 and print what :data:`EXPECTED` says. Other lines of ```bash blocks (the
  ``make`` commands of "Two commands") are shown, not run.
- Blocks that must not run at all use another fence language (```sh, ```text).

The examples pass no ``always_replay``, so the module is skipped in the
``DURABLE_ALWAYS_REPLAY=1`` run of the integration suite.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import ALWAYS_REPLAY
from .test_drivers import address  # noqa: F401 - the private Ray head fixture, used by name

pytestmark = [
    pytest.mark.integration,
    pytest.mark.in_order,  # the blocks and commands run as a reader would, one after another
    pytest.mark.skipif(ALWAYS_REPLAY, reason="README examples run once, as written (they pass no always_replay)"),
]

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
SCRIPT_TIMEOUT = 240

#: What each ``ray-durable`` line of the README must print (the line without ``ray-durable``).
EXPECTED: dict[str, list[str]] = {
    "--hub quickstart list": ["hello-1", "hello_sequence", "Completed"],
    "--hub quickstart history hello-1": ["TaskScheduled", "say_hello", "ExecutionCompleted", "Hello London!"],
    "--hub approvals list --status Running": ["expense-3", "expense-4"],
    "--hub approvals raise expense-3 Approval bob --wait 30": ["expense-3: Completed", "expense-3 approved by bob"],
    '--hub approvals terminate expense-4 --reason "withdrawn"': ["terminated expense-4"],
    "--hub approvals status expense-4": ["Terminated"],
    "--hub entities entities": ["@account@alice", "@counter@visits"],
    "--hub entities entity @Counter@visits": ["@counter@visits", "3"],
    "--json --hub monitor status monitor-1": ['"runtime_status": "Completed"', '"rounds": 5'],
}


def fenced_blocks(text: str) -> list[tuple[str, str, str]]:
    """Every fenced block of ``text`` as (language, code, the heading it is under), in order."""
    blocks, heading, end = [], "", 0
    for m in re.finditer(r"^```(\w*)\n(.*?)^```\s*$", text, re.MULTILINE | re.DOTALL):
        heading = ([heading, *re.findall(r"^#+ (.+)$", text[end : m.start()], re.MULTILINE)])[-1]
        blocks.append((m[1], m[2], heading))
        end = m.end()
    return blocks


BLOCKS = fenced_blocks(README.read_text())
PYTHON = [(code, heading) for lang, code, heading in BLOCKS if lang == "python"]
COMMANDS = [
    line.strip().removeprefix("ray-durable").strip()
    for lang, code, _ in BLOCKS if lang == "bash"
    for line in code.splitlines() if line.strip().startswith("ray-durable ")
]


def slug(heading: str) -> str:
    """A heading as a test id: ``"Fan-out/fan-in"`` -> ``"fan-out-fan-in"``."""
    return re.sub(r"\W+", "-", heading.lower()).strip("-")


def needs_cluster(code: str) -> bool:
    """Whether a block opens a detached hub or attaches to one."""
    return "detached=True" in code or "TaskHub.connect(" in code


def run(args: list[str], cwd: Path, ray_address: str, what: str) -> subprocess.CompletedProcess[str]:
    """Run ``args`` in ``cwd``; fails the test with the output unless it exits with status 0."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(ROOT),
           "RAY_ADDRESS": ray_address}
    try:
        done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=SCRIPT_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{what} did not finish within {SCRIPT_TIMEOUT} s\nstdout:\n{exc.stdout}\nstderr:\n{exc.stderr}")
    assert done.returncode == 0, (
        f"{what} exited with {done.returncode}\nstdout:\n{done.stdout[-4000:]}\nstderr:\n{shown(done.stderr)}"
    )
    return done


def shown(stderr: str, keep: int = 4000) -> str:
    """What a failure shows of a script's stderr: its traceback whole (Ray's forwarded log lines
    may follow it and would push it out of a plain tail), then the tail."""
    start = stderr.rfind("Traceback (most recent call last)")
    traceback = stderr[start : start + keep] + "\n...\n" if start >= 0 else ""
    return traceback + stderr[-keep:]


def cli_args(command: str) -> list[str]:
    """The ``ray-durable`` of this environment with ``command``'s arguments."""
    script = Path(sys.executable).parent / "ray-durable"
    prefix = [str(script)] if script.exists() else [sys.executable, "-c", "from runtime.cli import main; main()"]
    return prefix + shlex.split(command)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory every example and command runs in (empty at first)."""
    return tmp_path_factory.mktemp("readme")


@pytest.fixture(scope="module")
def scripts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the blocks are saved, apart from the files they write."""
    return tmp_path_factory.mktemp("readme-scripts")


def test_the_readme_has_the_examples():
    assert len(PYTHON) >= 10
    assert PYTHON[0][1] == "Quick start"  # the block that starts a Ray of its own
    assert sum(needs_cluster(code) for code, _ in PYTHON) == 2  # the two drivers of "Several drivers"
    assert COMMANDS, "no ray-durable commands in a ```bash block"
    missing = [c for c in COMMANDS if c not in EXPECTED]
    assert not missing, f"add what these README commands print to EXPECTED: {missing}"


@pytest.mark.parametrize("index", range(len(PYTHON)), ids=[f"{i + 1}-{slug(h)}" for i, (_, h) in enumerate(PYTHON)])
def test_python_block(index, workdir, scripts, request):
    code, heading = PYTHON[index]
    path = scripts / f"example_{index + 1:02d}.py"
    path.write_text(code)
    ray_address = "local" if index == 0 else request.getfixturevalue("address")
    run([sys.executable, str(path)], workdir, ray_address, f"README python block {index + 1} ({heading})")


@pytest.mark.parametrize("command", COMMANDS)
def test_cli_command(command, workdir, address):  # noqa: F811 - the fixture, by name
    done = run(cli_args(command), workdir, address, f"ray-durable {command}")
    for text in EXPECTED[command]:
        assert text in done.stdout, f"ray-durable {command}: {text!r} not in\n{done.stdout}"
