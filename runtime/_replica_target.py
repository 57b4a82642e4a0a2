"""Where a hub's shards are replicated: a parsed ``replica=`` URL (issue 14).

Two kinds of target: ``s3://bucket[/prefix][?endpoint=...&region=...]`` (any S3-compatible
store; the endpoint and region fall back to the usual AWS environment variables) and
``file:///absolute/dir`` (a directory, for one machine or a shared mount, and for tests).
Every shard has its own key under the target, ``<prefix>/<hub>/shard-NN``; each lease
generation G writes its replica under ``<that>/gen-G``, and the lease object sits beside them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from orchestrations._errors import DurableValueError, describe

#: the region a target uses when neither the URL nor the environment names one
DEFAULT_REGION = "us-east-1"


@dataclass(frozen=True, slots=True)
class ReplicaTarget:
    """A parsed replica URL. ``scheme`` is ``"s3"`` or ``"file"``; for S3, ``bucket`` and
    ``prefix`` (no leading or trailing slash, may be empty), ``endpoint`` (None: AWS itself) and
    ``region``; for a file target, ``path`` is the absolute directory."""

    scheme: str
    bucket: str = ""
    prefix: str = ""
    endpoint: str | None = None
    region: str = DEFAULT_REGION
    path: str = ""

    @classmethod
    def parse(cls, url: object) -> ReplicaTarget:
        """Parse ``url``; DurableValueError naming the value for anything but a well-formed
        ``s3://bucket/...`` or ``file:///absolute/path`` string."""
        if not isinstance(url, str) or not url:
            raise DurableValueError(
                f"replica must be an 's3://bucket/prefix' or 'file:///dir' URL, got {describe(url)}"
            )
        parts = urlsplit(url)
        if parts.scheme == "s3":
            return cls._parse_s3(url, parts.netloc, parts.path, parts.query)
        if parts.scheme == "file":
            if parts.netloc not in ("", "localhost") or not parts.path.startswith("/") or parts.query:
                raise DurableValueError(f"replica {url!r}: a file replica must be 'file:///absolute/dir'")
            return cls(scheme="file", path=os.path.normpath(parts.path))
        raise DurableValueError(f"replica {url!r}: the scheme must be 's3' or 'file'")

    @classmethod
    def _parse_s3(cls, url: str, bucket: str, path: str, query: str) -> ReplicaTarget:
        if not bucket:
            raise DurableValueError(f"replica {url!r}: the S3 URL names no bucket")
        params = parse_qs(query, keep_blank_values=True)
        unknown = set(params) - {"endpoint", "region"}
        if unknown:
            raise DurableValueError(f"replica {url!r}: unknown parameter(s) {sorted(unknown)}")
        endpoint = (
            _last(params, "endpoint") or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        )
        region = (
            _last(params, "region")
            or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
            or DEFAULT_REGION
        )
        return cls(scheme="s3", bucket=bucket, prefix=path.strip("/"), endpoint=endpoint or None, region=region)

    def shard_key(self, hub: str, index: int) -> str:
        """The key (S3) or relative directory (file) of shard ``index`` of ``hub``:
        ``<prefix>/<hub>/shard-NN``, two digits as the shard files are named."""
        key = f"{hub}/shard-{index:02d}"
        return f"{self.prefix}/{key}" if self.prefix else key

    def generation_key(self, hub: str, index: int, generation: int) -> str:
        """Where lease generation ``generation`` of the shard writes its replica."""
        return f"{self.shard_key(hub, index)}/gen-{generation}"

    def local_dir(self, key: str) -> str:
        """The directory of ``key`` under a file target."""
        return os.path.join(self.path, key)

    def describe(self) -> str:
        """The target as a URL, for messages (no credentials are ever part of it)."""
        if self.scheme == "file":
            return f"file://{self.path}"
        where = f" at {self.endpoint}" if self.endpoint else ""
        return f"s3://{self.bucket}/{self.prefix}{where}"


def _last(params: dict[str, list[str]], name: str) -> str | None:
    values = params.get(name)
    return values[-1] if values else None
