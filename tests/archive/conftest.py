"""Archives for the shipping and restore tests: a directory, and a real S3 server on loopback.

The S3 server is moto's ``ThreadedMotoServer`` bound to 127.0.0.1 (never its default
0.0.0.0), started once per session; each test gets a bucket of its own. boto3 finds it
through its standard configuration (``AWS_ENDPOINT_URL_S3`` and dummy credentials in the
environment), the way a user's S3-compatible server is found.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("boto3", reason="the s3 extra (boto3) is not installed")
moto_server = pytest.importorskip("moto.server", reason="moto[server] is not installed")

_buckets = itertools.count()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return s3_endpoint


@pytest.fixture(params=["file", "s3"])
def archive_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """``file://`` and ``s3://`` archives: the same suite runs against both."""
    if request.param == "file":
        return f"file://{tmp_path / 'archive'}"
    request.getfixturevalue("s3_env")
    import boto3

    bucket = f"actorkv-test-{next(_buckets)}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    return f"s3://{bucket}/stores/one"
