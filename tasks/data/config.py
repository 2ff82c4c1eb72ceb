"""Configuration of datasets, splits and schema validation."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tasks.config_base import Section


class ValidationConfig(Section):
    enabled: bool = True
    # Which range a value is checked against. "feature": each feature's own training [min, max]
    # (tabular columns with their own units); "overall": the training data's overall
    # [value_min, value_max] (images: every pixel shares one domain, and an edge pixel that never
    # lit up in training must not fail a clean batch); "auto": "overall" when samples have more
    # than one axis (e.g. (1, 8, 8)), else "feature".
    range_scope: Literal["auto", "feature", "overall"] = "auto"
    # A value is out of range when it leaves [min - tol*span, max + tol*span] of that range.
    # None (calibrated): 0.0 for the overall scope (the domain is exact, e.g. pixels in [0, 1]);
    # for the per-feature scope a full span, or tail_factor times the feature's tail gap
    # (max - q99, q01 - min) where that is wider: held-out rows of breast_cancer, wine and
    # long-tailed synthetic columns passed their training extremes by up to 0.3 spans, and the
    # quarter span used before quarantined clean data; a span still catches unit errors
    # (x1000), sign flips of positive columns and sentinels such as -999.
    # See benchmarks/data_validation.py for the false-alarm rate per rule.
    range_tolerance: float | None = Field(None, ge=0.0)
    tail_factor: float = Field(3.0, ge=0.0)
    # Gross shift: |batch mean - train mean| / train std, averaged over features, above this fails.
    max_mean_shift: float = Field(3.0, gt=0.0)
    # Minimum batch size for the shift rule to apply (tiny batches have noisy means).
    shift_min_rows: int = Field(20, ge=1)
    # The gross-shift rule; the drift check turns it off (drift.validate_shift), since a shifted
    # batch is what the detectors measure and what retraining learns from, not a broken file.
    check_shift: bool = True
    # Share of exactly duplicated rows tolerated inside a batch (digits has a few true duplicates).
    max_duplicate_fraction: float = Field(0.05, ge=0.0, le=1.0)
    max_examples: int = Field(5, ge=1, description="examples listed per violated rule in a report")

    def tolerance_for(self, scope: str) -> float:
        """The range tolerance that applies to ``scope`` ("feature" or "overall")."""
        if self.range_tolerance is not None:
            return self.range_tolerance
        return 0.0 if scope == "overall" else 1.0

    def tail_factor_for(self) -> float:
        """The tail-gap widening of the per-feature scope: only when the tolerance is calibrated."""
        return self.tail_factor if self.range_tolerance is None else 0.0


class DataConfig(Section):
    # "digits" (scikit-learn's bundled load_digits), a path / file:// / s3:// URI of an
    # .npz (arrays x, y), .parquet or .csv (one label column, the rest features) file, or a
    # folder / S3 prefix of class subfolders of PNG/JPEG images (tasks/data/images.py).
    source: str = "digits"
    label_column: str = "label"
    # Image folders (data.source a folder or S3 prefix of class subfolders of PNG/JPEG files):
    # every image resized to [H, W] (or N for N x N); None keeps their size (then all must share it).
    image_size: int | list[int] | None = None
    # grayscale, rgb, or auto: grayscale when every image is grayscale, else RGB.
    image_mode: Literal["auto", "grayscale", "rgb"] = "auto"
    # Reshape flat features to this per-sample shape (e.g. [1, 8, 8]); None keeps what the source gives.
    sample_shape: list[int] | None = None
    val_fraction: float = Field(0.15, gt=0.0, lt=1.0)
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    # Use at most this many training samples (None: all); the smoke profile uses it.
    max_train_samples: int | None = Field(None, ge=10)
    # The declared label set (class indices). None: the labels must be contiguous from 0
    # (tasks/data/labels.py). Declaring it also tells the gate that classes of the champion not
    # listed here were dropped on purpose.
    classes: list[int] | None = Field(None, min_length=2)
    validation: ValidationConfig = ValidationConfig()

    @model_validator(mode="after")
    def _classes(self):
        if self.classes is not None and (len(set(self.classes)) != len(self.classes) or min(self.classes) < 0):
            raise ValueError("data.classes must list distinct class indices >= 0")
        return self

    @model_validator(mode="after")
    def _fractions(self):
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError("data.val_fraction + data.test_fraction must leave at least 10% for training")
        return self
