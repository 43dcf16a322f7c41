"""An archive in an S3 bucket (or any S3-compatible server), through boto3.

boto3's standard configuration applies: credentials and region from the environment,
profiles or instance metadata, and ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` for an
S3-compatible server. ``endpoint_url=``, ``client=`` (a ready boto3 client) and any other
keyword (passed to ``boto3.client("s3", ...)``) override it. Requests are retried by botocore
in its ``standard`` mode (exponential backoff with jitter) before an error reaches actorkv;
conditional puts use ``If-None-Match: *`` and ``If-Match: <etag>`` as S3 has had since 2024.
Install with ``pip install 'actorkv[s3]'``.
"""

from __future__ import annotations

from typing import Any

from storage.errors import ArchiveError, ArchivePreconditionFailed, InvalidOption

__all__ = ["S3Archive"]

_MISSING_CODES = {"404", "NoSuchKey", "NotFound"}


class S3Archive:
    """Objects under ``prefix`` in ``bucket``."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        client: Any = None,
        endpoint_url: str | None = None,
        **client_options: Any,
    ) -> None:
        """Make (or take) the boto3 client; nothing is sent yet.

        Raises:
            InvalidOption: boto3 is not installed.
        """
        try:
            import boto3  # noqa: PLC0415  # an extra
            from botocore.config import Config  # noqa: PLC0415
            from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415
        except ImportError as exc:
            msg = "an s3:// archive needs boto3: pip install 'actorkv[s3]'"
            raise InvalidOption(msg) from exc
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._client_errors = (ClientError, BotoCoreError)
        self._client_error = ClientError
        if client is None:
            options = {
                "config": Config(
                    retries={"mode": "standard", "max_attempts": 5},
                    connect_timeout=5,
                    read_timeout=30,
                ),
                **client_options,
            }
            if endpoint_url is not None:
                options["endpoint_url"] = endpoint_url
            client = boto3.client("s3", **options)
        self.client = client

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def put(
        self, name: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None
    ) -> str:
        """Store ``data`` under ``name`` (see ``storage.archive.Archive``)."""
        extra: dict[str, str] = {}
        if if_none_match:
            extra["IfNoneMatch"] = "*"
        if if_match is not None:
            extra["IfMatch"] = f'"{if_match}"'
        try:
            reply = self.client.put_object(
                Bucket=self.bucket, Key=self._key(name), Body=data, **extra
            )
        except self._client_errors as exc:
            if _code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                msg = f"s3://{self.bucket}/{self._key(name)}: {exc}"
                raise ArchivePreconditionFailed(msg) from exc
            raise self._failed("write", name, exc) from exc
        return str(reply["ETag"]).strip('"')

    def get(self, name: str) -> bytes:
        """The object's bytes."""
        try:
            reply = self.client.get_object(Bucket=self.bucket, Key=self._key(name))
            data: bytes = reply["Body"].read()
        except self._client_errors as exc:
            raise self._failed("read", name, exc) from exc
        expected = reply.get("ContentLength")
        if expected is not None and expected != len(data):
            msg = (
                f"s3://{self.bucket}/{self._key(name)}: read {len(data)} of {expected} bytes "
                "(a truncated response)"
            )
            raise ArchiveError(msg)
        return data

    def head(self, name: str) -> str | None:
        """The object's etag, or None."""
        try:
            reply = self.client.head_object(Bucket=self.bucket, Key=self._key(name))
        except self._client_errors as exc:
            if _code(exc) in _MISSING_CODES:
                return None
            raise self._failed("read", name, exc) from exc
        return str(reply["ETag"]).strip('"')

    def list(self, prefix: str) -> list[str]:
        """Names starting with ``prefix``, sorted."""
        start = len(self._key(""))
        names: list[str] = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self._key(prefix)
            )
            for page in pages:
                names.extend(item["Key"][start:] for item in page.get("Contents", ()))
        except self._client_errors as exc:
            raise self._failed("list", prefix, exc) from exc
        return sorted(names)

    def delete(self, name: str) -> None:
        """Remove the object, if it exists."""
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(name))
        except self._client_errors as exc:
            raise self._failed("delete", name, exc) from exc

    def _failed(self, what: str, name: str, exc: BaseException) -> ArchiveError:
        return ArchiveError(f"cannot {what} s3://{self.bucket}/{self._key(name)}: {exc}")

    def __repr__(self) -> str:
        return f"S3Archive('s3://{self.bucket}/{self.prefix}')"


def _code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))
