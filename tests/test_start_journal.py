"""The start journal's file (``runtime._start_journal``): what a host that opens it again reads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestrations import ShardFileError
from runtime._start_journal import LIMIT, PREALLOCATE, StartJournal


def _reopen(path: Path) -> list[bytes]:
    journal = StartJournal(str(path), sync=True)
    try:
        return journal.open()
    finally:
        journal.close()


def test_records_appended_are_read_back_in_order_and_appends_go_on_after_them(tmp_path):
    path = tmp_path / "shard-00.sqlite-starts"
    journal = StartJournal(str(path), sync=True)
    assert journal.open() == []
    assert os.path.getsize(path) == PREALLOCATE  # appends inside it change no file size
    journal.append([b"one", b"two"])
    journal.append([b"three"])
    journal.close()
    again = StartJournal(str(path), sync=True)
    assert again.open() == [b"one", b"two", b"three"]
    again.append([b"four"])
    again.close()
    assert _reopen(path) == [b"one", b"two", b"three", b"four"]
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"


def test_after_starting_over_only_the_new_generation_is_read(tmp_path):
    path = tmp_path / "j"
    journal = StartJournal(str(path), sync=False)
    journal.open()
    journal.append([b"a" * 100, b"b" * 100, b"c" * 100])
    journal.start_over()
    assert _reopen(path) == [b"a" * 100, b"b" * 100, b"c" * 100]  # nothing written yet: still there
    journal.append([b"d" * 100])  # same size as the first old record: the next old one lines up
    journal.close()
    assert _reopen(path) == [b"d" * 100]


def test_a_torn_or_corrupt_record_ends_what_is_read_and_is_cut_off(tmp_path):
    path = tmp_path / "j"
    journal = StartJournal(str(path), sync=False)
    journal.open()
    journal.append([b"kept", b"torn-record"])
    journal.close()
    with open(path, "r+b") as f:  # the second record's last byte changed: its checksum fails
        f.seek(16 + 4 + 16 + len(b"torn-record") - 1)
        f.write(b"X")
    again = StartJournal(str(path), sync=False)
    assert again.open() == [b"kept"]
    again.append([b"next"])  # written where the torn one was
    again.close()
    assert _reopen(path) == [b"kept", b"next"]


def test_garbage_in_place_of_a_journal_reads_as_empty(tmp_path):
    path = tmp_path / "j"
    path.write_bytes(os.urandom(4096))
    assert _reopen(path) == []


def test_a_full_journal_says_so_and_starting_over_empties_it(tmp_path):
    journal = StartJournal(str(tmp_path / "j"), sync=False)
    journal.open()
    journal.append([b"x" * (LIMIT // 2), b"y" * (LIMIT // 2)])
    assert journal.full
    journal.start_over()
    assert not journal.full
    journal.close()


def test_a_link_planted_in_place_of_the_journal_is_refused(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_bytes(b"")
    (tmp_path / "j").symlink_to(target)
    with pytest.raises(ShardFileError, match="symbolic link"):
        StartJournal(str(tmp_path / "j"), sync=False).open()
