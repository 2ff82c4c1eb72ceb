"""Base for every configuration section: unknown keys are rejected, assignments are validated."""

import types
import typing

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator


def _scalar_kinds(annotation) -> set:
    """The plain scalar types (bool, int, float, str) an annotation admits, through Optional/Union."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return set().union(*(_scalar_kinds(a) for a in typing.get_args(annotation)))
    if origin is typing.Literal:
        return {type(a) for a in typing.get_args(annotation)}
    return {annotation} if annotation in (bool, int, float, str) else set()


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    @field_validator("*", mode="before")
    @classmethod
    def _strict_scalars(cls, value, info: ValidationInfo):
        # Strict scalar types: pydantic's lax mode reads `epochs: true` as 1 epoch, `enabled: 1` as
        # true and `epochs: "5"` as 5; each is far more likely a mistake than an intent.
        field = cls.model_fields.get(info.field_name) if info.field_name else None
        kinds = _scalar_kinds(field.annotation) if field is not None else set()
        numeric = bool(kinds & {int, float})
        if isinstance(value, bool) and bool not in kinds and numeric:
            raise ValueError(f"must be a number, got the boolean {str(value).lower()} (booleans are not numbers)")
        if not isinstance(value, bool) and isinstance(value, (int, float)) and bool in kinds and not numeric:
            raise ValueError(f"must be true or false, got the number {value!r}")
        if isinstance(value, str) and numeric and str not in kinds:
            raise ValueError(f"must be a number, got the text {value!r}")
        return value
