"""hub.json: a hub has an identity on disk before any shard file opens, and lists its shard
files once they all exist (from then on a missing one is refused, never recreated)."""

from __future__ import annotations

import json

import pytest

from orchestrations import DurableValueError, ShardMismatchError
from runtime._hub_file import default_num_shards, open_hub_file, record_shards, recorded_num_shards


def test_a_new_hub_gets_an_identity_first_and_its_file_list_once_created(tmp_path):
    record = open_hub_file(str(tmp_path), "h", 2)
    assert record.create and len(record.hub_id) == 32
    info = json.loads((tmp_path / "hub.json").read_text())
    assert info["hub_id"] == record.hub_id and "shards" not in info
    assert open_hub_file(str(tmp_path), "h", 2) == record  # creation interrupted: still creating
    record_shards(str(tmp_path), "h", 2, record.hub_id)
    reopened = open_hub_file(str(tmp_path), "h", 2)
    assert (reopened.hub_id, reopened.create) == (record.hub_id, False)
    assert json.loads((tmp_path / "hub.json").read_text())["shards"] == ["shard-00.sqlite", "shard-01.sqlite"]


def test_a_hub_json_written_before_identities_gets_one_and_its_file_list(tmp_path):
    (tmp_path / "hub.json").write_text(json.dumps({"name": "h", "num_shards": 3, "format_version": 2}))
    record = open_hub_file(str(tmp_path), "h", 3)
    assert not record.create  # it was written after every shard file existed
    info = json.loads((tmp_path / "hub.json").read_text())
    assert info["hub_id"] == record.hub_id and len(info["shards"]) == 3


def test_another_shard_count_is_refused(tmp_path):
    open_hub_file(str(tmp_path), "h", 2)
    with pytest.raises(ShardMismatchError):
        open_hub_file(str(tmp_path), "h", 4)


@pytest.mark.parametrize(
    "content",
    ["not json", "[1, 2]", '{"num_shards": "2"}', '{"num_shards": 2, "hub_id": 7}',
     '{"num_shards": 2, "hub_id": "x", "shards": ["shard-00.sqlite"]}'],
)
def test_a_garbled_hub_json_is_refused_by_name(tmp_path, content):
    (tmp_path / "hub.json").write_text(content)
    with pytest.raises(DurableValueError, match=r"hub\.json"):
        open_hub_file(str(tmp_path), "h", 2)
    assert (tmp_path / "hub.json").read_text() == content  # left as it is


@pytest.mark.parametrize(
    ("cpus", "expected"),
    [(1, 1), (2, 1), (3, 1), (4, 2), (5.5, 2), (16.0, 8), (32, 16), (64, 16), (0, 1), (0.5, 1), (float("nan"), 1),
     (True, 1)],
)
def test_the_default_shard_count_is_one_per_two_cpus_from_1_to_16(cpus, expected):
    assert default_num_shards(cpus) == expected


def test_the_recorded_shard_count_is_read_whatever_the_default(tmp_path):
    assert recorded_num_shards(str(tmp_path)) is None  # a hub not created yet
    open_hub_file(str(tmp_path), "h", 3)
    assert recorded_num_shards(str(tmp_path)) == 3  # even while its creation is unfinished
    record = open_hub_file(str(tmp_path), "h", recorded_num_shards(str(tmp_path)) or 0)
    record_shards(str(tmp_path), "h", 3, record.hub_id)
    assert recorded_num_shards(str(tmp_path)) == 3


def test_a_garbled_hub_json_is_refused_when_reading_its_shard_count(tmp_path):
    (tmp_path / "hub.json").write_text('{"num_shards": 0}')
    with pytest.raises(DurableValueError, match=r"hub\.json"):
        recorded_num_shards(str(tmp_path))
