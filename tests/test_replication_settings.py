"""``TaskHub(replica=..., durability=..., lease_seconds=...)`` checked before anything starts
(``runtime._client_args.replication_settings``), and ``hub.json`` holding a hub to the replica
it was created with (``runtime._hub_file.open_hub_file``). No Ray needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrations import DurableValueError
from runtime._client_args import replication_settings
from runtime._hub_file import open_hub_file, record_shards

S3 = "s3://bucket/prefix"


@pytest.mark.parametrize(
    ("replica", "durability", "expected"),
    [
        (None, None, ("FULL", "local")),
        (None, "local", ("FULL", "local")),
        (None, "full", ("FULL", "local")),
        (None, "normal", ("NORMAL", "local")),
        (S3, None, ("FULL", "replicated")),
        (S3, "replicated", ("FULL", "replicated")),
        ("file:///srv/replica", "async", ("FULL", "async")),
    ],
)
def test_each_mode_maps_to_its_settings(replica: str | None, durability: str | None, expected: tuple[str, str]) -> None:
    assert replication_settings(replica, durability, 15.0) == expected


@pytest.mark.parametrize(
    ("replica", "durability", "lease", "named"),
    [
        (None, "replicated", 15.0, "needs a replica"),
        (None, "async", 15.0, "needs a replica"),
        (S3, "local", 15.0, "'local'"),
        (S3, "normal", 15.0, "'normal'"),
        (None, "fast", 15.0, "'fast'"),
        (S3, "replicated", 0.5, "0.5"),
        (S3, "replicated", True, "True"),
        ("http://bucket/x", None, 15.0, "http://bucket/x"),
        ("file://relative/path", None, 15.0, "relative"),
        (42, None, 15.0, "42"),
    ],
)
def test_a_setting_that_does_not_fit_is_refused_by_name(replica: object, durability: object, lease: object,
                                                        named: str) -> None:
    with pytest.raises(DurableValueError, match=named.replace(".", r"\.")):
        replication_settings(replica, durability, lease)


def test_a_hub_opens_only_with_the_replica_it_was_created_with(tmp_path: Path) -> None:
    directory = str(tmp_path / "h")
    record = open_hub_file(directory, "h", 2, S3)
    record_shards(directory, "h", 2, record.hub_id, S3)
    assert open_hub_file(directory, "h", 2, S3).hub_id == record.hub_id
    with pytest.raises(DurableValueError, match="created with replica='s3://bucket/prefix'"):
        open_hub_file(directory, "h", 2, None)
    with pytest.raises(DurableValueError, match="not with replica='s3://other/x'"):
        open_hub_file(directory, "h", 2, "s3://other/x")
    local = str(tmp_path / "local")
    open_hub_file(local, "local", 1)
    with pytest.raises(DurableValueError, match="created without a replica"):
        open_hub_file(local, "local", 1, S3)
