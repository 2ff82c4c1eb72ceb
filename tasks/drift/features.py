"""What the drift detectors and the drift references share: which model-derived features each
detector tests, computing those features with the model, and the online detectors' calibration.

A reference (:mod:`tasks.drift.reference`) is built with these: the model's features on the
reference inputs, and the online thresholds calibrated on them once. The detectors
(:mod:`tasks.drift.detectors`) are rebuilt from the reference's arrays and compute the same
features on each new batch. Both import this module; neither imports the other's internals.

``import alibi_detect`` takes about 10 s, so it happens inside the functions that need it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

import numpy as np

from tasks.errors import ConfigError
from tasks.seeding import derive_seed

if TYPE_CHECKING:
    import torch
    from torch import nn

    from tasks.drift.config import OnlineDetectorConfig

DETECTOR_NAMES: tuple[str, ...] = ("ks_softmax", "mmd_embedding", "lsdd", "mmd_online", "cvm_online")
ONLINE_DETECTORS = frozenset({"mmd_online", "cvm_online"})
# Which model-derived features each detector tests (see module docstring).
DETECTOR_FEATURES: dict[str, str] = {
    "ks_softmax": "probs",
    "mmd_embedding": "embeddings",
    "lsdd": "embeddings",
    "mmd_online": "embeddings",
    "cvm_online": "confidence",
}


def check_detector_names(names: Iterable[str]) -> list[str]:
    """Return ``names`` as a list, or raise ConfigError naming the unknown ones (before any work)."""
    names = list(names)
    if not names:
        raise ConfigError("drift.detectors is empty: name at least one of " + ", ".join(DETECTOR_NAMES))
    unknown = [n for n in names if n not in DETECTOR_NAMES]
    if unknown:
        raise ConfigError(f"unknown drift detector(s) {unknown}; known: {', '.join(DETECTOR_NAMES)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"drift.detectors lists a detector twice: {names}")
    return names


def torch_device(name: str):
    """``"auto"``: CUDA when available, else the CPU; any other name as torch spells it."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def features_from_outputs(probs: np.ndarray, embeddings: np.ndarray | None) -> dict[str, np.ndarray]:
    """The arrays the detectors test: softmax outputs, embeddings (when given) and the top-class
    confidence."""
    probs = np.asarray(probs, dtype=np.float32)
    out = {"probs": probs, "confidence": probs.max(axis=1, keepdims=True)}
    if embeddings is not None:
        out["embeddings"] = np.asarray(embeddings, dtype=np.float32)
    return out


def batch_features(
    model: "nn.Module", x: np.ndarray, device: "torch.device | str" = "cpu", embeddings: bool = True
) -> dict[str, np.ndarray]:
    """Run ``model`` over ``x``: softmax outputs, penultimate embeddings and top-class confidence.

    ``embeddings=False`` leaves the embeddings out, for checks whose detectors all test the
    outputs (``ks_softmax``, ``cvm_online``): a batch's embeddings (``model.width`` floats a row,
    64 by default) are often larger than the batch itself.
    """
    from tasks.models.train import embed, predict_proba

    dev = torch_device(device) if isinstance(device, str) else device
    x = np.ascontiguousarray(x, dtype=np.float32)
    return features_from_outputs(
        _chunked(predict_proba, model, x, dev), _chunked(embed, model, x, dev) if embeddings else None
    )


# predict_proba and embed run the model _MODEL_BATCH rows at a time and concatenate the pieces:
# for a large batch that is every piece and their concatenation at once (twice the output).
# Calling them on chunks of whole model batches and writing each into one array gives the same
# values bit for bit (the same model batches) with one chunk's pieces alive at a time.
_MODEL_BATCH = 512
_CHUNK_ROWS = 32 * _MODEL_BATCH


def _chunked(fn, model: "nn.Module", x: np.ndarray, dev) -> np.ndarray:
    if len(x) <= _CHUNK_ROWS:
        return fn(model, x, dev, _MODEL_BATCH)
    out = None
    for i in range(0, len(x), _CHUNK_ROWS):
        part = fn(model, x[i : i + _CHUNK_ROWS], dev, _MODEL_BATCH)
        if out is None:
            out = np.empty((len(x), *part.shape[1:]), dtype=part.dtype)
        out[i : i + len(part)] = part
    assert out is not None  # more than _CHUNK_ROWS rows: at least one chunk ran
    return out


def calibrate_online(
    spec: "OnlineDetectorConfig", ref_feats: np.ndarray, seed: int, device: str = "cpu"
) -> dict[str, np.ndarray]:
    """Calibrate an online detector's thresholds for its ``ert`` and ``window_size``.

    Runs alibi-detect's own bootstrap calibration once (seconds to tens of seconds, linear in the
    number of bootstraps) under a seed derived from ``seed``, and returns what a rebuild needs as
    arrays: ``thresholds`` (and for MMD the reference split ``ref_inds`` / ``init_test_inds``).
    """
    name, n_boot = spec.name, spec.bootstraps()
    if len(ref_feats) <= 2 * spec.window_size:
        raise ConfigError(
            f"{name}: the reference holds {len(ref_feats)} samples; the online detectors need more "
            f"than 2 * window_size = {2 * spec.window_size}"
        )
    if name == "mmd_online":
        import torch
        from alibi_detect.cd.pytorch.mmd_online import MMDDriftOnlineTorch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(seed, "calibrate", name))
            det = MMDDriftOnlineTorch(
                ref_feats,
                ert=spec.ert,
                window_size=spec.window_size,
                n_bootstraps=n_boot,
                device=torch_device(device),
                verbose=False,
            )
        return {
            "thresholds": np.array([float(t) for t in det.thresholds], dtype=np.float64),
            "ref_inds": det.ref_inds.cpu().numpy().astype(np.int64),
            "init_test_inds": det.init_test_inds.cpu().numpy().astype(np.int64),
        }
    if name == "cvm_online":
        from alibi_detect.cd import CVMDriftOnline

        # CVM simulates null streams with numpy's global generator: seed it, then put it back.
        state = np.random.get_state()
        try:
            np.random.seed(derive_seed(seed, "calibrate", name))
            det = CVMDriftOnline(
                ref_feats, ert=spec.ert, window_sizes=[spec.window_size], n_bootstraps=n_boot, verbose=False
            )
        finally:
            np.random.set_state(state)
        return {"thresholds": np.asarray(det.thresholds, dtype=np.float64).ravel()}
    raise ConfigError(f"{name!r} is not an online drift detector; online: {sorted(ONLINE_DETECTORS)}")
