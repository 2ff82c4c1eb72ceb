"""The pure function behind ``driftloop simulate-stream`` (flows/cli/drift.py mounts it)."""

from __future__ import annotations

from typing import Any

from tasks.drift.stream import DRIFT_KINDS, simulate_stream, write_stream
from tasks.errors import ConfigError


def simulate_stream_command(
    out: str,
    kind: str = "gaussian_noise",
    onset: int = 60,
    duration: int = 20,
    batches: int = 100,
    batch_size: int = 100,
    severity: float = 1.0,
    seed: int | None = None,
    settings: Any = None,
) -> dict[str, Any]:
    """Write a simulated labelled stream to ``out`` (a directory, ``file://`` or ``s3://`` URI).

    The held-out (test) split of the configured dataset (``settings.data``, default digits) is the
    pool; the split uses ``settings.seed`` so the stream never contains training samples of a model
    trained with the same settings. ``seed`` (default: derived from ``settings.seed``) drives the
    stream. S3 endpoint and credentials come from ``settings.store``. Returns the stream manifest.
    """
    from tasks.data.sources import load_dataset, split_dataset
    from tasks.seeding import derive_seed
    from tasks.settings import load_settings

    if kind not in DRIFT_KINDS:
        raise ConfigError(f"--kind {kind!r} is not a drift kind; use one of {', '.join(DRIFT_KINDS)}")
    settings = settings or load_settings()
    store_cfg = settings.store
    if settings.data.source == "digits":
        ds = load_dataset("digits", lambda uri: b"")
    else:
        from tasks.store.backends import read_uri

        ds = load_dataset(
            settings.data.source,
            lambda uri: read_uri(uri, store_cfg),
            settings.data.label_column,
            settings.data.sample_shape,
        )
    splits = split_dataset(ds, settings.seed, settings.data.val_fraction, settings.data.test_fraction)
    stream_seed = derive_seed(settings.seed, "stream") if seed is None else int(seed)
    batches_iter = simulate_stream(
        splits,
        kind=kind,
        onset=onset,
        duration=duration,
        n_batches=batches,
        batch_size=batch_size,
        seed=stream_seed,
        severity=severity,
    )
    return write_stream(batches_iter, out, store_cfg)
