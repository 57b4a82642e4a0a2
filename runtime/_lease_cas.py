"""The shard lease and its rules over a compare-and-swap store (issue 14): the backends
(:mod:`runtime._lease_file`, :mod:`runtime._lease_s3`) supply two primitives, a read and a
conditional write; when a host may take a shard, renew or release it is decided here once."""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol

from orchestrations._errors import LeaseHeldError, LeaseLostError, ReplicaError


@dataclass(frozen=True, slots=True)
class Lease:
    """One shard's lease as stored. ``owner`` is the Ray node id, ``host`` its host name and
    ``pid`` the shard host's process; ``generation`` (>= 1) grows by one on every takeover;
    ``data_generation`` is the generation whose replica holds the newest complete copy (0: no
    data replicated yet); ``token`` is the store's version of the object (an S3 ETag, a counter
    in a file target) that the next compare-and-swap must match, and is not part of the JSON."""

    hub: str
    index: int
    owner: str
    host: str
    pid: int
    generation: int
    expires_at: float
    released: bool = False
    data_generation: int = 0
    token: str = ""

    def to_json(self) -> bytes:
        """The stored form (everything but the token)."""
        fields = asdict(self)
        del fields["token"]
        return json.dumps(fields, sort_keys=True).encode()

    @classmethod
    def from_json(cls, blob: bytes, token: str) -> Lease:
        """The lease stored as ``blob`` whose version is ``token``. Fields a later version may
        add are ignored; a blob that is not a lease raises ReplicaError (nothing is overwritten)."""
        try:
            fields: dict[str, Any] = json.loads(blob)
            known = {name: fields[name] for name in cls.__dataclass_fields__ if name in fields and name != "token"}
            return cls(**known, token=token)
        except (ValueError, TypeError) as exc:
            raise ReplicaError("lease object", f"is not a lease ({exc}): {blob[:200]!r}") from None

    def held_error(self) -> LeaseHeldError:
        """The error that says this lease's holder has the shard."""
        return LeaseHeldError(self.hub, self.index, self.owner, self.host, self.pid, self.generation, self.expires_at)


class LeaseStore(Protocol):
    """The leases of one replica target."""

    def read(self, hub: str, index: int) -> Lease | None:
        """The shard's lease, or None if it never had one."""
        ...

    def acquire(
        self, hub: str, index: int, owner: str, host: str, pid: int, ttl: float, now: float | None = None
    ) -> tuple[Lease, Lease | None]:
        """Take the shard: (the new lease, the previous one or None). LeaseHeldError if held."""
        ...

    def renew(self, lease: Lease, ttl: float, data_generation: int | None = None) -> Lease:
        """Extend ``lease`` by ``ttl`` from now; LeaseLostError if it was taken."""
        ...

    def release(self, lease: Lease) -> None:
        """Mark ``lease`` released (best effort: a lost swap is ignored)."""
        ...


class _ConflictError(Exception):
    """A compare-and-swap found another version than the one it expected."""


class CasLeaseStore:
    """The lease rules over a backend's two primitives: ``_get`` (blob and token, or None) and
    ``_put`` (write if the current token is ``expected``, None meaning "does not exist";
    :class:`_ConflictError` otherwise; returns the new token)."""

    def _get(self, hub: str, index: int) -> tuple[bytes, str] | None:
        raise NotImplementedError

    def _put(self, hub: str, index: int, blob: bytes, expected: str | None) -> str:
        raise NotImplementedError

    def read(self, hub: str, index: int) -> Lease | None:
        """The shard's lease, or None if it never had one."""
        found = self._get(hub, index)
        return None if found is None else Lease.from_json(*found)

    def acquire(
        self, hub: str, index: int, owner: str, host: str, pid: int, ttl: float, now: float | None = None
    ) -> tuple[Lease, Lease | None]:
        """Take shard ``index`` of ``hub`` for ``owner``/``host``/``pid`` for ``ttl`` seconds:
        returns the new lease and the previous one (None if the shard never had one). A shard
        with no lease starts at generation 1; a released, expired, or same-node-same-host lease
        whose pid is not alive here is taken over at generation + 1, keeping its
        ``data_generation``. Raises LeaseHeldError naming the holder otherwise, and when another
        host won the race to write the lease."""
        now = time.time() if now is None else now
        previous = self.read(hub, index)
        if previous is not None and not _takeable(previous, owner, host, now):
            raise previous.held_error()
        lease = Lease(
            hub=hub,
            index=index,
            owner=owner,
            host=host,
            pid=pid,
            generation=1 if previous is None else previous.generation + 1,
            expires_at=now + ttl,
            data_generation=0 if previous is None else previous.data_generation,
        )
        try:
            token = self._put(hub, index, lease.to_json(), None if previous is None else previous.token)
        except _ConflictError:
            winner = self.read(hub, index)
            if winner is None:  # deleted under us: nobody holds it, but do not loop here
                raise ReplicaError(f"lease of shard {index} of {hub!r}", "vanished while being taken") from None
            raise winner.held_error() from None
        return replace(lease, token=token), previous

    def renew(self, lease: Lease, ttl: float, data_generation: int | None = None) -> Lease:
        """Extend ``lease`` to ``ttl`` seconds from now (and record ``data_generation`` if
        given) by compare-and-swap on its token. LeaseLostError if the stored lease is no
        longer this one (another host took it, or it was changed under us)."""
        current = self.read(lease.hub, lease.index)
        if current is None or current.generation != lease.generation or current.token != lease.token:
            raise LeaseLostError(lease.hub, lease.index, lease.generation, _lost_reason(current))
        renewed = replace(
            lease,
            expires_at=time.time() + ttl,
            data_generation=lease.data_generation if data_generation is None else data_generation,
        )
        try:
            token = self._put(lease.hub, lease.index, renewed.to_json(), lease.token)
        except _ConflictError:
            raise LeaseLostError(
                lease.hub, lease.index, lease.generation, _lost_reason(self.read(lease.hub, lease.index))
            ) from None
        return replace(renewed, token=token)

    def release(self, lease: Lease) -> None:
        """Mark ``lease`` released so the next host may take the shard at once. Best effort: if
        the lease changed meanwhile (someone took it) nothing is written and nothing raised."""
        with contextlib.suppress(_ConflictError):
            self._put(lease.hub, lease.index, replace(lease, released=True).to_json(), lease.token)


def _takeable(previous: Lease, owner: str, host: str, now: float) -> bool:
    if previous.released or previous.expires_at <= now:
        return True
    return previous.owner == owner and previous.host == host and not _pid_alive(previous.pid)


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (a process of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _lost_reason(current: Lease | None) -> str:
    if current is None:
        return "the lease object is gone"
    return (
        f"it is now generation {current.generation}, held by node {current.owner} "
        f"(host {current.host}, pid {current.pid})"
    )
