"""Configuration of drift detection (owned by tasks/drift).

Each entry of ``drift.detectors`` is a typed detector configuration, one pydantic model per
detector holding exactly the parameters that detector takes, told apart by its ``name``
(a discriminated union). An entry is written either as the detector's name, or as a table::

    detectors = ["ks_softmax", {name = "lsdd", n_permutations = 200}, {name = "cvm_online", window_size = 30}]

A parameter an entry does not set is taken from the flat keys of ``drift`` (``p_val``,
``correction``, ``n_permutations``, ``lsdd_n_kernel_centers``, ``ert``, ``window_size``,
``online_n_bootstraps``): the shared defaults, so a bare name means exactly what it meant before
detectors had their own parameters. :meth:`DriftConfig.detector_configs` gives the resolved
list, every parameter explicit.

The resolved detector settings are copied into every drift reference when it is built; checks run
with the reference's copy (the online thresholds are calibrated for it), so changing them here
takes effect with the next reference (the next promotion), not for references already stored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Mapping, Union, cast

from pydantic import (
    ConfigDict,
    Discriminator,
    Field,
    SerializationInfo,
    Tag,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from tasks.config_base import Section

DetectorName = Literal["ks_softmax", "mmd_embedding", "lsdd", "mmd_online", "cvm_online"]
Correction = Literal["bonferroni", "fdr"]

# A detector parameter left unset is read from this flat key of DriftConfig (the shared default).
SHARED_KEYS: dict[str, str] = {
    "p_val": "p_val",
    "correction": "correction",
    "n_permutations": "n_permutations",
    "n_kernel_centers": "lsdd_n_kernel_centers",
    "ert": "ert",
    "window_size": "window_size",
    "n_bootstraps": "online_n_bootstraps",
}

_UNSET_NOTE = " Unset: the shared drift.{key}."


def _shared(key: str, text: str) -> str:
    return text + _UNSET_NOTE.format(key=SHARED_KEYS[key])


def _name_required(schema: dict[str, Any]) -> None:
    # A table must say which detector it is (parse_detector); in Python the class says it.
    schema["required"] = ["name", *schema.get("required", [])]


class _Detector(Section):
    """What every detector configuration has: its name (the union's tag)."""

    model_config = ConfigDict(json_schema_extra=_name_required)

    name: str

    @classmethod
    def parameter_names(cls) -> list[str]:
        return [k for k in cls.model_fields if k != "name"]

    def shorthand(self, mode: str = "python") -> str | dict[str, Any]:
        """The entry as written: the bare name when it sets no parameter of its own, else a table of
        the name and the parameters it sets (so a dumped config still inherits the shared defaults)."""
        own = self.model_dump(mode=mode, exclude_unset=True, exclude={"name"})
        return {"name": self.name, **own} if own else self.name


class KSSoftmaxConfig(_Detector):
    """``ks_softmax``: feature-wise Kolmogorov-Smirnov tests on the softmax outputs, corrected for
    the number of classes (Rabanser et al. 2019, black-box shift detection)."""

    name: Literal["ks_softmax"] = "ks_softmax"
    p_val: float = Field(0.05, gt=0.0, lt=1.0, description=_shared("p_val", "Significance, before the correction."))
    correction: Correction = Field(
        "bonferroni", description=_shared("correction", "Multiple-testing correction over the classes.")
    )


class MMDEmbeddingConfig(_Detector):
    """``mmd_embedding``: kernel MMD permutation test on the penultimate embeddings (Gretton et al.
    2012; the network-embedding approach of Dube et al. 2020)."""

    name: Literal["mmd_embedding"] = "mmd_embedding"
    p_val: float = Field(0.05, gt=0.0, lt=1.0, description=_shared("p_val", "Significance of the test."))
    n_permutations: int = Field(
        100, ge=10, description=_shared("n_permutations", "Permutation test size (p-value resolution 1/n).")
    )


class LSDDConfig(_Detector):
    """``lsdd``: least-squares density difference permutation test on the embeddings (Bu et al. 2016)."""

    name: Literal["lsdd"] = "lsdd"
    p_val: float = Field(0.05, gt=0.0, lt=1.0, description=_shared("p_val", "Significance of the test."))
    n_permutations: int = Field(
        100, ge=10, description=_shared("n_permutations", "Permutation test size (p-value resolution 1/n).")
    )
    n_kernel_centers: int | None = Field(
        None,
        ge=2,
        description=_shared("n_kernel_centers", "Kernel centres drawn from the reference (null: alibi's default)."),
    )


class _OnlineDetector(_Detector):
    # ERT is alibi-detect's expected run time in *instances* without drift. A batch of B instances
    # is fed one at a time, so the chance of a false alarm per clean batch is about B/ert:
    # ert = B / p_val matches the offline detectors' rate (2000 for B=100 at p_val=0.05).
    ert: int = Field(2000, ge=10, description=_shared("ert", "Expected run time without drift, in instances."))
    window_size: int = Field(50, ge=2, description=_shared("window_size", "Sliding test-window size in instances."))
    n_bootstraps: int | None = Field(
        None,
        ge=100,
        description=_shared(
            "n_bootstraps", "Threshold calibration bootstraps, more than ert (null: 1.25 * ert + 2 * window_size)."
        ),
    )

    def bootstraps(self) -> int:
        """Bootstraps used to calibrate the online thresholds (alibi needs more than ``ert``)."""
        return self.n_bootstraps or int(1.25 * self.ert) + 2 * self.window_size


class MMDOnlineConfig(_OnlineDetector):
    """``mmd_online``: online MMD on the embeddings, thresholds calibrated for an ERT and a sliding
    window (Cobb et al. 2022)."""

    name: Literal["mmd_online"] = "mmd_online"


class CVMOnlineConfig(_OnlineDetector):
    """``cvm_online``: online Cramer-von Mises on the top-class confidence, ERT-calibrated (Ross &
    Adams 2012; the confidence distribution of Raz et al. 2019)."""

    name: Literal["cvm_online"] = "cvm_online"


OfflineDetectorConfig = Union[KSSoftmaxConfig, MMDEmbeddingConfig, LSDDConfig]
OnlineDetectorConfig = Union[MMDOnlineConfig, CVMOnlineConfig]
ONLINE_CONFIGS = (MMDOnlineConfig, CVMOnlineConfig)  # for isinstance


def _tag(value: Any) -> Any:
    return value.get("name") if isinstance(value, Mapping) else getattr(value, "name", None)


# A callable discriminator: a field discriminator may not carry a mode="before" validator, and
# Section's strict-scalar check is one (on every field).
DetectorConfig = Annotated[
    Union[
        Annotated[KSSoftmaxConfig, Tag("ks_softmax")],
        Annotated[MMDEmbeddingConfig, Tag("mmd_embedding")],
        Annotated[LSDDConfig, Tag("lsdd")],
        Annotated[MMDOnlineConfig, Tag("mmd_online")],
        Annotated[CVMOnlineConfig, Tag("cvm_online")],
    ],
    Discriminator(_tag),
]
DETECTOR_CONFIGS: dict[str, type[_Detector]] = {
    c.model_fields["name"].default: c
    for c in (KSSoftmaxConfig, MMDEmbeddingConfig, LSDDConfig, MMDOnlineConfig, CVMOnlineConfig)
}


def parse_detector(entry: Any, where: str = "drift.detectors") -> DetectorConfig:
    """One ``drift.detectors`` entry (a name, a mapping with ``name``, or a config) as its typed
    config; ValueError naming ``where`` and the offending key otherwise."""
    if isinstance(entry, _Detector):
        return cast("DetectorConfig", entry)
    if isinstance(entry, str):
        entry = {"name": entry}
    if not isinstance(entry, Mapping):
        raise ValueError(f"{where}: expected a detector name or a table with a 'name', got {type(entry).__name__}")
    known = ", ".join(DETECTOR_CONFIGS)
    if "name" not in entry:
        raise ValueError(f"{where}: a detector table needs a 'name' (one of {known})")
    cls = DETECTOR_CONFIGS.get(entry["name"]) if isinstance(entry["name"], str) else None
    if cls is None:
        raise ValueError(f"{where}: unknown drift detector {entry['name']!r}; known: {known}")
    for key in entry:
        if key not in cls.model_fields:
            raise ValueError(
                f"{where}.{key}: detector {entry['name']!r} takes no parameter {key!r} "
                f"(its parameters: {', '.join(cls.parameter_names())})"
            )
    try:
        return cast("DetectorConfig", cls.model_validate(dict(entry)))
    except ValidationError as e:
        raise ValueError(
            "; ".join(f"{where}.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
        ) from None


def _default_detectors() -> list[DetectorConfig]:
    return [KSSoftmaxConfig()]


def parse_detectors(value: Any) -> Any:
    """``drift.detectors`` as typed configs (see :func:`parse_detector`); a non-list is left to pydantic."""
    if not isinstance(value, (list, tuple)):
        return value
    problems, out = [], []
    for i, entry in enumerate(value):
        try:
            out.append(parse_detector(entry, f"drift.detectors[{i}]"))
        except ValueError as e:
            problems.append(str(e))
    names = [d.name for d in out]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice and not problems:
        problems.append(f"drift.detectors lists {', '.join(twice)} twice (one entry per detector)")
    if problems:
        # A custom error keeps the message as written (no "Value error, " prefix); it names its keys.
        raise PydanticCustomError("detector_config", "; ".join(problems))
    return out


class DriftConfig(Section):
    enabled: bool = True
    # ks_softmax: feature-wise KS on the softmax outputs (Rabanser et al. 2019, black-box shift detection);
    # mmd_embedding / lsdd: MMD / LSDD permutation tests on penultimate embeddings (Dube et al. 2020);
    # mmd_online: online MMD on embeddings; cvm_online: online Cramer-von Mises on the top-class
    # confidence (Raz et al. 2019's confidence distribution). Several at once are allowed.
    detectors: list[DetectorConfig] = Field(
        default_factory=_default_detectors,
        min_length=1,
        description="The detectors a check runs: a name (its parameters from the shared keys below) or a "
        "table {name = ..., parameter = ...}; each at most once.",
    )
    # The flat detector parameters below are the shared defaults: a detector entry that does not set
    # one of its parameters takes it from here (SHARED_KEYS).
    p_val: float = Field(0.05, gt=0.0, lt=1.0, description="shared default: significance (KS: before correction)")
    correction: Correction = Field("bonferroni", description="shared default: KS multiple-testing correction")
    reference_size: int = Field(500, ge=10)
    n_permutations: int = Field(
        100, ge=10, description="shared default: MMD/LSDD permutation test size (p-value resolution 1/n)"
    )
    lsdd_n_kernel_centers: int | None = Field(
        None, ge=2, description="shared default: LSDD kernel centres (None: alibi's default)"
    )
    # Online detectors: see _OnlineDetector for what ERT means and how to choose it.
    ert: int = Field(2000, ge=10, description="shared default: online expected run time in instances")
    window_size: int = Field(50, ge=2, description="shared default: online sliding test-window size in instances")
    online_n_bootstraps: int | None = Field(
        None,
        ge=100,
        description="shared default: online threshold calibration bootstraps (None: 1.25 * ert + 2 * window_size)",
    )
    min_batch_size: int = Field(10, ge=2, description="smaller batches are refused (tests have no power)")
    device: str = Field("cpu", description="torch device for the detectors ('auto': CUDA when present)")
    batches_uri: str = ".driftloop/batches"
    # Where a drift check looks for new data. "batches": files under batches_uri. "federation": ask
    # the federation at federated.superlink_address; each client runs the champion's detectors on
    # its own new data (its SuperNode's --new-data) and replies p-values and verdicts only
    # (tasks/federated/drift_verdicts.py). A drifting client is then treated like a drifting batch:
    # the same ledger record, episode, event and retraining trigger. "both": both, in one check.
    source: Literal["batches", "federation", "both"] = "batches"
    schedule_cron: str = "*/15 * * * *"
    cooldown_seconds: float = Field(600.0, ge=0.0)
    # Apply data.validation's gross-shift rule to checked batches too. Off by default: a shifted
    # batch is what the detectors measure (and what retraining learns from), not a broken one.
    # Either way distribution findings (shift, out of range) never quarantine a checked batch:
    # they are drift evidence (see evidence_is_drift); only integrity violations quarantine.
    validate_shift: bool = False
    # Distribution evidence from validation (values out of the training range, shifted means)
    # makes a batch's verdict "drift" by itself (the "data_rules" report), besides the detectors.
    evidence_is_drift: bool = True
    # Files under batches_uri larger than this are refused (quarantined with their size, unread).
    max_batch_bytes: int = Field(256 * 1024 * 1024, ge=1)
    # When a drift verdict starts retraining. "drift": any drift. "drift_and_harm": drift and the
    # champion's accuracy on a drifted batch (measured with labels, else CBPE's estimate) lower
    # than the reference accuracy by more than max_estimated_drop (tasks/drift/harm.py).
    trigger: Literal["drift", "drift_and_harm"] = "drift"
    max_estimated_drop: float = Field(0.05, ge=0.0, le=1.0, description="accuracy drop (0-1) that counts as harm")
    # How the champion's accuracy on an unlabelled batch is estimated (tasks/drift/harm.py):
    # "agreement" with a 5-nearest-neighbour classifier over up to agreement_rows labelled training
    # rows stored with the reference (3.0 points mean error on benchmarks/drift_harm.py), or "cbpe",
    # the mean calibrated confidence (9.2 points: a network stays confident on rotated digits).
    harm_estimator: Literal["agreement", "cbpe"] = "agreement"
    agreement_rows: int = Field(2000, ge=10, description="training rows stored for the agreement estimate")
    # Retraining on unlabelled drifted batches pauses for labels (tasks/drift/labels.py): at most
    # this long, looking for labels files beside the batches every labels_poll_seconds.
    labels_timeout_seconds: int = Field(24 * 3600, ge=1)
    labels_poll_seconds: float = Field(10.0, gt=0.0)

    # Strings and tables in, typed configs out; the JSON schema (the Prefect UI form) admits both.
    @field_validator("detectors", mode="before", json_schema_input_type=list[Union[DetectorName, DetectorConfig]])
    @classmethod
    def _typed_detectors(cls, value: Any) -> Any:
        return parse_detectors(value)

    @field_serializer("detectors")
    def _dump_detectors(self, detectors: list[_Detector], info: SerializationInfo) -> list[str | dict[str, Any]]:
        # As written (bare names stay names): a dumped config read back still takes the shared defaults.
        return [d.shorthand(info.mode) for d in detectors]

    def resolve(self, detector: DetectorConfig | str) -> DetectorConfig:
        """``detector`` (a config or a name) with every parameter it leaves unset taken from the shared keys."""
        det = parse_detector(detector)
        own = det.model_dump(exclude_unset=True)
        shared = {k: getattr(self, SHARED_KEYS[k]) for k in det.parameter_names() if k not in own}
        return type(det).model_validate({**shared, **own, "name": det.name})

    def detector_configs(self) -> list[DetectorConfig]:
        """The configured detectors, resolved (:meth:`resolve`): every parameter explicit."""
        return [self.resolve(d) for d in self.detectors]

    def detector_config(self, name: str) -> DetectorConfig:
        """The resolved config of ``name``: its entry in ``detectors``, else the bare name resolved."""
        return self.resolve(next((d for d in self.detectors if d.name == name), name))

    def key_of(self, index: int, parameter: str) -> str:
        """Where detector ``index``'s ``parameter`` was set: its own entry, or the shared key."""
        if parameter in self.detectors[index].model_fields_set:
            return f"drift.detectors[{index}].{parameter}"
        return f"drift.{SHARED_KEYS[parameter]}"

    @model_validator(mode="after")
    def _online_fits_reference(self) -> DriftConfig:
        for i, det in enumerate(self.detector_configs()):
            if not isinstance(det, ONLINE_CONFIGS):
                continue
            if self.reference_size <= 2 * det.window_size:
                raise ValueError(
                    f"drift.reference_size ({self.reference_size}) must exceed 2 * {self.key_of(i, 'window_size')} "
                    f"({2 * det.window_size}) for the online detector {det.name}"
                )
            if det.n_bootstraps is not None and det.n_bootstraps <= det.ert:
                raise ValueError(
                    f"{self.key_of(i, 'n_bootstraps')} ({det.n_bootstraps}) must exceed {self.key_of(i, 'ert')} "
                    f"({det.ert}): the 1 - 1/ert quantile needs more samples than ert"
                )
        return self

    def n_bootstraps(self) -> int:
        """Bootstraps the shared online defaults calibrate with (:meth:`_OnlineDetector.bootstraps`)."""
        return self.online_n_bootstraps or int(1.25 * self.ert) + 2 * self.window_size
