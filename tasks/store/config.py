"""Configuration of the artifact store and the model registry."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from tasks.config_base import Section


class StoreConfig(Section):
    # file:///abs/path, a plain path, or s3://bucket/prefix
    uri: str = ".driftloop/store"
    # S3 only: endpoint of an S3-compatible server (MinIO, SeaweedFS); None means AWS.
    endpoint_url: str | None = None
    region: str | None = None
    # None: the standard AWS credential chain (env, ~/.aws, instance profile).
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    # Temporary (STS) credentials only; None otherwise.
    session_token: SecretStr | None = None
    # Multipart threshold/chunk for large uploads, bytes.
    multipart_chunk_bytes: int = Field(16 * 1024 * 1024, ge=5 * 1024 * 1024)
    # Parallel part uploads/downloads per transfer (boto3 TransferConfig.max_concurrency).
    max_concurrency: int = Field(10, ge=1, le=64)
    max_attempts: int = Field(5, ge=1, description="retries for transient S3 errors")
    # Checksum of every uploaded part (and of a single-PUT object) that the server verifies
    # (tasks/store/s3_upload.py). CRC32: botocore's default check, cheap. SHA256: also catches
    # deliberate changes, at one more sha256 of every byte on the client and on the server.
    upload_checksum: Literal["CRC32", "SHA256"] = "CRC32"


class RegistryConfig(Section):
    # None: derived from data.source (tasks.data.sources.model_name_for_source), e.g. digits-classifier.
    model_name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    # A candidate is promoted when its test accuracy >= champion's - tolerance.
    promote_tolerance: float = Field(0.0, ge=0.0, le=1.0)
    # The gate refuses a candidate trained on fewer rows than this, or evaluated on fewer test rows
    # (an accuracy over a handful of rows says nothing); tasks/models/gate.py.
    min_train_rows: int = Field(100, ge=1)
    min_test_rows: int = Field(30, ge=1)
