"""Is the drift harmful? Confidence-based performance estimation (CBPE) without labels.

CBPE (as in NannyML): if the model's confidences are *calibrated*, the probability that its
prediction on a sample is right is its top-class probability, so the expected accuracy on a batch
is the mean top-class probability over the batch; no labels needed. Raw softmax outputs of a
neural network are over-confident (Guo et al. 2017, "On Calibration of Modern Neural Networks"),
so they are calibrated first by **temperature scaling** (Guo et al. 2017, Sec. 4.2): one scalar
``T`` fitted on the reference split by minimising the negative log-likelihood of its labels, and
``p_T = softmax(log p / T)`` (``log p`` are the logits up to a per-sample constant, which softmax
ignores). One parameter cannot overfit a reference of a few hundred samples, and it keeps the
argmax (the prediction) unchanged.

Limits: the estimate assumes the calibration still holds on the new data (covariate shift with the
same ``p(y|x)``); under label shift or concept drift it can be wrong in either direction. It fails
worst where it matters most: a network stays confident on inputs unlike anything it was trained on
(rotated or occluded digits: 30 and 21 points too high in ``benchmarks/drift_harm.py``).

**Agreement** (the default, ``drift.harm_estimator = "agreement"``): the share of the batch on which
the champion agrees with a k-nearest-neighbour classifier (k=5) over labelled training rows, in the
model's own standardized input space. Disagreement between two different predictors tracks the error
rate (Jiang et al. 2022, "Assessing Generalization of SGD via Disagreement"; Chen et al. 2021,
"Detecting Errors and Estimating Accuracy on Unlabeled Data with Self-training Ensembles"), and a
nearest-neighbour rule in input space, unlike the network, does not stay confident off its data.
On the digits streams the mean error falls from 9.2 (CBPE) to 3.0 points. Its cost: the stored
reference holds up to ``drift.agreement_rows`` training rows.

Where a batch has labels, the measured accuracy is reported beside both and the harm decision uses it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from tasks.errors import DataError

_EPS = 1e-12
# log T is searched in [-3, 3] (T from 0.05 to 20): wide enough for any network seen here.
_LOG_T_BOUNDS = (-3.0, 3.0)


def calibrate(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Softmax outputs scaled by ``temperature``: ``softmax(log p / T)``, row by row."""
    logits = np.log(np.clip(np.asarray(probs, dtype=np.float64), _EPS, 1.0)) / float(temperature)
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def _nll(probs: np.ndarray, y: np.ndarray, temperature: float) -> float:
    p = calibrate(probs, temperature)[np.arange(len(y)), y]
    return float(-np.log(np.clip(p, _EPS, 1.0)).mean())


def fit_temperature(probs: np.ndarray, y: np.ndarray) -> float:
    """The temperature minimising the NLL of labels ``y`` under ``calibrate(probs, T)``.

    Raises DataError when the shapes disagree or a label is not a class index of ``probs``.
    """
    from scipy.optimize import minimize_scalar

    probs, y = np.asarray(probs, dtype=np.float64), np.asarray(y)
    if probs.ndim != 2 or y.shape != (probs.shape[0],) or len(y) == 0:
        raise DataError(f"CBPE calibration: probs {probs.shape} and labels {y.shape} do not match")
    if y.dtype.kind not in "iu" or y.min() < 0 or y.max() >= probs.shape[1]:
        raise DataError(f"CBPE calibration: labels must be class indices in [0, {probs.shape[1]})")
    res = minimize_scalar(
        lambda lt: _nll(probs, y, math.exp(lt)), bounds=_LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-4}
    )
    return float(math.exp(res.x))


def expected_accuracy(probs: np.ndarray, temperature: float = 1.0) -> float:
    """CBPE's accuracy estimate: the mean calibrated top-class probability."""
    return float(calibrate(probs, temperature).max(axis=1).mean())


@dataclass(frozen=True)
class Calibration:
    """What CBPE needs from the reference: the temperature and the reference's measured accuracy."""

    temperature: float
    reference_accuracy: float
    n: int

    def as_arrays(self) -> dict[str, np.ndarray]:
        return {
            "temperature": np.array(self.temperature),
            "reference_accuracy": np.array(self.reference_accuracy),
            "n": np.array(self.n, dtype=np.int64),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray] | None) -> "Calibration | None":
        if not arrays or "temperature" not in arrays:
            return None
        return cls(float(arrays["temperature"]), float(arrays["reference_accuracy"]), int(arrays["n"]))


def fit_calibration(probs: np.ndarray, y: np.ndarray) -> Calibration:
    """Temperature and measured accuracy on the reference split (softmax outputs and labels)."""
    y = np.asarray(y)
    t = fit_temperature(probs, y)
    return Calibration(t, float((np.asarray(probs).argmax(axis=1) == y).mean()), int(len(y)))


@dataclass(frozen=True)
class HarmEstimate:
    """The champion's accuracy on one batch: estimated (CBPE), and measured where labels exist.

    ``drop`` is the reference accuracy minus the batch's accuracy (measured when labelled, else
    estimated); ``harmful`` is ``drop > max_drop``.
    """

    batch_id: str
    estimated_accuracy: float
    reference_accuracy: float
    measured_accuracy: float | None
    drop: float
    max_drop: float
    harmful: bool
    temperature: float
    basis: str  # "measured" or "estimated"
    estimator: str = "cbpe"  # what estimated_accuracy is: "agreement" or "cbpe"
    cbpe_accuracy: float | None = None
    agreement_accuracy: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def estimate_harm(
    calibration: Calibration,
    batch_probs: np.ndarray,
    batch_id: str,
    max_drop: float,
    y: np.ndarray | None = None,
    agreement: float | None = None,
) -> HarmEstimate:
    """The champion's estimated accuracy on one batch (``batch_probs``: its softmax outputs): the
    ``agreement`` share when given (:func:`agreement_accuracy`), else CBPE; and the measured
    accuracy when ``y`` (labels; -1 means unlabelled) is given for every row."""
    cbpe = expected_accuracy(batch_probs, calibration.temperature)
    est = agreement if agreement is not None else cbpe
    measured = None
    if y is not None and len(y) == len(batch_probs) and np.all(np.asarray(y) >= 0):
        measured = float((np.asarray(batch_probs).argmax(axis=1) == np.asarray(y)).mean())
    acc = measured if measured is not None else est
    drop = calibration.reference_accuracy - acc
    return HarmEstimate(
        batch_id,
        round(est, 6),
        round(calibration.reference_accuracy, 6),
        None if measured is None else round(measured, 6),
        round(drop, 6),
        float(max_drop),
        bool(drop > max_drop),
        round(calibration.temperature, 6),
        "measured" if measured is not None else "estimated",
        "agreement" if agreement is not None else "cbpe",
        round(cbpe, 6),
        None if agreement is None else round(float(agreement), 6),
    )


# --- agreement with a nearest-neighbour classifier --------------------------------------------------

AGREEMENT_K = 5


@dataclass(frozen=True)
class AgreementSet:
    """Labelled training rows for the agreement estimate: flattened, in the model's standardized
    input space (what its first layer computes), float32."""

    x: np.ndarray
    y: np.ndarray
    k: int = AGREEMENT_K

    def __post_init__(self):
        if self.x.ndim != 2 or self.y.shape != (len(self.x),) or len(self.x) == 0:
            raise DataError(f"agreement set: rows {self.x.shape} and labels {self.y.shape} do not match")

    def as_arrays(self) -> dict[str, np.ndarray]:
        return {"x": self.x, "y": self.y, "k": np.array(self.k, dtype=np.int64)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray] | None) -> "AgreementSet | None":
        if not arrays or "x" not in arrays:
            return None
        return cls(np.asarray(arrays["x"], dtype=np.float32), np.asarray(arrays["y"], dtype=np.int64), int(arrays["k"]))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The k-nearest-neighbour labels of ``x`` (rows in the same space; flattened here)."""
        from sklearn.neighbors import KNeighborsClassifier

        x = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
        if x.shape[1] != self.x.shape[1]:
            raise DataError(f"agreement set: batch rows have {x.shape[1]} values, the set {self.x.shape[1]}")
        knn = KNeighborsClassifier(n_neighbors=min(self.k, len(self.x))).fit(self.x, self.y)
        return knn.predict(x) if len(x) else np.zeros(0, dtype=np.int64)


def sample_agreement_set(x_std: np.ndarray, y: np.ndarray, max_rows: int, rng: np.random.Generator) -> AgreementSet:
    """Up to ``max_rows`` rows of ``x_std`` (already standardized) and their labels, drawn with ``rng``."""
    x_std, y = np.asarray(x_std), np.asarray(y)
    if len(x_std) != len(y):
        raise DataError(f"agreement set: {len(x_std)} rows but {len(y)} labels")
    idx = np.sort(rng.choice(len(x_std), min(max_rows, len(x_std)), replace=False))
    return AgreementSet(
        np.ascontiguousarray(x_std[idx].reshape(len(idx), -1), dtype=np.float32), y[idx].astype(np.int64)
    )


def agreement_accuracy(predictions: np.ndarray, aset: AgreementSet, x_std: np.ndarray) -> float:
    """The share of rows on which ``predictions`` (the champion's labels for ``x_std``) agree with
    the nearest-neighbour labels: the agreement estimate of the champion's accuracy."""
    predictions = np.asarray(predictions)
    if len(predictions) != len(x_std):
        raise DataError(f"agreement: {len(predictions)} predictions for {len(x_std)} rows")
    if len(predictions) == 0:
        return float("nan")
    return float((aset.predict(x_std) == predictions).mean())
