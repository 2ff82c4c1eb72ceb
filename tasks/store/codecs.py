"""How the store turns values into bytes and back: deterministic JSON, pickle-free npz, torch
state dicts as safetensors, and a safetensors check that runs before any parser sees the bytes.
Nothing read back is a pickle."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import io
import json
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from tasks.errors import StoreError

if TYPE_CHECKING:
    import torch
    from torch import nn


def to_jsonable(obj: Any) -> Any:
    """``json.dumps`` default hook: pydantic models (secrets stay masked), numpy, paths, dataclasses."""
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (Path, uuid.UUID)):
        return str(obj)
    if isinstance(obj, (_dt.datetime, _dt.date)):
        return obj.isoformat()
    if isinstance(obj, (set, frozenset, tuple)):
        return sorted(obj) if isinstance(obj, (set, frozenset)) else list(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def dumps_json(obj: Any) -> bytes:
    """Deterministic JSON bytes (sorted keys, NaN refused) for anything :func:`to_jsonable` handles."""
    try:
        return json.dumps(obj, default=to_jsonable, sort_keys=True, indent=1, allow_nan=False).encode()
    except (TypeError, ValueError) as e:
        raise StoreError(f"cannot store as JSON: {e}") from None


def check_safetensors(data: bytes, where: str) -> None:
    """Refuse bytes that are not a well-formed safetensors file, before any parser sees them.

    Checks the 8-byte little-endian header length, the JSON header and every tensor's offsets.
    A pickle (or anything else) fails here with a StoreError naming ``where``; nothing is executed.
    """

    def bad(reason: str) -> StoreError:
        return StoreError(f"{where} is not a safetensors file ({reason}); refusing to load it")

    if len(data) < 8:
        raise bad("shorter than the 8-byte header length")
    n = int.from_bytes(data[:8], "little")
    if n < 2 or n > len(data) - 8 or n > 100 * 1024 * 1024:
        raise bad(f"header length {n} does not fit the {len(data)}-byte file")
    try:
        header = json.loads(bytes(data[8 : 8 + n]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise bad("header is not JSON") from None
    if not isinstance(header, dict):
        raise bad("header is not a JSON object")
    body = len(data) - 8 - n
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= info.keys():
            raise bad(f"tensor entry {name!r} lacks dtype/shape/data_offsets")
        off = info["data_offsets"]
        if (
            not isinstance(off, list)
            or len(off) != 2
            or not all(isinstance(o, int) for o in off)
            or not 0 <= off[0] <= off[1] <= body
        ):
            raise bad(f"tensor {name!r} has offsets {off!r} outside the data")


def state_dict_to_bytes(model_or_state: nn.Module | Mapping[str, torch.Tensor]) -> bytes:
    """A module's (or a state dict's) tensors as safetensors bytes: detached, on the CPU, contiguous."""
    # torch is imported on use: the store (and the CLI's store commands) load without it.
    from safetensors.torch import save
    from torch import nn

    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    return save({k: v.detach().cpu().contiguous() for k, v in state.items()})


def state_dict_from_bytes(data: bytes) -> dict[str, torch.Tensor]:
    """Parse safetensors bytes (never executes code, unlike a pickle)."""
    from safetensors.torch import load

    return load(data)


def npz_bytes(arrays: Mapping[str, Any], where: str) -> bytes:
    """Arrays as uncompressed ``.npz`` bytes; object arrays (which numpy would pickle) are refused."""
    clean = {}
    for k, v in arrays.items():
        a = np.asarray(v)
        if a.dtype.hasobject:
            raise StoreError(f"{where}: array {k!r} has dtype object, which npz can only store as a pickle")
        clean[k] = a
    buf = io.BytesIO()
    np.savez(buf, **clean)
    return buf.getvalue()


def npz_load(data: bytes, where: str) -> dict[str, np.ndarray]:
    """Parse ``.npz`` bytes with ``allow_pickle=False``; errors name ``where``."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError) as e:
        raise StoreError(f"{where} is not a readable pickle-free npz file: {e}") from None
