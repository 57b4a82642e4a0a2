"""A real S3 stand-in for the replica tests: ``moto_server`` on 127.0.0.1 (no network), started
once per session, its requests serialised so conditional writes are atomic as on S3
(``tests/_moto_serialised.py``). Import the fixture into a test module (``from tests.s3_server import
s3_server``) or a conftest. moto 5 honours conditional writes (``If-None-Match``/``If-Match``),
which the shard leases rely on."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from .helpers import free_port

#: dummy credentials: moto accepts any, and boto3 and Litestream refuse to sign without some
_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


@dataclass(frozen=True)
class S3Server:
    """A running moto server: its ``endpoint`` URL and a ``bucket`` created in it."""

    endpoint: str
    bucket: str
    region: str = "us-east-1"

    def url(self, prefix: str) -> str:
        """A ``replica=`` URL for ``prefix`` in the bucket, naming the endpoint."""
        return f"s3://{self.bucket}/{prefix}?endpoint={self.endpoint}&region={self.region}"


def _moto_command() -> list[str]:
    """moto_server, its requests serialised (tests/_moto_serialised.py says why)."""
    try:
        import moto.server  # noqa: F401
    except ImportError:
        pytest.skip("moto_server is not installed (pip install 'moto[server]', part of the dev extra)")
    return [sys.executable, os.path.join(os.path.dirname(__file__), "_moto_serialised.py")]


def _wait_until_up(endpoint: str, proc: subprocess.Popen[bytes], deadline: float) -> None:
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"moto_server exited with status {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError("moto_server did not answer in 30 s") from None
            time.sleep(0.05)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto_server on a free port of 127.0.0.1 with a bucket, and dummy AWS credentials in the
    environment (inherited by Litestream children); stopped at the end of the session."""
    command = _moto_command()
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    saved = {k: os.environ.get(k) for k in _CREDENTIALS}
    os.environ.update(_CREDENTIALS)
    with open(log, "wb") as out:
        proc = subprocess.Popen([*command, "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT)
    try:
        endpoint = f"http://127.0.0.1:{port}"
        _wait_until_up(endpoint, proc, time.monotonic() + 30)
        import boto3

        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="replicas")
        yield S3Server(endpoint=endpoint, bucket="replicas")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
