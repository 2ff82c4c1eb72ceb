"""Configuration of datasets, splits and schema validation."""

from __future__ import annotations

from pydantic import Field, model_validator

from tasks.config_base import Section


class ValidationConfig(Section):
    enabled: bool = True
    # A feature is out of range when it leaves [min - tol*span, max + tol*span] of the training data.
    range_tolerance: float = Field(0.0, ge=0.0)
    # Gross shift: |batch mean - train mean| / train std, averaged over features, above this fails.
    max_mean_shift: float = Field(3.0, gt=0.0)
    # Minimum batch size for the shift rule to apply (tiny batches have noisy means).
    shift_min_rows: int = Field(20, ge=1)
    # Share of exactly duplicated rows tolerated inside a batch (digits has a few true duplicates).
    max_duplicate_fraction: float = Field(0.05, ge=0.0, le=1.0)
    max_examples: int = Field(5, ge=1, description="examples listed per violated rule in a report")


class DataConfig(Section):
    # "digits" (scikit-learn's bundled load_digits) or a path / file:// / s3:// URI of an
    # .npz (arrays x, y), .parquet or .csv (one label column, the rest features) file.
    source: str = "digits"
    label_column: str = "label"
    # Reshape flat features to this per-sample shape (e.g. [1, 8, 8]); None keeps what the source gives.
    sample_shape: list[int] | None = None
    val_fraction: float = Field(0.15, gt=0.0, lt=1.0)
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    # Use at most this many training samples (None: all); the smoke profile uses it.
    max_train_samples: int | None = Field(None, ge=10)
    validation: ValidationConfig = ValidationConfig()

    @model_validator(mode="after")
    def _fractions(self):
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError("data.val_fraction + data.test_fraction must leave at least 10% for training")
        return self
