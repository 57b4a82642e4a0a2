"""Replica URLs (issue 14): what ``replica=`` accepts, what it refuses (naming the value), and
where each shard and generation is replicated."""

from __future__ import annotations

import pytest

from orchestrations import DurableValueError
from runtime._replica_target import ReplicaTarget


@pytest.fixture(autouse=True)
def _no_aws_environment(monkeypatch):
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)


def test_s3_with_prefix_endpoint_and_region():
    target = ReplicaTarget.parse("s3://bkt/some/prefix/?endpoint=http://127.0.0.1:9000&region=eu-west-3")
    assert target == ReplicaTarget(
        scheme="s3", bucket="bkt", prefix="some/prefix", endpoint="http://127.0.0.1:9000", region="eu-west-3"
    )
    assert target.shard_key("orders", 3) == "some/prefix/orders/shard-03"
    assert target.generation_key("orders", 3, 7) == "some/prefix/orders/shard-03/gen-7"


def test_s3_without_prefix_uses_aws_defaults():
    target = ReplicaTarget.parse("s3://bkt")
    assert (target.prefix, target.endpoint, target.region) == ("", None, "us-east-1")
    assert target.shard_key("orders", 12) == "orders/shard-12"


def test_s3_endpoint_and_region_from_the_environment(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://generic:1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ap-south-1")
    assert ReplicaTarget.parse("s3://bkt/p").endpoint == "http://generic:1"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://s3-only:2")  # the S3-specific one wins
    monkeypatch.setenv("AWS_REGION", "eu-north-1")
    target = ReplicaTarget.parse("s3://bkt/p")
    assert (target.endpoint, target.region) == ("http://s3-only:2", "eu-north-1")
    # the URL's own parameters win over the environment
    target = ReplicaTarget.parse("s3://bkt/p?endpoint=http://url:3&region=us-west-2")
    assert (target.endpoint, target.region) == ("http://url:3", "us-west-2")


def test_file_target():
    target = ReplicaTarget.parse("file:///srv/replicas/")
    assert (target.scheme, target.path) == ("file", "/srv/replicas")
    assert target.shard_key("h", 0) == "h/shard-00"
    assert target.local_dir(target.generation_key("h", 0, 1)) == "/srv/replicas/h/shard-00/gen-1"


@pytest.mark.parametrize(
    "url",
    [
        "gs://bucket/prefix",
        "s3:///prefix-but-no-bucket",
        "s3://bkt/p?colour=blue",
        "file://relative/path",
        "file:relative",
        "/abs/path/without/scheme",
        "",
        "https://example.com/x",
    ],
)
def test_bad_urls_are_refused_naming_the_value(url):
    with pytest.raises(DurableValueError) as info:
        ReplicaTarget.parse(url)
    assert repr(url) in str(info.value) or (url == "" and "''" in str(info.value))


@pytest.mark.parametrize("value", [None, 42, b"s3://bkt", ["s3://bkt"]])
def test_non_strings_are_refused_naming_the_value(value):
    with pytest.raises(DurableValueError, match=repr(value).replace("[", r"\[").replace("]", r"\]")):
        ReplicaTarget.parse(value)


def test_a_target_is_frozen():
    target = ReplicaTarget.parse("s3://bkt")
    with pytest.raises(AttributeError):
        target.bucket = "other"  # type: ignore[misc]
