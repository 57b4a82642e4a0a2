"""A shard host's start journal: a client's fresh start made durable by one small append.

A client's call returns once its effect is committed. For a start, committing it in the shard's
SQLite file means waiting for the file's lock (a turn's commit holds it) and then for a
transaction of its own: a loop of ``start_new`` paid both for every start while the hub was busy
running the instances it had started before. The journal is a second, much cheaper way to make
a start durable: the start is appended to a file next to the shard's and synced (one ``pwrite``
and one ``fdatasync`` on a preallocated file: ~0.2 ms here, whatever a turn is doing), the
caller is answered, and the start goes to the turn loop as any message does. The turn that
applies it commits it to the shard file; once every start in the journal is committed, the
journal starts over (nothing is written for that: later records carry a new generation).

Only *fresh* starts go there (a client's start of an id it made up: see ``Message.fresh``), so
nothing needs to be looked up to accept one. Starts that arrive together (``asyncio.gather`` of
``start_new_async``) share one append and one sync.

After a crash, the host that opens the file again reads the journal's records of its current
generation: those whose start is not in the shard file (no instance row with its execution id,
and no ``start:`` key of it in ``delivered``, which a later execution or a purge leaves) go to
the turn loop again. So a start is never lost once its caller was answered, and never applied
twice.

Record format: a 16-byte header (magic, generation, payload length, CRC-32 of the generation
and payload; little-endian ``uint32`` each), then the payload (``Message.to_bytes``). Reading
stops at the first record whose magic, generation or checksum does not match the first
record's: a torn append, or what an earlier generation left behind it.
"""

from __future__ import annotations

import os
import struct
import zlib

from ._files import open_private

#: a record's header: magic, generation, payload length, CRC-32 of generation + payload
_HEAD = struct.Struct("<IIII")
_MAGIC = 0x4A545352  # "RSTJ"
#: bytes reserved when the file is (re)made: appends inside them change no file size, so a
#: sync writes the data alone
PREALLOCATE = 1 << 20
#: past this many bytes the journal takes no more starts until all it holds are committed
#: (they then go through the turn loop, as when there is no journal)
LIMIT = 16 << 20


class StartJournal:
    """The journal file of one shard host; used from the host's event loop only.

    ``sync``: whether an append waits for the disk (``fdatasync``), as the shard file's commits
    do unless its ``synchronous`` setting is below ``FULL``."""

    def __init__(self, path: str, sync: bool) -> None:
        self.path = path
        self._sync = sync
        self._fd: int | None = None
        self._generation = 1
        self._offset = 0

    @property
    def at_start(self) -> bool:
        """Whether the next append writes the file's first record (of a new generation: what
        the file held before is never read again once it is on disk)."""
        return self._offset == 0

    @property
    def full(self) -> bool:
        """Whether the journal has reached :data:`LIMIT` (it takes no more starts until it
        starts over)."""
        return self._offset >= LIMIT

    def open(self) -> list[bytes]:
        """Open the file (created if missing) and return the payloads of the records of its
        current generation, oldest first. Whatever follows them (a torn append, an older
        generation's records) is cut off; appends go on after them."""
        fd = open_private(self.path, os.O_RDWR | os.O_CREAT)
        self._fd = fd
        size = os.fstat(fd).st_size
        payloads, end, generation = read_records(os.pread(fd, size, 0) if size else b"")
        self._generation, self._offset = (generation if payloads else generation + 1), end
        os.ftruncate(fd, end)
        os.posix_fallocate(fd, 0, max(PREALLOCATE, end))
        os.fsync(fd)
        return payloads

    def append(self, payloads: list[bytes]) -> None:
        """Append one record per payload and (with ``sync``) wait until they are on disk.
        Raises ``OSError`` if they could not be written; the journal is then as it was."""
        assert self._fd is not None, "the journal is not open"
        data = b"".join(self._record(p) for p in payloads)
        written = os.pwrite(self._fd, data, self._offset)
        if written != len(data):
            raise OSError(f"short write to {self.path}: {written} of {len(data)} bytes")
        if self._sync:
            os.fdatasync(self._fd)
        self._offset += len(data)

    def start_over(self) -> None:
        """Every start in the journal is committed to the shard file: the next append writes
        at the beginning, under a new generation (the records left behind it are never read)."""
        self._generation = (self._generation + 1) & 0xFFFFFFFF or 1
        self._offset = 0

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _record(self, payload: bytes) -> bytes:
        crc = zlib.crc32(payload, zlib.crc32(self._generation.to_bytes(4, "little")))
        return _HEAD.pack(_MAGIC, self._generation, len(payload), crc) + payload


def read_records(data: bytes) -> tuple[list[bytes], int, int]:
    """The payloads of the records at the start of ``data`` that share the first record's
    generation, where they end, and that generation (0 if there is no valid record)."""
    payloads: list[bytes] = []
    offset, generation = 0, 0
    while offset + _HEAD.size <= len(data):
        magic, gen, length, crc = _HEAD.unpack_from(data, offset)
        start = offset + _HEAD.size
        payload = data[start:start + length]
        if magic != _MAGIC or (payloads and gen != generation) or len(payload) != length:
            break
        if zlib.crc32(payload, zlib.crc32(gen.to_bytes(4, "little"))) != crc:
            break
        payloads.append(payload)
        generation, offset = gen, start + length
    return payloads, offset, generation
