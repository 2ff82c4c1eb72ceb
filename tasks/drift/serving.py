"""The serving side of the drift loop: the champion's predictions for a batch, and (``--log``)
the batch's inputs written as an unlabelled batch under ``drift.batches_uri`` for the scheduled
drift check to pick up. Pure (no Prefect): ``driftloop predict`` (flows/cli/predict.py) calls it.

A logged batch is ``<drift.batches_uri>/predictions/<UTC time>-<sha256[:12]>.npz`` holding one
array ``x`` (float32, the champion schema's per-sample shape): features only, as production
inputs arrive. Labels for it, when they come, go beside it as ``<file>.labels.json``
(tasks/drift/labels.py).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from tasks.errors import DataError, ValidationFailed


@dataclass
class Predictions:
    """The champion's answer for one batch; ``logged_uri`` is where ``--log`` wrote its inputs."""

    source: str
    model: str
    model_version: int
    predictions: list[int]
    confidences: list[float]
    logged_uri: str | None = None
    evidence: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "source": self.source,
            "model": self.model,
            "model_version": self.model_version,
            "n": len(self.predictions),
            "predictions": self.predictions,
            "confidences": self.confidences,
            "logged_uri": self.logged_uri,
            "evidence": self.evidence,
        }

    def to_csv(self) -> str:
        return "row,prediction,confidence\n" + "".join(
            f"{i},{p},{c:.6f}\n" for i, (p, c) in enumerate(zip(self.predictions, self.confidences))
        )


def logged_batch_uri(batches_uri: str, x: np.ndarray, now: datetime | None = None) -> str:
    """Where ``--log`` writes a batch: a time-ordered, content-named file under ``predictions/``."""
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%S%fZ")
    digest = hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()[:12]
    return batches_uri.rstrip("/") + f"/predictions/{stamp}-{digest}.npz"


def predict(settings, data_uri: str, log: bool = False) -> Predictions:
    """The champion's predictions and top-class confidences for the batch at ``data_uri``
    (npz/parquet/csv, labels optional and ignored). The batch must pass the integrity rules of the
    champion's schema (distribution findings are reported in ``evidence``, not refused: drifted
    inputs still deserve an answer). With ``log`` its inputs are written as an unlabelled batch.
    Raises DataError (no champion, unreadable file) or ValidationFailed (integrity violations).
    """
    from tasks.data.quarantine import batch_id_for
    from tasks.data.validation import conform, load_batch_from_uri, validate_batch
    from tasks.drift.features import torch_device
    from tasks.models.registration import load_schema, load_trained, open_registry
    from tasks.models.train import predict_proba
    from tasks.store.backends import write_uri

    store, registry = open_registry(settings)
    champion = registry.champion()
    if champion is None:
        raise DataError(
            f"no champion for model {settings.registry.model_name!r} in {settings.store.uri}: "
            "run `driftloop run training` first"
        )
    schema = load_schema(store, champion)
    ds, raw, error = load_batch_from_uri(data_uri, settings.store, settings.data.label_column)
    if error is not None:
        raise DataError(error.to_text())
    assert ds is not None  # no refusal report: the batch was read
    report = validate_batch(
        ds,
        schema,
        settings.data.validation,
        batch_id_for(data_uri, raw),
        data_uri,
        labels="optional",
        distribution="evidence",
    )
    if not report.passed:
        raise ValidationFailed(
            f"{data_uri}: cannot predict: {', '.join(report.rules)}\n{report.to_text()}", report=report
        )
    x = np.ascontiguousarray(conform(ds, schema).x, dtype=np.float32)
    model = load_trained(store, champion).module()
    probs = predict_proba(model, x, torch_device(settings.drift.device))
    out = Predictions(
        data_uri,
        settings.registry.model_name,
        int(champion["version"]),
        [int(v) for v in probs.argmax(axis=1)],
        [round(float(v), 6) for v in probs.max(axis=1)],
        evidence=[v.rule for v in report.evidence],
    )
    if log:
        uri = logged_batch_uri(settings.drift.batches_uri, x)
        buf = io.BytesIO()
        np.savez(buf, x=x)
        write_uri(uri, buf.getvalue(), settings.store)
        out.logged_uri = uri
    return out
