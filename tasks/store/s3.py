"""The S3 backend (AWS S3 or an S3-compatible server such as SeaweedFS), through boto3."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from tasks.errors import ObjectNotFound, PreconditionFailed, StoreError
from tasks.store.base import Backend
from tasks.store.config import StoreConfig
from tasks.store.s3_download import ranged_download
from tasks.store.s3_upload import upload_file
from tasks.store.uri import validate_key


def _secret(v) -> str | None:
    return v.get_secret_value() if v is not None else None


class S3Backend(Backend):
    """An S3 bucket (and optional prefix) on AWS S3 or an S3-compatible server.

    Credentials come from the configuration or, when absent there, boto3's standard chain.
    Transient errors are retried by botocore (``standard`` mode, ``max_attempts``); files above
    ``multipart_chunk_bytes`` are transferred in parts, ``max_concurrency`` at a time: uploads by
    tasks/store/s3_upload.py, downloads by tasks/store/s3_download.py (both hashed in the transfer).
    """

    def __init__(self, cfg: StoreConfig, bucket: str, prefix: str = ""):
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix
        self.root_uri = f"s3://{bucket}/{prefix}"
        self.endpoint_url = cfg.endpoint_url
        self._secrets = [
            s for s in (_secret(cfg.access_key_id), _secret(cfg.secret_access_key), _secret(cfg.session_token)) if s
        ]
        session = boto3.session.Session(
            aws_access_key_id=_secret(cfg.access_key_id),
            aws_secret_access_key=_secret(cfg.secret_access_key),
            aws_session_token=_secret(cfg.session_token),
            region_name=cfg.region,
        )
        s3_opts: dict[str, Any] = {}
        if cfg.endpoint_url:
            # Virtual-host addressing needs DNS for bucket.host, which self-hosted servers lack.
            s3_opts["addressing_style"] = "path"
        # No SigV4 payload hash (on plain HTTP botocore would sha256 every body; SeaweedFS 4.48 does
        # not check it): integrity comes from the x-amz-checksum-* header, which is signed and which
        # the server verifies (botocore's CRC32; put_file sends cfg.upload_checksum per part).
        s3_opts["payload_signing_enabled"] = False
        self.client = session.client(
            "s3",
            endpoint_url=cfg.endpoint_url,
            config=Config(
                retries={"max_attempts": cfg.max_attempts, "mode": "standard"},
                max_pool_connections=max(10, cfg.max_concurrency + 2),
                s3=s3_opts,
            ),
        )
        self.max_attempts = cfg.max_attempts
        self.upload_checksum = cfg.upload_checksum
        self.transfer_config = TransferConfig(
            multipart_threshold=cfg.multipart_chunk_bytes,
            multipart_chunksize=cfg.multipart_chunk_bytes,
            max_concurrency=cfg.max_concurrency,
        )

    def __repr__(self) -> str:
        return f"S3Backend({self.root_uri!r}, endpoint_url={self.endpoint_url!r})"

    def _key(self, key: str) -> str:
        return self.prefix + validate_key(key)

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def _scrub(self, text: str) -> str:
        for s in self._secrets:
            text = text.replace(s, "***")
        return text

    def _bucket_exists(self) -> bool | None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return True
        except Exception as e:  # noqa: BLE001 - only refines an error message
            code = getattr(e, "response", {}).get("Error", {}).get("Code")
            return False if code in ("404", "NoSuchBucket", "NotFound") else None

    def _error(self, e: Exception, op: str, key: str | None) -> StoreError:
        """Translate a boto3/botocore exception into a driftloop error (credentials scrubbed)."""
        from botocore.exceptions import ClientError

        where = self.url(key) if key is not None else self.root_uri
        if isinstance(e, ClientError):
            err = e.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            msg = err.get("Message", "")
            if code == "NoSuchBucket":
                return ObjectNotFound(f"S3 bucket {self.bucket!r} does not exist ({op} {where})")
            if code in ("NoSuchKey", "404", "NotFound") or status == 404:
                if self._bucket_exists() is False:
                    return ObjectNotFound(f"S3 bucket {self.bucket!r} does not exist ({op} {where})")
                return ObjectNotFound(f"{where} does not exist ({op})")
            if code == "PreconditionFailed" or status == 412:
                return PreconditionFailed(f"{op} {where}: precondition failed (object exists or changed)")
            detail = f"{code} (HTTP {status}): {msg}"
            if status == 403:
                detail += " (check the store's S3 credentials and their permissions)"
        else:
            text = str(e)
            if "NoSuchBucket" in text:  # S3UploadFailedError flattens the ClientError into text
                return ObjectNotFound(f"S3 bucket {self.bucket!r} does not exist ({op} {where})")
            detail = f"{type(e).__name__}: {text}"
        # Only the server's/botocore's text is scrubbed: the URI is ours, and an access key id that
        # happens to be a plain word ("driftloop") must not mangle it.
        return StoreError(f"S3 {op} {where} failed: {self._scrub(detail)}")

    def _call(self, op: str, key: str | None, fn, /, **kwargs):
        try:
            return fn(**kwargs)
        except Exception as e:  # noqa: BLE001 - every failure becomes a StoreError subclass
            if isinstance(e, StoreError):
                raise
            raise self._error(e, op, key) from None  # the cause could carry request details

    def put_bytes(self, key: str, data: bytes, if_absent: bool = False, if_match: str | None = None) -> None:
        k = self._key(key)
        if if_absent and if_match is not None:
            raise StoreError(f"put {self.url(key)}: if_absent and if_match are exclusive")
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": k, "Body": bytes(data)}
        if if_absent:
            kwargs["IfNoneMatch"] = "*"
        if if_match is not None:
            kwargs["IfMatch"] = if_match
        try:
            self._call("put", key, self.client.put_object, **kwargs)
        except PreconditionFailed:
            # botocore retries a PUT whose response was lost; the retry then fails its own
            # condition although the first attempt wrote exactly these bytes: that is a success.
            try:
                if self.get_bytes(key) == bytes(data):
                    return
            except ObjectNotFound:
                pass
            raise

    def get_bytes(self, key: str) -> bytes:
        resp = self._call("get", key, self.client.get_object, Bucket=self.bucket, Key=self._key(key))
        return self._call("get", key, resp["Body"].read)

    def get_with_token(self, key: str) -> tuple[bytes, str]:
        resp = self._call("get", key, self.client.get_object, Bucket=self.bucket, Key=self._key(key))
        return self._call("get", key, resp["Body"].read), resp["ETag"]

    def put_file(self, key: str, path: str | os.PathLike) -> tuple[str, int]:
        """Upload ``path`` (multipart above one chunk, each part's checksum verified by the server),
        sha256-hashed in the same pass (tasks/store/s3_upload.py); returns (sha256 hex, size)."""
        if not Path(path).is_file():
            raise ObjectNotFound(f"local file {str(path)!r} does not exist (uploading to {self.url(key)})")
        return self._call(
            "upload",
            key,
            upload_file,
            client=self.client,
            bucket=self.bucket,
            key=self._key(key),
            path=path,
            part_bytes=self.transfer_config.multipart_chunksize,
            concurrency=self.transfer_config.max_concurrency,
            checksum=self.upload_checksum,
        )

    def _fetch_range(self, k: str, first: int, last: int | None, etag: str | None) -> dict[str, Any]:
        """One GetObject of bytes ``first..last`` of ``k`` (the part fetch of :meth:`get_file`)."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": k}
        if last is not None:
            kwargs["Range"] = f"bytes={first}-{last}"
        if etag is not None:
            kwargs["IfMatch"] = etag
        return self.client.get_object(**kwargs)

    def get_file(self, key: str, path: str | os.PathLike) -> tuple[str, int]:
        """Parallel ranged download to ``path`` (via a temporary, renamed when complete), hashed as
        the bytes arrive (tasks/store/s3_download.py); returns (sha256 hex, size)."""
        dest = Path(path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.part-{uuid.uuid4().hex[:8]}")
        k = self._key(key)
        try:
            with open(tmp, "w+b", buffering=0) as f:
                digest, size = self._call(
                    "download",
                    key,
                    ranged_download,
                    fetch=lambda first, last, etag: self._fetch_range(k, first, last, etag),
                    f=f,
                    part_bytes=self.transfer_config.multipart_chunksize,
                    concurrency=self.transfer_config.max_concurrency,
                    max_attempts=self.max_attempts,
                )
            os.replace(tmp, dest)
            return digest, size
        finally:
            if tmp.exists():
                tmp.unlink()

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as e:
            if e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return False
            raise self._error(e, "head", key) from None
        except Exception as e:  # noqa: BLE001
            raise self._error(e, "head", key) from None

    def list(self, prefix: str = "") -> list[str]:
        full = self.prefix + prefix
        out: list[str] = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full)
            for page in pages:
                for obj in page.get("Contents", []):
                    k = obj["Key"]
                    if not k.endswith("/"):  # directory markers some tools create
                        out.append(k[len(self.prefix) :])
        except Exception as e:  # noqa: BLE001
            raise self._error(e, "list", None) from None
        return sorted(out)

    def delete(self, key: str) -> None:
        self._call("delete", key, self.client.delete_object, Bucket=self.bucket, Key=self._key(key))
