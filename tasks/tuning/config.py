"""Configuration of the Hyperband search on Ray Tune (owned by tasks/tuning).

The search space maps a field of ``model`` (arch, width, depth, dropout) or ``training`` (lr,
batch_size, weight_decay, optimizer, momentum) to a distribution, a tagged spec told apart by its
``type`` (a pydantic discriminated union): ``{"type": "loguniform"|"uniform", "low": a, "high": b}``,
``{"type": "randint", "low": a, "high": b}`` (b excluded) or ``{"type": "choice", "values": [...]}``.
Each spec checks its own rules here, with errors naming the key (``tuning.search_space.lr.low``);
whether every bound and choice is a value the model and training sections accept is checked before
any trial starts (``tasks.tuning.space.validate_search_space``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError

from tasks.config_base import Section

ModelParam = Literal["arch", "width", "depth", "dropout"]
TrainingParam = Literal["lr", "batch_size", "weight_decay", "optimizer", "momentum"]
ParamName = Literal[ModelParam, TrainingParam]
MODEL_PARAMS: tuple[str, ...] = get_args(ModelParam)
TRAINING_PARAMS: tuple[str, ...] = get_args(TrainingParam)
# Integer fields: a continuous range would hand them floats.
INTEGER_PARAMS = ("width", "depth", "batch_size")


def _problem(message: str) -> PydanticCustomError:
    # The message goes in as context: a template would read any braces in it as placeholders.
    return PydanticCustomError("search_space", "{message}", {"message": message})


class _Spec(BaseModel):
    # Not a Section: its strict-scalar check is a before-validator on every field, and pydantic
    # allows none on a union's discriminator (``type``); the specs check their own values.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _finite_number(v: Any) -> int | float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        # YAML 1.1 (PyYAML) reads 1e-3 as text; 1.0e-3 is a number.
        hint = " (write a number: in YAML, 1.0e-3 rather than 1e-3)" if isinstance(v, str) else ""
        raise _problem(f"must be a finite number, got {v!r}{hint}")
    return v


class _Range(_Spec):
    type: str  # the tag, first in a dump as in the plain form; narrowed to a Literal below
    # int | float (not float): an int bound stays an int, so that model_dump() returns what was
    # given and the study name (a hash of the dump) does not change with the type.
    low: int | float
    high: int | float

    _finite = field_validator("low", "high", mode="before")(_finite_number)

    @model_validator(mode="after")
    def _ordered(self):
        if self.low >= self.high:
            raise _problem(f"low ({self.low}) must be below high ({self.high})")
        return self


class LogUniform(_Range):
    """``exp(uniform(log low, log high))``: for scales (learning rate, weight decay)."""

    type: Literal["loguniform"] = "loguniform"

    @field_validator("low")
    @classmethod
    def _positive(cls, v: int | float) -> int | float:
        if v <= 0:
            raise _problem(f"a loguniform range needs low > 0, got {v}")
        return v


class Uniform(_Range):
    """``uniform(low, high)``: ``high`` itself is never drawn."""

    type: Literal["uniform"] = "uniform"


class RandInt(_Spec):
    """An integer in ``[low, high)`` (Ray's ``tune.randint``: ``high`` excluded)."""

    type: Literal["randint"] = "randint"
    low: int
    high: int

    @field_validator("low", "high", mode="before")
    @classmethod
    def _integer(cls, v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise _problem(f"randint bounds must be integers, got {v!r}")
        return v

    @model_validator(mode="after")
    def _ordered(self):
        if self.low >= self.high:
            raise _problem(f"low ({self.low}) must be below high ({self.high}, which is excluded)")
        return self


class Choice(_Spec):
    """One of ``values``, uniformly."""

    type: Literal["choice"] = "choice"
    values: list[int | float | str]

    @field_validator("values", mode="before")
    @classmethod
    def _scalars(cls, v: Any) -> Any:
        if not isinstance(v, (list, tuple)) or len(v) == 0:
            raise _problem(f"a choice needs a non-empty list of values, got {v!r}")
        for x in v:
            if isinstance(x, bool) or not isinstance(x, (int, float, str)):
                raise _problem(f"each value must be a number or a text, got {x!r}")
            if isinstance(x, float) and not math.isfinite(x):
                raise _problem(f"each value must be finite, got {x!r}")
        return list(v)


SpaceSpec = Annotated[LogUniform | Uniform | RandInt | Choice, Field(discriminator="type")]
_SPEC_BY_TYPE: dict[str, type[_Spec]] = {
    "loguniform": LogUniform,
    "uniform": Uniform,
    "randint": RandInt,
    "choice": Choice,
}
SPACE_TYPES: tuple[str, ...] = tuple(_SPEC_BY_TYPE)


def _keyed(err: ErrorDetails) -> InitErrorDetails:
    """One of pydantic's errors about the space, located where the user wrote it (pydantic puts the
    union's tag in the location: ``lr.loguniform.low``) and saying what to write instead."""
    loc, kind, given = tuple(err["loc"]), err["type"], err["input"]
    tag = loc[1] if len(loc) >= 2 else None
    if tag == "[key]":
        loc, msg = loc[:1], f"unknown parameter; searchable are {', '.join(MODEL_PARAMS + TRAINING_PARAMS)}"
    elif kind in ("union_tag_invalid", "union_tag_not_found"):
        what = f"unknown distribution {given['type']!r}" if kind == "union_tag_invalid" else "missing"
        loc, msg = (*loc, "type"), f"{what}; use one of {', '.join(SPACE_TYPES)}"
    elif kind == "dict_type" and not loc:
        msg = f"must be a mapping from parameter to distribution, got {given!r}"
    elif kind == "model_attributes_type" and len(loc) == 1:
        msg = f"must be a mapping with a 'type' ({', '.join(SPACE_TYPES)}), got {given!r}"
    elif isinstance(tag, str) and tag in _SPEC_BY_TYPE:
        loc = loc[:1] + loc[2:]
        if kind == "extra_forbidden":
            takes = ", ".join(sorted(_SPEC_BY_TYPE[tag].model_fields, key=lambda f: f != "type"))
            msg = f"unknown key for a {tag} distribution (it takes {takes})"
        else:
            msg = err["msg"]
    else:
        msg = err["msg"]
    return InitErrorDetails(type=_problem(msg), loc=loc, input=given)


def _check_space(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """The space's own rules: every spec valid, at least one parameter, no float range for an
    integer parameter; errors re-located by :func:`_keyed`, all of them at once."""
    problems = []
    for name, spec in value.items() if isinstance(value, Mapping) else ():
        # read from the plain form too, so that this is reported along with the other specs' errors
        kind = spec.get("type") if isinstance(spec, Mapping) else getattr(spec, "type", None)
        if name in INTEGER_PARAMS and kind in ("loguniform", "uniform"):
            message = f"{name} is an integer; use randint or choice, not {kind}"
            problems.append(InitErrorDetails(type=_problem(message), loc=(name, "type"), input=kind))
    try:
        space = handler(value)
    except ValidationError as e:
        problems = [_keyed(x) for x in e.errors()] + problems
    else:
        if not space:
            everything = ", ".join(MODEL_PARAMS + TRAINING_PARAMS)
            message = f"no parameter to search: give at least one (any of {everything})"
            problems.append(InitErrorDetails(type=_problem(message), loc=(), input=value))
    if problems:
        raise ValidationError.from_exception_data("search_space", problems)
    return space


# A search space: searched parameter -> distribution. Checked as a whole by _check_space.
SearchSpace = Annotated[dict[ParamName, SpaceSpec], WrapValidator(_check_space)]


def _default_space() -> dict[ParamName, LogUniform | Uniform | RandInt | Choice]:
    # Its model_dump() is the plain dict this default was before the specs were typed (a test
    # holds it), so the names of studies run before then still resume.
    return {
        "lr": LogUniform(low=1e-4, high=3e-2),
        "batch_size": Choice(values=[32, 64, 128]),
        "width": Choice(values=[32, 64, 128]),
        "depth": Choice(values=[1, 2, 3]),
        "weight_decay": LogUniform(low=1e-6, high=1e-3),
        "dropout": Uniform(low=0.0, high=0.4),
        "optimizer": Choice(values=["adam", "sgd"]),
    }


class TrialResources(Section):
    cpu: float = Field(1.0, gt=0.0)
    # a number (fractions allowed: 0.25 puts four trials on one GPU) or "auto": when the cluster
    # has GPUs at the start of the study, each trial gets an equal share (1/k of a GPU, k the
    # number of trials that run at once), else none.
    gpu: float | Literal["auto"] = "auto"


class TuningConfig(Section):
    enabled: bool = True
    # hyperband: ray.tune HyperBandScheduler (synchronous Hyperband, Li et al. 2018; reproducible)
    # asha: ASHAScheduler (asynchronous successive halving, Li et al. 2020), one bracket
    # bohb: HyperBandForBOHB + TuneBOHB (Falkner et al. 2018); needs hpbandster and ConfigSpace<1 (the dev extra)
    scheduler: Literal["hyperband", "asha", "bohb"] = "hyperband"
    max_t: int = Field(27, ge=1, description="maximum resource R per configuration, in epochs")
    eta: int = Field(3, ge=2, description="reduction factor")
    num_samples: int = Field(
        27,
        ge=1,
        description="configurations sampled (one full Ray band: 49 for R=27, eta=3; see `driftloop hyperband-plan`)",
    )
    metric: Literal["val_accuracy", "val_loss"] = "val_accuracy"
    mode: Literal["max", "min"] = "max"
    search_space: SearchSpace = Field(default_factory=_default_space)
    # None: a local Ray started by the task with this machine's CPUs and GPUs (and stopped after).
    # "auto", "HOST:6379" (inside the cluster, e.g. a Ray Job) or "ray://HOST:10001" (Ray Client).
    ray_address: str | None = None
    resources_per_trial: TrialResources = TrialResources()
    max_failures: int = Field(2, ge=0, description="retries of a failing trial, each from its last checkpoint")
    max_concurrent_trials: int | None = Field(None, ge=1)
    # A running trial that reports nothing for this long is stopped and retried from its last
    # checkpoint (a hung worker, an actor Ray calls "temporarily unavailable" for good). None: 10x the
    # slowest epoch seen in the study so far, at least 120 s (900 s before the first epoch is timed).
    trial_stall_s: float | None = Field(
        None, gt=0, description="seconds of silence after which a running trial is stopped and retried (None: adaptive)"
    )
    # Where Tune keeps results and checkpoints, under the artifact store (store.uri).
    storage_subpath: str = Field("tuning", pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
    # None: a name derived from the study's configuration, seed and data fingerprint, so that
    # running the same study again resumes it (Tuner.restore) instead of starting over.
    study_name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    resume: bool = True
    checkpoints_to_keep: int | None = Field(2, ge=1, description="latest checkpoints kept per trial (None: all)")
    # A trial checkpoints where Hyperband may pause it (its rung milestones); with this set, also
    # every k epochs, so that a retry after a crash or a lost node repeats fewer epochs. Each
    # checkpoint costs a copy into the study's storage (an upload with S3).
    checkpoint_every: int | None = Field(
        None, ge=1, description="also checkpoint every k epochs (None: only where Hyperband may pause)"
    )

    @field_validator("storage_subpath")
    @classmethod
    def _inside_the_store(cls, v: str) -> str:
        # The pattern allows dots for names like "v1.2"; a ".." segment would climb out of store.uri.
        if any(part in ("..", ".") for part in v.split("/")) or "//" in v or v.endswith("/"):
            raise ValueError(
                f"{v!r} must be a relative path inside the store: no '.' or '..' segments, no empty segments"
            )
        return v
