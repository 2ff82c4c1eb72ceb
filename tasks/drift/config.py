"""Configuration of drift detection (owned by tasks/drift).

The detector settings below are copied into every drift reference when it is built; checks run
with the reference's copy (the online thresholds are calibrated for it), so changing them here
takes effect with the next reference (the next promotion), not for references already stored.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tasks.config_base import Section

DetectorName = Literal["ks_softmax", "mmd_embedding", "lsdd", "mmd_online", "cvm_online"]


class DriftConfig(Section):
    enabled: bool = True
    # ks_softmax: feature-wise KS on the softmax outputs (Rabanser et al. 2019, black-box shift detection);
    # mmd_embedding / lsdd: MMD / LSDD permutation tests on penultimate embeddings (Dube et al. 2020);
    # mmd_online: online MMD on embeddings; cvm_online: online Cramer-von Mises on the top-class
    # confidence (Raz et al. 2019's confidence distribution). Several at once are allowed.
    detectors: list[DetectorName] = Field(default_factory=lambda: ["ks_softmax"], min_length=1)
    p_val: float = Field(0.05, gt=0.0, lt=1.0, description="significance per check (KS: before correction)")
    correction: Literal["bonferroni", "fdr"] = "bonferroni"
    reference_size: int = Field(500, ge=10)
    n_permutations: int = Field(100, ge=10, description="MMD/LSDD permutation test size (p-value resolution 1/n)")
    lsdd_n_kernel_centers: int | None = Field(None, ge=2, description="LSDD kernel centres (None: alibi's default)")
    # Online detectors: ERT is alibi-detect's expected run time in *instances* without drift. A batch
    # of B instances is fed one at a time, so the chance of a false alarm per clean batch is about B/ert:
    # ert = B / p_val matches the offline detectors' rate (2000 for B=100 at p_val=0.05).
    ert: int = Field(2000, ge=10, description="online detectors: expected run time in instances")
    window_size: int = Field(50, ge=2, description="online detectors: sliding test-window size in instances")
    # Threshold calibration bootstraps; None: 1.25 * ert + 2 * window_size (alibi needs more than ert).
    online_n_bootstraps: int | None = Field(None, ge=100)
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

    @model_validator(mode="after")
    def _online_fits_reference(self):
        online = [d for d in self.detectors if d.endswith("_online")]
        if online and self.reference_size <= 2 * self.window_size:
            raise ValueError(
                f"drift.reference_size ({self.reference_size}) must exceed 2 * drift.window_size "
                f"({2 * self.window_size}) for the online detectors {online}"
            )
        if self.online_n_bootstraps is not None and online and self.online_n_bootstraps <= self.ert:
            raise ValueError(
                f"drift.online_n_bootstraps ({self.online_n_bootstraps}) must exceed drift.ert "
                f"({self.ert}): the 1 - 1/ert quantile needs more samples than ert"
            )
        return self

    def n_bootstraps(self) -> int:
        """Bootstraps used to calibrate the online thresholds."""
        return self.online_n_bootstraps or int(1.25 * self.ert) + 2 * self.window_size
