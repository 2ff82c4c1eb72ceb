"""Drift detectors on alibi-detect (``backend="pytorch"``), rebuilt from a reference's arrays.

Which features each detector tests (the table :data:`tasks.drift.features.DETECTOR_FEATURES`;
the features, and the online calibration a reference stores, are computed in :mod:`tasks.drift.features`):

- ``ks_softmax``: feature-wise two-sample Kolmogorov-Smirnov tests on the model's softmax outputs,
  aggregated with a Bonferroni or FDR (Benjamini-Hochberg) correction: black-box shift detection
  (Rabanser, Guennemann & Lipton 2019, "Failing Loudly"; BBSD with univariate tests), which also
  follows the lecture's confidence-distribution approach (Raz et al. 2019).
- ``mmd_embedding``: kernel MMD two-sample test (Gretton et al. 2012; Gaussian RBF kernel, median
  heuristic bandwidth, permutation test) on the penultimate-layer embeddings: the lecture's
  network-embedding approach (Dube et al. 2020).
- ``lsdd``: least-squares density difference permutation test (Bu et al. 2016) on the embeddings.
- ``mmd_online``: online MMD on the embeddings with thresholds calibrated for an expected run time
  (ERT) and a sliding window (Cobb et al. 2022, "Sequential multivariate change detection with
  calibrated and memoryless false detection rates").
- ``cvm_online``: online Cramer-von Mises on the top-class confidence, ERT-calibrated (Ross &
  Adams 2012).

``import alibi_detect`` takes about 10 s, so it happens inside the functions that need it.

Each detector is built from its own typed configuration (:mod:`tasks.drift.config`), resolved and
stored in the reference.

Persistence: the online detectors' calibration (thresholds, the reference split) is computed once
when the reference is built and stored as arrays in it; checks rebuild the detector from those
arrays without recalibrating. Their running state between scheduled checks is the last window of
preprocessed instances plus the time step ``t`` (:meth:`DetectorSet.state_arrays`); a new process
rebuilds the detector and re-feeds that window, which reproduces the sliding-window statistic
exactly once ``t`` is past the warm-up (the first ``window_size`` steps).

Over 400 lines (``ruff format`` layout): one class per alibi-detect detector family, sharing the
report type.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from tasks.drift.config import (
    ONLINE_CONFIGS,
    DetectorConfig,
    KSSoftmaxConfig,
    LSDDConfig,
    MMDEmbeddingConfig,
    MMDOnlineConfig,
    OfflineDetectorConfig,
    OnlineDetectorConfig,
)
from tasks.drift.features import (
    DETECTOR_FEATURES,
    batch_features,
    calibrate_online,
    torch_device,
)
from tasks.drift.reference import DriftReference
from tasks.drift.report import DriftReport
from tasks.errors import ConfigError, DataError
from tasks.seeding import derive_seed

if TYPE_CHECKING:
    import torch
    from torch import nn

    from tasks.drift.config import DriftConfig


def validate_batch(
    reference: "DriftReference | None", x: Any, batch_id: str = "", min_batch_size: int = 2
) -> np.ndarray:
    """Check a batch before any model or detector runs; return it as float32.

    Raises DataError naming the batch when the reference is missing, or the batch is empty, has a
    different per-sample shape than the reference, is smaller than ``min_batch_size`` or holds
    non-finite values.
    """
    where = f"batch {batch_id!r}" if batch_id else "batch"
    if reference is None:
        raise DataError(f"{where}: no drift reference (is there a champion with a stored reference?)")
    if x is None:
        raise DataError(f"{where}: no data")
    x = np.asarray(x)
    if x.ndim == 0 or x.shape[0] == 0:
        raise DataError(f"{where}: the batch is empty")
    if not np.issubdtype(x.dtype, np.number):
        raise DataError(f"{where}: features must be numeric, got dtype {x.dtype}")
    want = tuple(reference.sample_shape)
    if tuple(x.shape[1:]) != want:
        raise DataError(f"{where}: samples have shape {tuple(x.shape[1:])}, the reference expects {want}")
    if x.shape[0] < min_batch_size:
        raise DataError(f"{where}: {x.shape[0]} samples, fewer than drift.min_batch_size={min_batch_size}")
    if not np.all(np.isfinite(x)):
        raise DataError(f"{where}: holds NaN or infinite values")
    return x.astype(np.float32, copy=False)


# --- offline detectors -----------------------------------------------------------------------------


class _Offline:
    online = False

    def __init__(self, name: str, impl: Any, seed: int):
        self.name, self.impl, self.seed = name, impl, seed
        self.feature = DETECTOR_FEATURES[name]

    def check(self, feats: np.ndarray, batch_id: str) -> DriftReport:
        import torch

        t0 = time.perf_counter()
        # Permutation tests draw from torch's generator: seed it per (detector, batch) so a re-check
        # of the same batch gives the same p-value, without disturbing the caller's generator.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, "drift-check", self.name, batch_id))
            out = self.impl.predict(feats)["data"]
        seconds = time.perf_counter() - t0
        if self.name == "ks_softmax":
            p = np.atleast_1d(np.asarray(out["p_val"], dtype=float))
            dist = np.atleast_1d(np.asarray(out["distance"], dtype=float))
            return DriftReport(
                self.name,
                batch_id,
                bool(out["is_drift"]),
                float(dist.max()),
                float(out["threshold"]),
                float(p.min()),
                seconds,
                n=len(feats),
                details={
                    "correction": self.impl.correction,
                    "feature_p_values": p.round(6).tolist(),
                    "uncorrected_p_val": float(self.impl.p_val),
                },
            )
        return DriftReport(
            self.name,
            batch_id,
            bool(out["is_drift"]),
            float(out["distance"]),
            float(out["threshold"]),
            float(out["p_val"]),
            seconds,
            n=len(feats),
            details={
                "distance_threshold": float(out["distance_threshold"]),
                "n_permutations": int(self.impl._detector.n_permutations),
            },
        )


def _build_offline(det: "OfflineDetectorConfig", ref_feats: np.ndarray, seed: int, device: str) -> _Offline:
    if isinstance(det, KSSoftmaxConfig):
        from alibi_detect.cd import KSDrift

        impl = KSDrift(ref_feats, p_val=det.p_val, correction=det.correction)
    elif isinstance(det, MMDEmbeddingConfig):
        from alibi_detect.cd import MMDDrift

        impl = MMDDrift(
            ref_feats,
            backend="pytorch",
            p_val=det.p_val,
            n_permutations=det.n_permutations,
            device=torch_device(device),
        )
    elif isinstance(det, LSDDConfig):
        import torch
        from alibi_detect.cd import LSDDDrift

        # LSDD picks its kernel centres at random from the reference: seed it so a rebuild is identical.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(seed, "lsdd-build"))
            impl = LSDDDrift(
                ref_feats,
                backend="pytorch",
                p_val=det.p_val,
                n_permutations=det.n_permutations,
                n_kernel_centers=det.n_kernel_centers,
                device=torch_device(device),
            )
    else:  # pragma: no cover - the union has no other member
        raise ConfigError(f"{det.name!r} is not an offline drift detector")
    return _Offline(det.name, impl, seed)


# --- online detectors ------------------------------------------------------------------------------


def _mmd_online_class():
    """MMDDriftOnlineTorch that takes its thresholds and reference split from stored arrays."""
    import torch
    from alibi_detect.cd.pytorch.mmd_online import MMDDriftOnlineTorch
    from alibi_detect.utils.pytorch import zero_diag

    class StoredMMDDriftOnline(MMDDriftOnlineTorch):
        def __init__(self, *args, calibration: Mapping[str, np.ndarray], **kwargs):
            self._calibration = calibration
            super().__init__(*args, **kwargs)

        def _configure_thresholds(self):
            self.thresholds = [torch.tensor(float(v)) for v in self._calibration["thresholds"]]

        def _configure_ref_subset(self):
            # Same as the parent's, with the split read back instead of drawn (and retried) again.
            rw_size = self.n - (2 * self.window_size - 1)
            self.ref_inds = torch.from_numpy(np.asarray(self._calibration["ref_inds"], dtype=np.int64))
            self.init_test_inds = torch.from_numpy(np.asarray(self._calibration["init_test_inds"], dtype=np.int64))
            self._initialise_state()
            self.k_xx_sub = self.k_xx[self.ref_inds][:, self.ref_inds]
            self.k_xx_sub_sum = zero_diag(self.k_xx_sub).sum() / (rw_size * (rw_size - 1))

    return StoredMMDDriftOnline


def _cvm_online_class():
    """CVMDriftOnline that takes its thresholds from stored arrays."""
    from alibi_detect.cd import CVMDriftOnline

    class StoredCVMDriftOnline(CVMDriftOnline):
        def __init__(self, *args, calibration: Mapping[str, np.ndarray], **kwargs):
            self._calibration = calibration
            super().__init__(*args, **kwargs)

        def _configure_thresholds(self):
            self.thresholds = np.asarray(self._calibration["thresholds"], dtype=float).reshape(-1, 1)

    return StoredCVMDriftOnline


class _Online:
    online = True

    def __init__(self, name: str, impl: Any, window_size: int):
        self.name, self.impl, self.window_size = name, impl, window_size
        self.feature = DETECTOR_FEATURES[name]
        self._recent = np.zeros((0,) + tuple(impl.x_ref.shape[1:]), dtype=np.float32)

    def _step(self, row: np.ndarray) -> tuple[float, float, bool]:
        # score() + threshold as in alibi's predict(), without its ever-growing history arrays.
        if self.name == "mmd_online":
            stat = self.impl.score(row)
            thr = float(self.impl.get_threshold(self.impl.t))
            return float(stat), thr, bool(stat > thr)
        stats = self.impl.score(row)
        self.impl.xs = self.impl.xs[-self.impl.max_ws :]  # only the last window is ever read
        thr_arr = self.impl.get_threshold(self.impl.t - 1)
        drift = bool(self.impl._check_drift(stats, thr_arr))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="All-NaN slice encountered")
            stat = float(np.nanmax(stats)) if np.any(np.isfinite(stats)) else math.nan
        return stat, float(np.nanmax(thr_arr)) if np.any(np.isfinite(thr_arr)) else math.nan, drift

    def check(self, feats: np.ndarray, batch_id: str) -> DriftReport:
        t0 = time.perf_counter()
        t_start = int(self.impl.t)
        stats, flags, thr = [], [], math.nan
        for row in feats:
            s, thr, d = self._step(row)
            stats.append(s)
            flags.append(d)
        self._recent = np.concatenate([self._recent, feats])[-self.window_size :]
        seconds = time.perf_counter() - t0
        finite = [s for s in stats if math.isfinite(s)]
        first = next((i for i, f in enumerate(flags) if f), None)
        return DriftReport(
            self.name,
            batch_id,
            any(flags),
            max(finite) if finite else math.nan,
            thr,
            None,
            seconds,
            n=len(feats),
            kind="online",
            details={
                "ert": int(self.impl.ert),
                "window_size": self.window_size,
                "t_start": t_start,
                "t_end": int(self.impl.t),
                "n_flagged_steps": int(sum(flags)),
                "first_flagged_step": first,
            },
        )

    def state_arrays(self) -> dict[str, np.ndarray]:
        return {"window": self._recent.copy(), "t": np.array(int(self.impl.t), dtype=np.int64)}

    def load_state(self, window: np.ndarray, t: int) -> None:
        window = np.asarray(window, dtype=np.float32)
        if window.ndim != 2 or window.shape[1:] != tuple(self.impl.x_ref.shape[1:]):
            raise DataError(
                f"{self.name}: stored online state has shape {window.shape}, expected (k, {self.impl.x_ref.shape[1]})"
            )
        self.impl.reset_state()
        for row in window[-self.window_size :]:
            self.impl.score(row)  # pushes the instance through the same update as a live check
            if self.name == "cvm_online":
                self.impl.xs = self.impl.xs[-self.impl.max_ws :]
        self.impl.t = max(int(t), int(self.impl.t))
        self._recent = window[-self.window_size :].copy()


def _build_online(
    det: "OnlineDetectorConfig",
    ref_feats: np.ndarray,
    seed: int,
    calibration: Mapping[str, np.ndarray] | None,
    device: str,
) -> _Online:
    if not calibration:
        calibration = calibrate_online(det, ref_feats, seed, device)
    impl: Any
    if isinstance(det, MMDOnlineConfig):
        impl = _mmd_online_class()(
            ref_feats,
            ert=det.ert,
            window_size=det.window_size,
            n_bootstraps=det.bootstraps(),
            device=torch_device(device),
            verbose=False,
            calibration=calibration,
        )
    else:
        impl = _cvm_online_class()(
            ref_feats,
            ert=det.ert,
            window_sizes=[det.window_size],
            n_bootstraps=det.bootstraps(),
            verbose=False,
            calibration=calibration,
        )
    return _Online(det.name, impl, det.window_size)


# --- the set of detectors a check runs -------------------------------------------------------------


@dataclass
class DetectorSet:
    """Detectors built from one reference, in the configured order. Reuse it across batches in one
    process (the online ones keep their sliding window); persist ``state_arrays()`` between processes."""

    detectors: dict[str, Any] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return list(self.detectors)

    def __iter__(self):
        return iter(self.detectors.values())

    def state_arrays(self) -> dict[str, np.ndarray]:
        """The online detectors' running state as arrays (``"<name>.window"``, ``"<name>.t"``), for an npz."""
        out: dict[str, np.ndarray] = {}
        for d in self:
            if d.online:
                for k, v in d.state_arrays().items():
                    out[f"{d.name}.{k}"] = v
        return out

    def load_state(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Restore what :meth:`state_arrays` returned (detectors without saved state start fresh)."""
        for d in self:
            if d.online and f"{d.name}.window" in arrays:
                d.load_state(arrays[f"{d.name}.window"], int(np.asarray(arrays[f"{d.name}.t"])))


def build_detectors(
    reference: "DriftReference",
    names: "Sequence[str | DetectorConfig | Mapping[str, Any]] | None" = None,
    state: Mapping[str, np.ndarray] | None = None,
) -> DetectorSet:
    """Build ``names`` (default: the reference's configured detectors) from the reference's arrays.

    Each detector is built from its own typed config (:mod:`tasks.drift.config`): for a name, the
    config the reference stores (what the online thresholds were calibrated for), or for a name it
    does not store, one resolved from its stored shared keys. A config (or a table, ``{"name":
    "lsdd", "n_permutations": 50}``) given instead of a name is used as given, its unset
    parameters from the stored shared keys. An online detector whose
    config differs from the one the reference holds a calibration for is calibrated now (slow).
    ``state`` is what :meth:`DetectorSet.state_arrays` saved after the previous check.
    """
    if reference is None:
        raise DataError("no drift reference to build detectors from")
    from tasks.compat import require

    require("alibi-detect")  # the online detectors below patch its private methods
    configs = reference.detector_configs(names)
    stored = {d.name: d for d in reference.detector_configs()}
    device = str(reference.config.get("device", "cpu"))
    feats = reference.features()
    out = DetectorSet()
    for det in configs:
        ref = feats[DETECTOR_FEATURES[det.name]]
        if isinstance(det, ONLINE_CONFIGS):
            same = det.name in stored and stored[det.name].model_dump() == det.model_dump()
            calibration = reference.calibration_for(det.name) if same else None
            out.detectors[det.name] = _build_online(det, ref, reference.seed, calibration, device)
        else:
            out.detectors[det.name] = _build_offline(det, ref, reference.seed, device)
    if state:
        out.load_state(state)
    return out


def check_batch(
    reference: "DriftReference",
    x_batch: np.ndarray,
    model: "nn.Module",
    detectors: "DetectorSet | Sequence[str | DetectorConfig | Mapping[str, Any]] | None" = None,
    cfg: "DriftConfig | None" = None,
    batch_id: str = "batch",
    device: "torch.device | str | None" = None,
) -> list[DriftReport]:
    """Run the detectors on one batch: validate it, run the model once, test each feature set.

    ``detectors`` is a :class:`DetectorSet` (reuse one across batches: online detectors keep their
    window), a list of names, detector configs or tables (see :func:`build_detectors`), or None for the
    names in ``cfg.detectors`` (else the reference's list); the parameters of a named detector are
    always the reference's. Bad input (no reference, empty batch, wrong per-sample shape, too
    small, non-finite values, unknown detector) raises DataError / ConfigError before the model
    or any detector runs.
    Returns one :class:`DriftReport` per detector, in order.
    """
    if reference is None:
        raise DataError(f"batch {batch_id!r}: no drift reference (is there a champion with a stored reference?)")
    if not isinstance(detectors, DetectorSet):
        # From cfg only the names: the parameters are the reference's (its online calibration's).
        if detectors is not None:
            names: list[str | DetectorConfig | Mapping[str, Any]] | None = list(detectors)
        else:
            names = [d.name for d in cfg.detectors] if cfg is not None else None
        configs = reference.detector_configs(names)
    min_rows = cfg.min_batch_size if cfg is not None else int(reference.config.get("min_batch_size", 2))
    x = validate_batch(reference, x_batch, batch_id, min_rows)
    if not isinstance(detectors, DetectorSet):
        detectors = build_detectors(reference, configs)
    dev = device if device is not None else reference.config.get("device", "cpu")
    # Embeddings only for the detectors that test them; one row's still tells the model apart.
    feats = batch_features(model, x, dev, embeddings=any(d.feature == "embeddings" for d in detectors))
    emb_dim = (feats["embeddings"] if "embeddings" in feats else batch_features(model, x[:1], dev)["embeddings"]).shape[
        1
    ]
    if feats["probs"].shape[1] != reference.probs.shape[1] or emb_dim != reference.embeddings.shape[1]:
        raise DataError(
            f"batch {batch_id!r}: the model gives {feats['probs'].shape[1]} classes / "
            f"{emb_dim}-d embeddings, the reference was built with "
            f"{reference.probs.shape[1]} / {reference.embeddings.shape[1]}: wrong model for this reference"
        )
    return [d.check(feats[d.feature], str(batch_id)) for d in detectors]
