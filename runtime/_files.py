"""The files and directories a hub writes: private to their owner, never reached through a link.

A hub's files hold every payload its instances and entities carry, so its directory is
created ``0700`` and every file in it ``0600``, whatever the process umask (a file written
before this rule is tightened when the hub next opens it). A symbolic link planted where a
hub file goes (a lock file pointing at someone's ``~/.bashrc``, say) is refused by name, not
followed: files are opened with ``O_NOFOLLOW``. SQLite creates a database's ``-wal`` and
``-shm`` files with the database file's own permissions, so creating the database file
``0600`` here, before SQLite opens it, covers them too.

``hub.json`` (the hub's shard count and format version) is read and written here, and a
record that is not one (garbage, a missing key, a shard count out of range) is refused with
an error that names the file.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
from typing import Any

from orchestrations import DurableValueError, ShardFileError

DIR_MODE = 0o700
FILE_MODE = 0o600
HUB_FILE = "hub.json"


def private_dir(path: str) -> None:
    """Create directory ``path`` (and missing parents) owner-only; tighten ``path`` itself to
    owner-only if it exists (parents that exist are left as they are: they may be shared)."""
    missing = []
    head = os.path.abspath(path)
    while not os.path.isdir(head):
        missing.append(head)
        head = os.path.dirname(head)
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another shard host of the hub made it first
            os.mkdir(directory, DIR_MODE)
    info = os.stat(path)
    if stat.S_IMODE(info.st_mode) != DIR_MODE and info.st_uid == os.geteuid():
        os.chmod(path, DIR_MODE)  # mkdir's mode is cut by the umask; an old hub's is widened


def open_private(path: str, flags: int) -> int:
    """``os.open(path, flags)`` without following a link at ``path`` (refused with
    :class:`ShardFileError` naming it), creating the file ``0600``; an existing file of ours
    with wider permissions is tightened to ``0600``."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    except OSError as exc:
        if exc.errno == errno.ELOOP or os.path.islink(path):
            raise ShardFileError(path, "is a symbolic link; refusing to follow it (remove it)") from None
        raise
    info = os.fstat(fd)
    if stat.S_IMODE(info.st_mode) != FILE_MODE and info.st_uid == os.geteuid():
        os.fchmod(fd, FILE_MODE)
    return fd


def refuse_links(path: str) -> None:
    """Refuse (:class:`ShardFileError` naming it) a link planted at ``path`` (a SQLite
    database) or at its ``-wal``/``-shm``/``-journal`` files, before anything reads them."""
    for name in (path, path + "-wal", path + "-shm", path + "-journal"):
        if os.path.islink(name):
            raise ShardFileError(name, "is a symbolic link; refusing to follow it (remove it)")


def prepare_database(path: str) -> None:
    """Make ``path`` (a SQLite database) and its existing ``-wal``/``-shm`` files private and
    refuse any of them that is a link, before SQLite opens them (see the module docstring)."""
    os.close(open_private(path, os.O_RDWR | os.O_CREAT))
    for suffix in ("-wal", "-shm", "-journal"):
        extra = path + suffix
        if os.path.lexists(extra):
            os.close(open_private(extra, os.O_RDWR))


def read_hub_file(directory: str) -> dict[str, Any] | None:
    """The hub record in ``directory``, or ``None`` if there is none. Raises
    :class:`DurableValueError` naming the file if it is not a hub record."""
    path = os.path.join(directory, HUB_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
    except FileNotFoundError:
        return None
    except (ValueError, OSError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise DurableValueError(
            f"hub file {path} is not readable as a hub record ({exc}); restore or remove it"
        ) from None
    shards = info.get("num_shards") if isinstance(info, dict) else None
    if isinstance(shards, bool) or not isinstance(shards, int) or not 1 <= shards <= 256:
        raise DurableValueError(
            f"hub file {path} is not a hub record: expected a JSON object with num_shards an int from 1 to 256, "
            f"got {json.dumps(info)[:200]}; restore or remove it"
        )
    return info


def write_hub_file(directory: str, record: dict[str, Any]) -> None:
    """Write the hub record (``0600``, atomically: a crash leaves the old one or the new one)."""
    path = os.path.join(directory, HUB_FILE)
    tmp = path + ".tmp"
    fd = open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(record, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
