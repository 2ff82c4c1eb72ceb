"""Checks a training or retraining run makes before its first stage, so a mistake found only at the
tuning stage (a bad ``tuning.search_space``) or at the end (an unwritable ``store.uri``) does not
cost the stages before it. Pure: no Prefect; the flows call :func:`preflight` first thing."""

from __future__ import annotations

import uuid

from tasks.errors import ConfigError, DriftloopError, ObjectNotFound, StoreError
from tasks.settings import Settings

# Under runs/, which a training identity may write (infra/s3/README.md: runs/* and registry/*). A
# flat key there is no run: readers and GC only look at runs/<run-id>/<object>.
PROBE_PREFIX = "runs/preflight-probe"


def check_store_writable(settings: Settings) -> None:
    """Write and delete one small probe object in the store; ConfigError naming ``store.uri`` if that fails.

    A store that cannot be reached at all fails here too (a StoreError the caller's retries may
    handle would only come later, after training)."""
    from tasks.store.backends import open_backend

    key = f"{PROBE_PREFIX}-{uuid.uuid4().hex}"
    try:
        backend = open_backend(settings.store)
        backend.put_bytes(key, b"driftloop preflight: safe to delete\n")
    except (DriftloopError, OSError) as e:
        text = str(e)
        # A local path that cannot be written, a missing bucket or refused credentials are the
        # configuration's fault; an S3 server that is down is not (StoreError: exit 1, retryable).
        if (
            settings.store.uri.startswith("s3://")
            and not isinstance(e, ObjectNotFound)
            and not any(
                w in text for w in ("AccessDenied", "Forbidden", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch")
            )
        ):
            raise StoreError(f"store.uri={settings.store.uri!r} cannot be written before the run starts: {e}") from None
        raise ConfigError(f"store.uri={settings.store.uri!r} is not writable: {e}") from None
    try:
        backend.delete(key)
    except ObjectNotFound:
        pass
    except (DriftloopError, OSError) as e:
        raise ConfigError(
            f"store.uri={settings.store.uri!r}: wrote a probe object but cannot delete it ({backend.url(key)}): {e}"
        ) from None


def preflight(settings: Settings) -> None:
    """Raise ConfigError for what would fail later: the tuning search space (when tuning is on) and
    a store that cannot be written."""
    if settings.tuning.enabled:
        from tasks.tuning.search import validate_tuning  # pure: imports no Ray

        validate_tuning(settings.tuning, settings.model, settings.training)
    check_store_writable(settings)
