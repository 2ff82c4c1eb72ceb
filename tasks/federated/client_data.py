"""A client's own data, on its own node: load it, validate it against the schema the server sent,
split off its local held-out rows. Free of Flower (the ClientApp calls these).

The data never leave the node. What does leave it is :class:`ClientValidation`: the client's row
count, whether its data passed, and per violated rule the rule's name, its count and the names of
the features involved: never a row index, a value or a message that could quote one.

The rules are exactly :mod:`tasks.data.validation`'s (the same ``validate_batch``), except the gross
feature-shift rule: in a federation clients are non-IID by nature (a client holding two digits has
feature means far from the global ones), which is not a broken file.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from tasks.data.config import ValidationConfig
from tasks.data.dataset import Dataset
from tasks.data.schema import Schema
from tasks.errors import DataError
from tasks.seeding import rng

# Where the simulation engine puts the per-client files it cuts from the central training split
# (a simulation has no nodes with data of their own); client ``i`` reads ``client-<i>.npz`` there.
ENV_SIM_DATA = "DRIFTLOOP_FED_SIM_DATA"


@dataclass
class RuleCount:
    """One violated rule as a client reports it: no rows, no values."""

    rule: str
    count: int
    features: list[str] = field(default_factory=list)


@dataclass
class ClientValidation:
    """What a client tells the server about its data: its size and the validation outcome."""

    rows: int
    passed: bool
    violations: list[RuleCount] = field(default_factory=list)

    @property
    def rules(self) -> list[str]:
        return [v.rule for v in self.violations]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ClientValidation":
        return cls(
            rows=int(d["rows"]),
            passed=bool(d["passed"]),
            violations=[
                RuleCount(str(v["rule"]), int(v["count"]), [str(f) for f in v.get("features", [])])
                for v in d.get("violations", [])
            ],
        )

    def summary(self) -> str:
        if self.passed:
            return "valid"
        return "invalid: " + ", ".join(
            f"{v.rule} ({v.count}" + (f"; {', '.join(v.features[:5])})" if v.features else ")") for v in self.violations
        )


@dataclass
class LocalData:
    """A client's validated rows, split into the rows it trains on and the rows it evaluates on."""

    train: Dataset
    held_out: Dataset
    validation: ClientValidation


def data_path_for(node_config: dict[str, Any]) -> str:
    """The data a node serves: ``data-path`` from its node config (a real SuperNode), else the
    simulation's file for its ``partition-id``. Raises DataError naming what is missing."""
    if node_config.get("data-path"):
        return str(node_config["data-path"])
    sim = os.environ.get(ENV_SIM_DATA)
    if sim and "partition-id" in node_config:
        return os.path.join(sim, f"client-{int(node_config['partition-id'])}.npz")
    raise DataError(
        "this SuperNode was started without data: give it --node-config 'data-path=\"...\"' "
        "(driftloop supernode --data PATH does)"
    )


def node_store_config(node_config: dict[str, Any]):
    """Store settings to read this node's ``s3://`` data with: the node's own credentials (the standard
    AWS chain: AWS_ACCESS_KEY_ID..., ~/.aws, an instance role) and endpoint (``s3-endpoint`` in the
    node config, else ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``); nothing comes from the server."""
    from tasks.store.config import StoreConfig

    endpoint = (
        node_config.get("s3-endpoint") or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    )
    return StoreConfig(
        uri=".",
        endpoint_url=str(endpoint) if endpoint else None,
        region=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"),
    )


def federated_validation_config(cfg: ValidationConfig) -> ValidationConfig:
    """``cfg`` without the gross-shift rule (see the module docstring)."""
    return cfg.model_copy(update={"check_shift": False})


def redact(report) -> ClientValidation:
    """A :class:`~tasks.data.validation.ValidationReport` reduced to what may leave the node."""
    out = []
    for v in report.violations:
        feats = sorted({str(e["feature"]) for e in v.examples if "feature" in e})
        out.append(RuleCount(v.rule, int(v.count), feats))
    return ClientValidation(rows=int(report.rows), passed=bool(report.passed), violations=out)


def local_split(ds: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Rows to train on and held-out rows to evaluate the global model on: a seeded permutation of
    the client's rows, the same every round (at least one row each side when ``fraction`` > 0 and
    the client has two rows or more)."""
    n = len(ds)
    k = int(round(fraction * n)) if fraction > 0 else 0
    if fraction > 0 and n >= 2:
        k = min(max(k, 1), n - 1)
    perm = rng(seed, "federated", "local-held-out").permutation(n)
    return ds.subset(np.sort(perm[k:]), f"{ds.name}:train"), ds.subset(np.sort(perm[:k]), f"{ds.name}:held-out")


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff")


def load_image_folder(root: str | os.PathLike) -> Dataset:
    """An image folder: ``root/<label>/<image>`` with integer label folder names (``0/``, ``1/``...).

    Pixels are scaled to [0, 1]; grayscale images become ``(n, 1, H, W)``, colour ``(n, 3, H, W)``.
    Images are not resized: a size other than the schema's is the validation's ``shape_mismatch``.
    Raises DataError naming a folder that is not an integer label, an unreadable image, or mixed sizes.
    """
    from pathlib import Path

    from PIL import Image

    root = Path(root)
    xs, ys = [], []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not d.name.lstrip("-").isdigit():
            raise DataError(f"{d}: image folder names must be integer labels (0/, 1/, ...), not {d.name!r}")
        for f in sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            try:
                with Image.open(f) as im:
                    a = np.asarray(im.convert("L") if im.mode in ("L", "1", "P", "I;16", "I") else im.convert("RGB"))
            except Exception as e:  # a truncated or corrupt image: name it
                raise DataError(f"{f}: cannot be read as an image: {e}") from e
            xs.append(a[None] if a.ndim == 2 else np.moveaxis(a, -1, 0))
            ys.append(int(d.name))
    if not xs:
        raise DataError(f"{root}: no images under <label>/ folders ({', '.join(IMAGE_SUFFIXES)})")
    if len({x.shape for x in xs}) > 1:
        raise DataError(f"{root}: images of different sizes {sorted({x.shape for x in xs})[:3]}")
    return Dataset(
        np.stack(xs).astype(np.float32) / 255.0, np.asarray(ys, np.int64), name=str(root), meta={"source": str(root)}
    )


def load_local_data(
    path: str,
    schema: Schema,
    cfg: ValidationConfig,
    *,
    label_column: str,
    held_out_fraction: float,
    seed: int,
    store_cfg=None,
) -> LocalData:
    """Read the node's data at ``path`` (npz/parquet/csv, local or ``s3://``, or a local image folder:
    :func:`load_image_folder`), validate it against
    ``schema`` with :func:`tasks.data.validation.validate_batch`, and split it (:func:`local_split`).

    Data that fail validation (or cannot be read: ``missing_file`` / ``unreadable_file``) give a
    :class:`LocalData` whose ``validation.passed`` is False and whose splits are empty.
    """
    from tasks.data.validation import RULE_UNREADABLE_FILE, conform, load_batch_from_uri, read_report, validate_batch
    from tasks.store.config import StoreConfig

    cfg = federated_validation_config(cfg)
    if os.path.isdir(path):
        try:
            ds, error = load_image_folder(path), None
        except DataError as e:
            ds, error = None, read_report("client-data", path, RULE_UNREADABLE_FILE, str(e))
    else:
        ds, _, error = load_batch_from_uri(
            path, store_cfg or StoreConfig(uri="."), label_column, batch_id="client-data"
        )
    if error is None:
        assert ds is not None, "a read that reports no error returns a dataset"
        report = validate_batch(ds, schema, cfg, "client-data", path)
    else:
        report = error
    validation = redact(report)
    # ds is None only with a read error, whose report never passes.
    if ds is None or not validation.passed:
        empty = Dataset(np.zeros((0, *schema.sample_shape), np.float32), np.zeros(0, np.int64), "empty")
        return LocalData(empty, empty, validation)
    train, held_out = local_split(conform(ds, schema), held_out_fraction, seed)
    return LocalData(train, held_out, validation)
