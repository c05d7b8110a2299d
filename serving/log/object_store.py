"""An S3 bucket and prefix: where every replica's captured traffic and feedback claims meet.

Through boto3, MLflow's own S3 client, so S3, SeaweedFS, MinIO, Ceph and GCS's interoperability API all
work. Endpoint and credentials come the way every AWS tool takes them (AWS_ENDPOINT_URL_S3 or
AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_SHARED_CREDENTIALS_FILE, an
instance role), so none of them is a setting of this project, and none reaches a log or an MLflow run.
boto3 is imported only when a store is configured: it costs each worker ~35 MB and 0.3 s to load.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse


class StoreError(RuntimeError):
    """The store did not do what was asked (down, slow, refusing the credentials, no such bucket);
    `status`: its HTTP status when it answered."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def region(env: Mapping[str, str]) -> str:
    """The region to sign with: the AWS_* variables', else us-east-1 (self-hosted stores ignore it)."""
    return env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"


class ObjectStore:
    def __init__(self, url: str, timeout: float = 5, attempts: int = 2, env: dict[str, str] | None = None) -> None:
        """`url`: s3://<bucket>[/<prefix>]; `env`: AWS_* variables to use instead of this process's."""
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"not an s3://<bucket>/<prefix> URL: {url!r}")
        self.url = url.rstrip("/")
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self._timeout, self._attempts, self._env = timeout, attempts, env
        self._made: Any = None

    @property
    def _client(self) -> Any:
        """Made on first use, in the process that uses it: the server builds its stores before gunicorn
        forks and gevent patches, and a client's pools and locks belong after both."""
        if self._made is None:
            import boto3
            from botocore.config import Config

            env = self._env
            explicit = {}
            if env is not None:
                explicit = {
                    "endpoint_url": env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL"),
                    "aws_access_key_id": env.get("AWS_ACCESS_KEY_ID"),
                    "aws_secret_access_key": env.get("AWS_SECRET_ACCESS_KEY"),
                }
            self._made = boto3.session.Session().client(
                "s3",
                region_name=region(os.environ if env is None else env),
                **explicit,
                config=Config(
                    connect_timeout=self._timeout,
                    read_timeout=self._timeout,
                    retries={"max_attempts": self._attempts, "mode": "standard"},
                    s3={"addressing_style": "path"},  # what self-hosted stores answer; S3 itself accepts it too
                ),
            )
        return self._made

    def key(self, *parts: str) -> str:
        return "/".join(part for part in (self.prefix, *parts) if part)

    def _call(self, operation: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self._client, operation)(Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            message = f"{self.bucket}: {operation} answered {status} {error.get('Code', '')}".strip()
            raise StoreError(message, status) from exc
        except BotoCoreError as exc:  # no connection, timeout, no credentials
            raise StoreError(f"{self.bucket}: {operation} failed: {exc}") from exc

    def put(self, key: str, body: bytes) -> None:
        """`body` under `key`, whole or not at all (one PUT)."""
        self._call("put_object", Key=key, Body=body)

    def upload(self, path: Path, key: str) -> int:
        """The file's bytes under `key`; its size."""
        body = Path(path).read_bytes()
        self.put(key, body)
        return len(body)

    def put_if_absent(self, key: str, body: bytes = b"") -> bool:
        """True if this call made `key`; False if it existed (a conditional write: If-None-Match: *)."""
        try:
            self._call("put_object", Key=key, Body=body, IfNoneMatch="*")
        except StoreError as exc:
            if exc.status in (409, 412):  # 409: a concurrent conditional write of the same key
                return False
            raise
        return True

    def get(self, key: str) -> bytes:
        return self._call("get_object", Key=key)["Body"].read()

    def keys(self, prefix: str) -> Iterator[str]:
        """Every key under `prefix` (a full key prefix, see `key`)."""
        token: dict[str, str] = {}
        while True:
            page = self._call("list_objects_v2", Prefix=prefix, **token)
            yield from (item["Key"] for item in page.get("Contents", ()))
            if not page.get("IsTruncated"):
                return
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def ensure_bucket(self) -> None:
        try:
            self._call("head_bucket")
        except StoreError as exc:
            if exc.status is None:  # no answer: nothing to create it on
                raise
            self._call("create_bucket")
