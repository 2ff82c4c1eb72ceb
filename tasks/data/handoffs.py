"""What the data stage hands on, and the validation rules an added (drifted) batch is held to."""

from __future__ import annotations

from dataclasses import dataclass

from tasks.data.config import ValidationConfig
from tasks.data.dataset import Splits
from tasks.data.schema import Schema


@dataclass
class PreparedData:
    """Validated data split for training, the schema of its training split, and the settings with
    the defaults that follow the data resolved (``model.arch="auto"``)."""

    settings: object  # tasks.settings.Settings
    splits: Splits
    schema: Schema


def evidence_rules(validation: ValidationConfig, validate_shift: bool) -> ValidationConfig:
    """Rules for the drifted batches retraining adds: shifted by definition, so the gross-shift
    rule is the drift check's call (``drift.validate_shift``); every other rule still applies."""
    return validation.model_copy(update={"check_shift": validate_shift})
