"""Leases in an S3 replica target: the object ``<shard_key>/lease`` (JSON), created with
``If-None-Match: *`` and changed with ``If-Match: <etag>``; a ``PreconditionFailed`` (or a
``ConditionalRequestConflict`` from two concurrent conditional writes) means another host wrote
it first. The client uses the target's endpoint and region and the usual AWS credentials."""

from __future__ import annotations

from typing import Any

from orchestrations._errors import ReplicaError

from ._lease_cas import CasLeaseStore, _ConflictError
from ._replica_target import ReplicaTarget

#: S3's answers to a conditional write that lost
_CONFLICT_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "412", "409"})


class S3LeaseStore(CasLeaseStore):
    """The lease store of an S3 target; the token is the object's ETag."""

    def __init__(self, target: ReplicaTarget) -> None:
        try:
            import boto3
            from botocore.exceptions import ClientError
        except ImportError:
            raise ReplicaError(
                "S3 lease store", "boto3 is not installed; pip install 'ray-durable[replica]'"
            ) from None
        self.target = target
        self._client_error = ClientError
        self._s3: Any = boto3.client("s3", endpoint_url=target.endpoint, region_name=target.region)

    def _key(self, hub: str, index: int) -> str:
        return f"{self.target.shard_key(hub, index)}/lease"

    def _get(self, hub: str, index: int) -> tuple[bytes, str] | None:
        try:
            answer = self._s3.get_object(Bucket=self.target.bucket, Key=self._key(hub, index))
        except self._client_error as exc:
            if _code(exc) in ("NoSuchKey", "404"):
                return None
            raise ReplicaError(f"lease {self._key(hub, index)} in {self.target.describe()}", str(exc)) from None
        return answer["Body"].read(), answer["ETag"]

    def _put(self, hub: str, index: int, blob: bytes, expected: str | None) -> str:
        condition = {"IfNoneMatch": "*"} if expected is None else {"IfMatch": expected}
        try:
            answer = self._s3.put_object(
                Bucket=self.target.bucket,
                Key=self._key(hub, index),
                Body=blob,
                ContentType="application/json",
                **condition,
            )
        except self._client_error as exc:
            if _code(exc) in _CONFLICT_CODES:
                raise _ConflictError from None
            raise ReplicaError(f"lease {self._key(hub, index)} in {self.target.describe()}", str(exc)) from None
        return str(answer["ETag"])


def _code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
