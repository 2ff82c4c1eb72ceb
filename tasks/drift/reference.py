"""Drift references: what the detectors compare new batches with.

A reference is a seeded sample of inputs, the model's softmax outputs and penultimate embeddings
on them, the detector configuration, and the online detectors' calibration. It is stored beside
a promoted model as two files: ``drift_reference.npz`` (arrays; loaded with
``allow_pickle=False``) and ``drift_reference.json`` (configuration, provenance, array shapes and
sha256). Detectors are rebuilt from these; alibi-detect's ``save_detector``/``load_detector`` are
never used (``load_detector`` can unpickle what it reads).
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from tasks.drift.config import ONLINE_CONFIGS, DetectorConfig, DriftConfig, parse_detector
from tasks.drift.features import (
    DETECTOR_FEATURES,
    batch_features,
    calibrate_online,
    check_detector_names,
    features_from_outputs,
)
from tasks.errors import ConfigError, DataError
from tasks.seeding import rng

if TYPE_CHECKING:
    from torch import nn

FORMAT = "driftloop.drift-reference/1"
NPZ_NAME = "drift_reference.npz"
JSON_NAME = "drift_reference.json"
REFERENCE_FILES = (NPZ_NAME, JSON_NAME)
_CAL_PREFIX = "calibration."


@dataclass
class DriftReference:
    """Arrays plus configuration; see the module docstring. ``config`` is a DriftConfig as a dict,
    its ``detectors`` resolved (every parameter explicit; references written before detectors had
    their own parameters hold names there, resolved from the flat keys beside them)."""

    x: np.ndarray
    probs: np.ndarray
    embeddings: np.ndarray
    config: dict[str, Any]
    seed: int
    meta: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    # Labels of ``x`` (int64), when the reference was built with them: CBPE is calibrated on them.
    y: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x.shape[1:])

    @property
    def num_classes(self) -> int:
        return int(self.probs.shape[1])

    def features(self) -> dict[str, np.ndarray]:
        """Reference arrays by feature name (``probs``, ``embeddings``, ``confidence``)."""
        return features_from_outputs(self.probs, self.embeddings)

    def cbpe(self):
        """The CBPE calibration (:class:`tasks.drift.harm.Calibration`), or None for a reference
        built without labels (CBPE is then not reported)."""
        from tasks.drift.harm import Calibration

        return Calibration.from_arrays(self.calibration.get("cbpe"))

    def agreement(self):
        """The agreement set (:class:`tasks.drift.harm.AgreementSet`), or None for a reference built
        without training rows (``drift.harm_estimator="cbpe"``, or before it existed)."""
        from tasks.drift.harm import AgreementSet

        return AgreementSet.from_arrays(self.calibration.get("agreement"))

    def drift_config(self) -> DriftConfig:
        """The stored configuration, validated."""
        return DriftConfig.model_validate(self.config)

    def detector_configs(
        self, names: "Sequence[str | DetectorConfig | Mapping[str, Any]] | None" = None
    ) -> list[DetectorConfig]:
        """The resolved configs of ``names`` (default: the stored detectors). A name the reference
        stores is its stored config; any other name, or the unset parameters of a config (or of a
        table like ``{"name": "lsdd", "n_permutations": 50}``), are resolved from the stored shared
        keys. Raises ConfigError for unknown or repeated names and bad tables."""
        cfg = self.drift_config()
        if names is None:
            return cfg.detector_configs()
        try:
            given = [n if isinstance(n, str) else parse_detector(n) for n in names]
        except ValueError as e:
            raise ConfigError(str(e)) from None
        check_detector_names(n if isinstance(n, str) else n.name for n in given)
        return [cfg.detector_config(n) if isinstance(n, str) else cfg.resolve(n) for n in given]

    def calibration_for(self, name: str) -> dict[str, np.ndarray] | None:
        """The stored online calibration of detector ``name``, if it was calibrated for this config."""
        return self.calibration.get(name)


def _parts(arrays: "np.ndarray | Sequence[np.ndarray]") -> list[np.ndarray]:
    return [np.asarray(a) for a in arrays] if isinstance(arrays, (list, tuple)) else [np.asarray(arrays)]


def _shapes(parts: list[np.ndarray]) -> str:
    return str(parts[0].shape) if len(parts) == 1 else str([a.shape for a in parts])


def _take(parts: list[np.ndarray], idx: np.ndarray, dtype) -> np.ndarray:
    """``np.concatenate(parts)[idx].astype(dtype)`` for sorted ``idx``, without the concatenation
    (a copy of every input, where only ``len(idx)`` rows are kept)."""
    out = np.empty((len(idx), *parts[0].shape[1:]), dtype=dtype)
    start = k = 0
    for a in parts:
        sel = idx[(idx >= start) & (idx < start + len(a))] - start
        out[k : k + len(sel)] = a[sel]
        k, start = k + len(sel), start + len(a)
    return out


def build_reference(
    model: "nn.Module",
    x_inputs: "np.ndarray | Sequence[np.ndarray]",
    cfg: "DriftConfig",
    seed: int,
    meta: Mapping[str, Any] | None = None,
    device: str | None = None,
    y_inputs: "np.ndarray | Sequence[np.ndarray] | None" = None,
    agreement_inputs: "tuple[np.ndarray, np.ndarray] | None" = None,
) -> DriftReference:
    """Sample ``cfg.reference_size`` inputs (seeded; all when fewer), run the model on them, and
    calibrate the configured online detectors.

    Which inputs: data the model was *not* fitted on (the validation split, or validation plus
    training data) make the better reference. The softmax outputs on the fitting data are more
    confident than on any new data, so KS on the outputs would flag clean held-out batches.
    ``x_inputs`` is one array or a list of arrays taken as their concatenation (the validation and
    test splits, say), which is never built: only the sampled rows are copied. ``meta`` (model
    name, version, data fingerprint...) is stored for provenance. With the labels ``y_inputs`` of
    ``x_inputs`` (an array or a list like it), the sampled labels are stored too and the CBPE
    temperature is fitted on them (:mod:`tasks.drift.harm`; stored as ``calibration["cbpe"]``).
    ``agreement_inputs`` (the training split's inputs and labels): up to ``cfg.agreement_rows`` of
    them (at most about 16 MB), in the model's standardized input space, are stored for the
    agreement estimate (``calibration["agreement"]``).
    """
    detectors = cfg.detector_configs()
    parts = _parts(x_inputs)
    if not parts or any(a.ndim < 2 for a in parts) or not any(len(a) for a in parts):
        raise DataError(f"drift reference: need a non-empty array of samples, got shape {_shapes(parts)}")
    if len({a.shape[1:] for a in parts}) > 1:
        raise DataError(
            f"drift reference: the input arrays hold samples of different shapes {[a.shape[1:] for a in parts]}"
        )
    total = sum(len(a) for a in parts)
    if not all(np.all(np.isfinite(a)) for a in parts):
        raise DataError("drift reference: the inputs hold NaN or infinite values")
    n = min(cfg.reference_size, total)
    if n < 10:
        raise DataError(f"drift reference: {total} samples are too few (need at least 10)")
    idx = np.sort(rng(seed, "drift-reference").choice(total, n, replace=False))
    x = _take(parts, idx, np.float32)
    # The resolved detector list (every parameter explicit) beside the shared flat keys: a rebuild
    # never depends on what the shared defaults are when it runs.
    conf = cfg.model_dump(mode="json")
    conf["detectors"] = [d.model_dump(mode="json") for d in detectors]
    feats = batch_features(model, x, device or cfg.device)
    info = {
        "created": datetime.now(timezone.utc).isoformat(),
        "n_inputs_available": int(total),
        "sample_indices_sha256": hashlib.sha256(idx.astype(np.int64).tobytes()).hexdigest(),
    }
    info.update(dict(meta or {}))
    ref = DriftReference(
        x=x, probs=feats["probs"], embeddings=feats["embeddings"], config=conf, seed=int(seed), meta=info
    )
    ref_feats = features_from_outputs(ref.probs, ref.embeddings)
    for det in detectors:
        if isinstance(det, ONLINE_CONFIGS):
            ref.calibration[det.name] = calibrate_online(det, ref_feats[DETECTOR_FEATURES[det.name]], seed, cfg.device)
    if y_inputs is not None:
        from tasks.drift.harm import fit_calibration

        y_parts = _parts(y_inputs)
        if any(a.ndim != 1 for a in y_parts) or sum(len(a) for a in y_parts) != total:
            raise DataError(f"drift reference: {total} inputs but labels of shape {_shapes(y_parts)}")
        ref.y = _take(y_parts, idx, np.int64)
        ref.calibration["cbpe"] = fit_calibration(ref.probs, ref.y).as_arrays()
    if agreement_inputs is not None:
        ref.calibration["agreement"] = _agreement_set(model, agreement_inputs, cfg, seed).as_arrays()
    return ref


# The agreement set stays under this many stored values (4e6 float32: 16 MB).
_AGREEMENT_MAX_VALUES = 4_000_000


def _agreement_set(model, inputs, cfg, seed: int):
    """Up to ``cfg.agreement_rows`` labelled rows, sampled before they are standardized (only the
    sampled rows are copied)."""
    from tasks.drift.harm import AgreementSet
    from tasks.models.standardize import standardized_inputs

    x, y = np.asarray(inputs[0]), np.asarray(inputs[1])
    if x.ndim < 2 or y.shape != (len(x),) or len(x) == 0:
        raise DataError(f"drift reference: agreement inputs {x.shape} and labels {y.shape} do not match")
    per_row = int(np.prod(x.shape[1:]))
    n = min(cfg.agreement_rows, len(x), max(10, _AGREEMENT_MAX_VALUES // max(per_row, 1)))
    idx = np.sort(rng(seed, "agreement-set").choice(len(x), n, replace=False))
    x_std = standardized_inputs(model, np.ascontiguousarray(x[idx], dtype=np.float32))
    return AgreementSet(x_std.reshape(n, -1), y[idx].astype(np.int64))


def _npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def reference_to_files(ref: DriftReference) -> dict[str, bytes]:
    """The reference as ``{"drift_reference.npz": ..., "drift_reference.json": ...}`` bytes."""
    arrays: dict[str, np.ndarray] = {"x": ref.x, "probs": ref.probs, "embeddings": ref.embeddings}
    if ref.y is not None:
        arrays["y"] = np.asarray(ref.y, dtype=np.int64)
    for name, cal in ref.calibration.items():
        for key, arr in cal.items():
            arrays[f"{_CAL_PREFIX}{name}.{key}"] = np.asarray(arr)
    doc = {
        "format": FORMAT,
        "seed": ref.seed,
        "config": ref.config,
        "meta": ref.meta,
        "arrays": {
            k: {
                "shape": list(v.shape),
                "dtype": v.dtype.str,
                "sha256": hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest(),
            }
            for k, v in arrays.items()
        },
    }
    return {NPZ_NAME: _npz_bytes(arrays), JSON_NAME: json.dumps(doc, indent=2, sort_keys=True).encode()}


def reference_from_files(files: Mapping[str, bytes], origin: str = "drift reference") -> DriftReference:
    """Rebuild a reference from :func:`reference_to_files` output (e.g. read back from the store).

    Raises DataError naming the missing file, a wrong format tag, or an array whose shape, dtype or
    sha256 differs from what the JSON recorded. No pickles: the npz is read with allow_pickle=False.
    """
    missing = [n for n in REFERENCE_FILES if n not in files or files[n] is None]
    if missing:
        raise DataError(f"{origin}: missing {missing} (a reference is {list(REFERENCE_FILES)})")
    try:
        doc = json.loads(files[JSON_NAME])
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{origin}/{JSON_NAME}: not valid JSON: {e}") from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise DataError(
            f"{origin}/{JSON_NAME}: format is {doc.get('format') if isinstance(doc, dict) else None!r}, "
            f"expected {FORMAT!r}"
        )
    try:
        with np.load(io.BytesIO(files[NPZ_NAME]), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:  # truncated or not an npz: say which file
        raise DataError(f"{origin}/{NPZ_NAME}: cannot be read as npz: {type(e).__name__}: {e}") from e
    for k, want in doc.get("arrays", {}).items():
        if k not in arrays:
            raise DataError(f"{origin}/{NPZ_NAME}: array {k!r} recorded in {JSON_NAME} is missing")
        a = arrays[k]
        if (
            list(a.shape) != want["shape"]
            or a.dtype.str != want["dtype"]
            or hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest() != want["sha256"]
        ):
            raise DataError(
                f"{origin}/{NPZ_NAME}: array {k!r} differs from what {JSON_NAME} recorded "
                f"(shape {list(a.shape)} vs {want['shape']})"
            )
    for k in ("x", "probs", "embeddings"):
        if k not in arrays:
            raise DataError(f"{origin}/{NPZ_NAME}: array {k!r} is missing")
    n = len(arrays["x"])
    if len(arrays["probs"]) != n or len(arrays["embeddings"]) != n:
        raise DataError(f"{origin}: x, probs and embeddings hold different numbers of samples")
    # Validate the stored configuration (a stale or hand-edited file fails here, naming the key).
    # References written before detectors had their own parameters store names and the flat keys:
    # resolved here, they give the same detectors as then.
    try:
        parsed = DriftConfig.model_validate(doc["config"])
    except Exception as e:
        raise DataError(f"{origin}/{JSON_NAME}: invalid detector configuration: {e}") from e
    config = parsed.model_dump(mode="json")
    config["detectors"] = [d.model_dump(mode="json") for d in parsed.detector_configs()]
    calibration: dict[str, dict[str, np.ndarray]] = {}
    for k, a in arrays.items():
        if k.startswith(_CAL_PREFIX):
            name, key = k[len(_CAL_PREFIX) :].split(".", 1)
            calibration.setdefault(name, {})[key] = a
    if "y" in arrays and len(arrays["y"]) != n:
        raise DataError(f"{origin}: x and y hold different numbers of samples")
    return DriftReference(
        x=arrays["x"],
        probs=arrays["probs"],
        embeddings=arrays["embeddings"],
        config=config,
        seed=int(doc["seed"]),
        meta=dict(doc.get("meta") or {}),
        calibration=calibration,
        y=arrays.get("y"),
    )
